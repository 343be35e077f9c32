"""Field ``check`` expressions enforced by the runtime (a spec ``checked_by`` buttress).

DuckDB can neither add nor drop a CHECK constraint in place, so each change of a check rebuilds the
table. When the runtime enforces them, a check is part of the spec only: every write statement of
an action returns, after its own columns, one flag per check of the entity it writes — ``(check)
IS FALSE``, true exactly when DuckDB's CHECK would refuse the row (NULL passes, as in SQL) —
evaluated by DuckDB on the very rows the statement wrote (inserted, updated, or upserted). The rows
of a statement thus carry their own verdict; there is no further query. A flag that is true refuses
the whole transaction naming the row, the field and the check. Deploys check every row of the
entities a plan touched (``violations``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlglot
from sqlglot import exp

from runtime.errors import ActionError, Code
from runtime.schema.spec import AppSpec
from runtime.sql import sqlcheck
from runtime.store.values import plain

FLAG: Final = "__bt_ck"
REPORT: Final = "__bt_cr"


@dataclass(frozen=True)
class FieldCheck:
    """``entity.field`` must satisfy ``check`` (the agent's text; ``sql`` as the runtime writes it)."""

    entity: str
    field: str
    check: str
    sql: str


def of(spec: AppSpec) -> dict[str, tuple[FieldCheck, ...]]:
    """Per entity, the checks the runtime enforces (none when DuckDB does)."""
    if spec.checked_by != "buttress":
        return {}
    out: dict[str, tuple[FieldCheck, ...]] = {}
    for entity in spec.entities:
        found = tuple(
            FieldCheck(entity.name, f.name, f.check, sqlcheck.render_expression(f.check))
            for f in entity.fields
            if f.check
        )
        if found:
            out[entity.name] = found
    return out


def returning(checks: Sequence[FieldCheck], report: Sequence[str], qualifier: str | None) -> list[exp.Expr]:
    """The RETURNING expressions that carry the verdict: a flag per check, then the ``report``
    columns (the row's key and checked fields, for the message). Columns are qualified with the
    written table's alias in an UPDATE (DuckDB binds RETURNING to the written table alone; the
    qualifier only says so)."""
    out: list[exp.Expr] = []
    for i, check in enumerate(checks):
        tree = sqlglot.parse_one(check.sql, dialect="duckdb")
        if qualifier:
            for column in list(tree.find_all(exp.Column)):
                column.replace(exp.column(column.name, qualifier, quoted=True))
        flag = exp.Is(this=exp.paren(tree, copy=False), expression=exp.false())
        out.append(exp.alias_(flag, f"{FLAG}{i}", quoted=True))
    for i, name in enumerate(report):
        out.append(exp.alias_(exp.column(name, qualifier, quoted=True), f"{REPORT}{i}", quoted=True))
    return out


def report_columns(key: Sequence[str], checks: Sequence[FieldCheck]) -> tuple[str, ...]:
    """The columns a violation names: the row's key, then each checked field."""
    return tuple(dict.fromkeys([*key, *(c.field for c in checks)]))


def refuse(checks: Sequence[FieldCheck], report: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Raise for the first row whose flags (then report columns, as ``returning`` laid them out)
    say a check failed."""
    width = len(checks)
    for row in rows:
        for i in range(width):
            if row[i] is True:
                check = checks[i]
                values = {name: plain(v) for name, v in zip(report, row[width:], strict=True)}
                raise ActionError(
                    Code.ACTION_CONSTRAINT,
                    f"{check.entity}.{check.field} must satisfy ({check.check}); this call would write "
                    f"{check.field} = {values.get(check.field)!r}",
                    hint=f"Pass a value of {check.field} that satisfies the check; describe_app shows "
                    "every field's check.",
                    details={
                        "entity": check.entity,
                        "field": check.field,
                        "check": check.check,
                        "row": values,
                    },
                )


def violations_sql(spec: AppSpec, entity: str, check: FieldCheck, limit: int) -> str:
    """Rows of ``entity`` that break ``check`` (deploys: the rows a plan left)."""
    found = spec.entity(entity)
    assert found is not None
    columns = report_columns(found.primary_key, [check])
    quoted = ", ".join(exp.to_identifier(c, quoted=True).sql(dialect="duckdb") for c in columns)
    table = exp.to_identifier(entity, quoted=True).sql(dialect="duckdb")
    return f"SELECT {quoted} FROM {table} WHERE ({check.sql}) IS FALSE LIMIT {limit}"
