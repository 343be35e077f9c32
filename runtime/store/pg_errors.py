"""PostgreSQL's errors in the runtime's terms: the one place a ``psycopg.Error`` becomes a
``ButtressError`` (``translate_pg``), by SQLSTATE. Serialization failures and deadlocks are
``engine.conflict`` (safe to retry), a lock wait past its bound ``engine.busy``, constraint violations
``engine.constraint`` (a duplicate key with the values it collides on, as DuckDB says them), the agent
role's refusals ``sql.forbidden``, a value the client cannot load the same coded error as on DuckDB.
"""

from __future__ import annotations

import re
from typing import Any, Final

import psycopg

from runtime.errors import ButtressError, Code, EngineError, SqlError
from runtime.store import values
from runtime.store.sessions import timeout_error

RETRYABLE: Final = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the transaction did nothing and may run again."""


_KEY_DETAIL = re.compile(r"^Key \((?P<columns>.*)\)=\((?P<values>.*)\) already exists\.$")


def _duplicate(diag: Any) -> dict[str, Any] | None:
    """A unique violation's key and values from PostgreSQL's diagnostics (``Key (a, b)=(1, x) already
    exists.``), with whether it is the primary key (the ``_pkey`` constraint); None when the values
    cannot be told apart (a value holding ", ")."""
    found = _KEY_DETAIL.match(str(getattr(diag, "message_detail", None) or ""))
    if found is None:
        return None
    columns, values = found.group("columns").split(", "), found.group("values").split(", ")
    if len(columns) != len(values):
        return None
    constraint = str(getattr(diag, "constraint_name", None) or "")
    return {
        "kind": "primary key" if constraint.endswith("_pkey") else "unique",
        "values": dict(zip(columns, values, strict=True)),
    }


def translate_pg(error: psycopg.Error, *, sql: str | None = None) -> ButtressError:
    """Map a PostgreSQL error to the error tree (the only place this happens for this engine)."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    state = getattr(error, "sqlstate", None) or ""
    details: dict[str, Any] = {"reason": reason, "kind": type(error).__name__, "sqlstate": state}
    if sql is not None:
        details["sql"] = sql[:2000]
    if not state and isinstance(error, psycopg.DataError):  # the client could not load a value
        return values.unrepresentable(reason)
    if state == "57014":  # query_canceled: the watchdog or statement_timeout
        return timeout_error(details)
    if state in RETRYABLE:
        return EngineError(
            Code.ENGINE_CONFLICT,
            "a concurrent transaction changed the same data",
            hint="Retry the call; it is safe to retry. Nothing was committed.",
            details={**details, "retryable": True},
        )
    if state == "55P03":  # lock_not_available: the lane, or a table a change must lock
        return EngineError(
            Code.ENGINE_BUSY,
            "a lock stayed held for longer than the wait allows (the writer lane, or a table a change "
            "must lock while another server reads it)",
            hint="Retry the call in a moment; it is safe to retry. Nothing was done.",
            details=details,
        )
    if state.startswith("23"):
        if state == "23505":  # unique_violation: the key and the values it collides on, as DuckDB says them
            duplicate = _duplicate(getattr(error, "diag", None))
            if duplicate is not None:
                details["duplicate"] = duplicate
        return EngineError(
            Code.ENGINE_CONSTRAINT,
            f"a constraint refused the write: {reason}",
            hint="Read details.reason: a key, NOT NULL or CHECK constraint was violated.",
            details=details,
        )
    if state in ("42501", "25006"):  # insufficient_privilege, read_only_sql_transaction
        return SqlError(
            Code.SQL_FORBIDDEN,
            "the statement tried to reach something outside the application's tables",
            hint="Only application tables are reachable.",
            details=details,
        )
    if state in ("53200", "53100", "54000"):  # out of memory, disk full, program limit exceeded
        return EngineError(
            Code.LIMIT_MEMORY,
            "the statement needed more memory than the operator's limit allows",
            hint="Narrow the query (filters, LIMIT, fewer or smaller columns) or ask the operator to raise "
            "work_mem_mb.",
            details=details,
        )
    if state == "42601" and "multiple commands" in text:
        return SqlError(
            Code.SQL_FORBIDDEN,
            "refused to run a text holding several statements: every statement runs alone",
            hint="Send exactly one statement.",
            details=details,
        )
    if isinstance(error, psycopg.OperationalError):
        return EngineError(
            Code.ENGINE_ERROR,
            f"the connection to PostgreSQL failed: {reason}",
            hint="Retry the call once the database is reachable; nothing of this call was committed.",
            details={**details, "retryable": True},
        )
    return EngineError(Code.ENGINE_ERROR, f"the database refused the statement: {reason}", details=details)
