"""The dry-run's binding of every action statement, by DuckDB, against the target schema.

Analysis (``sqlcheck``, ``usage``) decides fast; DuckDB's binder decides truly. Each statement of
every action of the target spec — as the runner will execute it, with the columns the checks
capture — is bound (``EXPLAIN``: planned, never run) with each ``$param`` replaced by a NULL of the
type the spec declares, in a scratch database built from the target's DDL (the dry-run has checked
that the live catalog equals it). A statement that does not bind, or binds only with types that do
not fit, fails the dry-run naming the action, the statement and DuckDB's reason; nothing runs on
the real data, and every broken statement is listed at once.

On PostgreSQL (``bind_on_postgres``) each statement is the text ``runtime.sql.render`` generates for it
(a construct that has no equal there is a problem of its own), bound by ``EXPLAIN`` in a scratch
schema of a transaction that rolls back, one savepoint per statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from runtime.errors import ButtressError, Code, DeployError
from runtime.logic.prepared import prepare
from runtime.migrate.hazards import HazardCode
from runtime.schema.spec import AppSpec
from runtime.schema.types import duckdb_type
from runtime.sql import parsing
from runtime.sql.dialect import DUCKDB, Dialect
from runtime.sql.render import render
from runtime.store.engine import bind_errors

if TYPE_CHECKING:
    from runtime.store.postgres import PgEngine


def statements(
    spec: AppSpec, dialect: Dialect = DUCKDB
) -> tuple[list[tuple[str, int, str]], list[dict[str, Any]]]:
    """(action, statement index, SQL with typed NULL parameters) for every statement the runner would
    execute, and the problems of actions that cannot even be prepared against ``spec`` (or, on
    another engine than DuckDB, whose statements have no equal there)."""
    out: list[tuple[str, int, str]] = []
    problems: list[dict[str, Any]] = []
    for action in spec.actions:
        try:
            prepared = prepare(spec, action)
        except ButtressError as error:
            problems.append({"action": action.name, "statement": None, "problem": error.message})
            continue
        typed = {p.name: f"CAST(NULL AS {duckdb_type(p.type)})" for p in action.params}
        for index, statement in enumerate(prepared.statements):
            for sql in (statement.before, statement.sql):
                if not sql:
                    continue
                text = parsing.substitute_params(sql, typed)
                if dialect is not DUCKDB:
                    try:
                        text = render(text, dialect).text
                    except ButtressError as error:
                        problems.append({"action": action.name, "statement": index, "problem": error.message})
                        continue
                out.append((action.name, index, text))
    return out, problems


@dataclass(frozen=True)
class Bound:
    """What binding every action statement of one spec found: how many were bound, and the problems."""

    statements: int
    problems: tuple[dict[str, Any], ...]


def bind_in(spec: AppSpec, scratch: duckdb.DuckDBPyConnection) -> Bound:
    """Bind every action statement of ``spec`` in ``scratch``, which holds ``spec``'s schema."""
    found, problems = statements(spec)
    errors = bind_errors(scratch, [sql for _, _, sql in found])
    for (action, index, _), error in zip(found, errors, strict=True):
        if error is not None:
            reason = str(error.details.get("reason") or error.message)
            problems.append({"action": action, "statement": index, "problem": reason})
    return Bound(len(found), tuple(problems))


def bind_on_postgres(spec: AppSpec, engine: PgEngine) -> Bound:
    """Bind every action statement of ``spec`` on PostgreSQL, in a scratch schema holding its DDL."""
    return derive_on_postgres(spec, engine)[1]


def derive_on_postgres(spec: AppSpec, engine: PgEngine) -> tuple[dict[str, Any], Bound]:
    """The catalog ``spec`` builds on PostgreSQL and its statements bound there: one scratch schema
    holds its DDL for both, in a transaction that rolls back."""
    from runtime.migrate import ddl
    from runtime.store import fingerprint
    from runtime.store.postgres import bind_errors as pg_bind_errors

    found, problems = statements(spec, engine.dialect)
    with engine.scratch_schema() as (tx, schema):
        for statement in ddl.spec_ddl(spec, engine.dialect):
            tx.execute(statement)
        catalog = fingerprint.read(tx, schema)
        errors = pg_bind_errors(tx, [sql for _, _, sql in found])
    for (action, index, _), error in zip(found, errors, strict=True):
        if error is not None:
            reason = str(error.details.get("reason") or error.message)
            problems.append({"action": action, "statement": index, "problem": reason})
    return catalog, Bound(len(found), tuple(problems))


def check(bound: Bound, version: int) -> int:
    """Raise ``deploy.dry_run_failed`` listing each statement that does not bind; else how many did."""
    if bound.problems:
        first = bound.problems[0]
        where = f"action {first['action']!r}" + (
            f" statement {first['statement']}" if first["statement"] is not None else ""
        )
        more = f" (and {len(bound.problems) - 1} more)" if len(bound.problems) > 1 else ""
        raise DeployError(
            Code.DEPLOY_DRY_RUN_FAILED,
            f"{where} does not bind against version {version}: {first['problem']}{more}",
            hint="Replace each action named in details.problems in the same proposal (replace_action), "
            "so that it fits the new schema.",
            details={"hazard": str(HazardCode.ACTION_BROKEN), "problems": list(bound.problems)},
        )
    return bound.statements
