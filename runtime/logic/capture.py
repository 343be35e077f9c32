"""What a write statement touched (pure): the statement as it runs, returning the columns the checks need.

Incremental invariant checks and reference checks need, for every row a transaction inserted, updated
or deleted, the values of a few columns: the new values of inserted and updated rows, the old values
of deleted rows, and the old values of updated rows when the statement assigns one of those columns
(a booking moved from one slot to another leaves the old slot, too). ``plan`` rewrites the statement
with sqlglot to return those columns after its own ``RETURNING`` columns (the agent's output is
unchanged: the runner splits the row), and for such an UPDATE builds the ``SELECT`` of the old values
that runs just before it, with the same parameters, in the same transaction (the writer lane is
serial, so it sees exactly the rows the UPDATE will change).

An upsert that may replace a row's captured columns cannot say what they were, so it is marked
inexact: the checks it affects run in full.

When the runtime enforces field checks (``fieldchecks``), an INSERT or UPDATE also returns one flag
per check of its entity and the columns that name a failing row, after the captured columns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from runtime.logic import fieldchecks
from runtime.logic.fieldchecks import FieldCheck
from runtime.sql.facts import Analysis

PREFIX = "__bt_"


@dataclass(frozen=True)
class Statement:
    """One action statement as the runner executes it."""

    analysis: Analysis
    sql: str
    """What runs: the agent's statement, or the same with the captured columns added to RETURNING."""
    outputs: int
    """How many leading result columns are the statement's own (-1: it returned no rows of its own)."""
    table: str | None = None
    """The entity written, when its rows are captured."""
    captured: tuple[str, ...] = ()
    """Columns returned after the outputs: new values (INSERT, UPDATE) or old values (DELETE)."""
    before: str | None = None
    """UPDATE assigning a captured column: the SELECT of the old values, run just before."""
    before_params: tuple[str, ...] = ()
    """The parameters that SELECT uses (a subset of the statement's)."""
    exact: bool = True
    """False when what the statement replaced cannot be known (the affected checks run in full)."""
    checks: tuple[FieldCheck, ...] = ()
    """Field checks whose flags are returned after the captured columns (then ``report``)."""
    report: tuple[str, ...] = ()
    """Columns returned after the flags, naming a row whose check failed."""

    @property
    def tail(self) -> int:
        """How many trailing result columns are the runtime's (captured, flags, report)."""
        return len(self.captured) + len(self.checks) + len(self.report)

    @property
    def deletes(self) -> bool:
        return self.analysis.kind == "delete"


def plan(
    analysis: Analysis,
    columns: Collection[str],
    key: Sequence[str],
    checks: Sequence[FieldCheck] = (),
) -> Statement:
    """The statement, returning ``columns`` of the rows it writes and the verdict of the written
    entity's ``checks`` (nothing to add: it runs as written).

    ``key`` is the written entity's primary key (an upsert keeps it, so it never changes it).
    """
    if analysis.kind == "delete":
        checks = ()  # a deleted row breaks no check of its own
    if analysis.kind == "select" or not (columns or checks):
        return Statement(
            analysis, analysis.sql, len(analysis.output_columns) if analysis.output_columns else -1
        )
    (table,) = analysis.writes
    tree = sqlglot.parse_one(analysis.sql, dialect="duckdb")
    wanted = tuple(sorted(set(columns)))
    own = tree.args.get("returning")
    outputs = len(own.expressions) if own is not None else -1
    if own is not None and any(
        isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
        for e in own.expressions
    ):
        outputs = -2  # RETURNING *: the runner counts the table's columns
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    qualifier = target.alias_or_name if isinstance(tree, exp.Update | exp.Delete) else None
    extra = [
        exp.alias_(
            exp.column(name, qualifier) if qualifier else exp.column(name), f"{PREFIX}{i}", quoted=True
        )
        for i, name in enumerate(wanted)
    ]
    report = fieldchecks.report_columns(key, checks) if checks else ()
    extra += fieldchecks.returning(checks, report, qualifier)
    returning = exp.Returning(expressions=[*(own.expressions if own is not None else []), *extra])
    tree.set("returning", returning)
    exact = True
    before = None
    before_params: tuple[str, ...] = ()
    if isinstance(tree, exp.Insert):
        conflict = tree.args.get("conflict")
        replaces = str(tree.args.get("alternative") or "").upper() == "REPLACE"
        updates = conflict is not None and bool(conflict.expressions)
        if (replaces or updates) and not set(wanted) <= set(key):
            exact = False
    elif isinstance(tree, exp.Update):
        assigned = {
            e.this.name.lower()
            for e in tree.expressions
            if isinstance(e, exp.EQ) and isinstance(e.this, exp.Column)
        }
        if assigned & set(wanted):
            before, before_params = _old_values(tree, target, wanted)
    return Statement(
        analysis,
        tree.sql(dialect="duckdb"),
        outputs,
        table=table,
        captured=wanted,
        before=before,
        before_params=before_params,
        exact=exact,
        checks=tuple(checks),
        report=report,
    )


def _old_values(
    update: exp.Update, target: exp.Table, columns: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    """``SELECT <columns> FROM <target> [, <from>] WHERE <where>``: the rows the UPDATE will change."""
    alias = target.alias_or_name
    select = exp.select(*[exp.column(c, alias) for c in columns]).from_(target.copy())
    from_ = update.args.get("from_")
    if from_ is not None:
        select = select.join(from_.this.copy())
        for join in update.args.get("joins") or []:
            select = select.join(join.copy())
    where = update.args.get("where")
    if where is not None:
        select = select.where(where.this.copy())
    names = tuple(dict.fromkeys(str(p.this) for p in select.find_all(exp.Placeholder) if p.this))
    return select.sql(dialect="duckdb"), names
