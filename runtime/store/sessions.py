"""Statements on one cursor: ``Session`` (and its ``Reader`` and ``Tx``), each statement checked, timed
and its DuckDB error translated.

**Statements.** Every statement runs alone: ``Tx.execute`` and ``Reader.execute`` have DuckDB's own
parser split the text first and refuse anything that is not exactly one statement, so no string that
reaches generated SQL can add a statement to it (the Python client would otherwise run each statement
of a multi-statement string, each autocommitted).

**Deadlines.** A session past its deadline runs nothing more (``limit.timeout``); a statement with a
``timeout`` of its own is interrupted by the one ``Watchdog`` thread when it runs past it.

``translate`` is the one place ``duckdb.Error`` becomes a ``ButtressError``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import duckdb

from runtime.errors import ButtressError, Code, EngineError, SqlError
from runtime.sql.dialect import DUCKDB, Dialect

Params = dict[str, Any] | list[Any] | tuple[Any, ...] | None


class Rows(Protocol):
    """What a statement answers on either engine: a DB-API cursor's reading side."""

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...


class Interruptible(Protocol):
    """What the watchdog stops: a DuckDB cursor, or a PostgreSQL connection's cancel."""

    def interrupt(self) -> None: ...


def bind_errors(
    connection: duckdb.DuckDBPyConnection, statements: Sequence[str]
) -> list[ButtressError | None]:
    """Have DuckDB bind each statement on ``connection`` (``EXPLAIN``: planned, never run), each on its
    own; the translated error of each that does not bind, None for those that do. Meant for a scratch
    database holding a schema to check statements against (``Engine.scratch``)."""
    out: list[ButtressError | None] = []
    for statement in statements:
        try:
            connection.execute(f"EXPLAIN {statement}")
        except duckdb.Error as error:
            out.append(translate(error))
        else:
            out.append(None)
    return out


class Watchdog:
    """One thread that interrupts statements past their deadline (no thread per query)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Interruptible]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, cursor: Interruptible, timeout: float | None) -> int | None:
        if timeout is None:
            return None
        token = next(self._ids)
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + timeout, token, cursor))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="buttress-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cv:
            self._live.discard(token)
            # Drop finished entries from the top so cursors are not kept alive until their deadline.
            while self._heap and self._heap[0][1] not in self._live:
                heapq.heappop(self._heap)
            if len(self._heap) > 4 * len(self._live) + 64:
                self._heap = [entry for entry in self._heap if entry[1] in self._live]
                heapq.heapify(self._heap)

    def clear(self) -> None:
        with self._cv:
            self._heap.clear()
            self._live.clear()

    def _run(self) -> None:
        with self._cv:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait()
                    continue
                deadline, token, cursor = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if token in self._live:
                    self._live.discard(token)
                    cursor.interrupt()


def translate(error: duckdb.Error, *, sql: str | None = None) -> ButtressError:
    """Map a DuckDB exception to the error tree (the only place this happens)."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    details: dict[str, Any] = {"reason": reason, "kind": type(error).__name__}
    if sql is not None:
        details["sql"] = sql[:2000]
    if isinstance(error, duckdb.InterruptException):
        return timeout_error(details)
    if isinstance(error, duckdb.OutOfMemoryException):
        return EngineError(
            Code.LIMIT_MEMORY,
            "the statement needed more memory than the operator's limit allows",
            hint="Narrow the query (filters, LIMIT, fewer or smaller columns) or ask the operator to raise "
            "memory_limit_mb.",
            details=details,
        )
    if isinstance(error, duckdb.PermissionException):
        return SqlError(
            Code.SQL_FORBIDDEN,
            "the statement tried to reach files, extensions or settings",
            hint="Only application tables are reachable.",
            details=details,
        )
    if isinstance(error, duckdb.TransactionException) and ("onflict" in text):
        return EngineError(
            Code.ENGINE_CONFLICT,
            "a concurrent transaction changed the same data",
            hint="Retry the call; it is safe to retry.",
            details=details,
        )
    if isinstance(error, duckdb.ConstraintException):
        return EngineError(
            Code.ENGINE_CONSTRAINT,
            f"a constraint refused the write: {reason}",
            hint="Read details.reason: a key, NOT NULL or CHECK constraint was violated.",
            details=details,
        )
    if isinstance(error, duckdb.IOException) and "lock" in text.lower():
        return EngineError(
            Code.ENGINE_LOCKED,
            "another process holds the database file",
            hint="Stop the other server (or use its MCP tools / `buttress approve`) and try again.",
            details=details,
        )
    return EngineError(Code.ENGINE_ERROR, f"the database refused the statement: {reason}", details=details)


def contended(error: ButtressError, attempts: int) -> EngineError:
    """``limit.memory`` for work that ran out of memory while other sessions' work held the pool."""
    return EngineError(
        Code.LIMIT_MEMORY,
        "the database's memory was held by other sessions' work while this ran; nothing of it was committed",
        hint="Retry in a moment; it is safe to retry. If it keeps failing, narrow the work or ask the "
        "operator to raise memory_limit_mb.",
        details={**error.details, "contended": True, "attempts": attempts},
    )


def timeout_error(details: dict[str, Any] | None = None) -> EngineError:
    """``limit.timeout``: the work ran past its deadline and was stopped; nothing of it committed."""
    return EngineError(
        Code.QUERY_TIMEOUT,
        "the work ran past its time limit and was interrupted; nothing of it was committed",
        hint="Narrow the query or the change (filters, LIMIT, fewer rows), or ask the operator for a longer "
        "limit.",
        details=details or {},
    )


# One-statement checks of texts already seen; generated SQL repeats, so the parser runs once per text.
_SINGLE: set[str] = set()
_SINGLE_MAX = 4096


def single_statement(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse ``sql`` unless DuckDB's own parser reads exactly one statement in it."""
    if sql in _SINGLE:
        return
    try:
        count = len(cursor.extract_statements(sql))
    except duckdb.Error as error:
        raise translate(error, sql=sql) from None
    if count != 1:
        raise SqlError(
            Code.SQL_FORBIDDEN,
            f"refused to run a text holding {count} statements: every statement runs alone",
            hint="Send exactly one statement.",
            details={"statements": count, "sql": sql[:2000]},
        )
    if len(_SINGLE) >= _SINGLE_MAX:
        _SINGLE.clear()
    _SINGLE.add(sql)


class Session:
    """Statements on one cursor: each checked to be one statement, DuckDB errors translated.

    ``dialect`` is the engine's spelling of what differs (``runtime.sql.dialect``); code that writes
    such SQL asks the session it runs on. A PostgreSQL session overrides ``_run``."""

    dialect: ClassVar[Dialect] = DUCKDB

    def __init__(
        self,
        cursor: Any,
        deadline: float | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._cursor = cursor
        self.deadline = deadline
        self._watchdog = watchdog
        self.memo: dict[str, Any] = {}  # bookkeeping that lives and dies with this session

    def execute(self, sql: str, params: Params = None, *, timeout: float | None = None) -> Rows:
        """Run one statement. ``timeout``: interrupt this statement after so many seconds (on top of
        the session's own deadline)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise timeout_error({"sql": sql[:2000]})
        return self._run(sql, params, timeout)

    def _run(self, sql: str, params: Params, timeout: float | None) -> Rows:
        """Run one statement on DuckDB: one statement only, interrupted after ``timeout``."""
        single_statement(self._cursor, sql)
        token = None
        if timeout is not None and self._watchdog is not None:
            token = self._watchdog.arm(self._cursor, timeout)
        try:
            cursor: Rows = self._cursor.execute(sql, params) if params else self._cursor.execute(sql)
            return cursor
        except duckdb.Error as error:
            raise translate(error, sql=sql) from None
        finally:
            if token is not None and self._watchdog is not None:
                self._watchdog.disarm(token)

    @contextlib.contextmanager
    def as_agent(self) -> Iterator[None]:
        """Statements an agent wrote, run as the engine's agent role where it has one (PostgreSQL: the
        database then refuses what the role may not do, whatever got past the SQL guard). DuckDB has no
        roles: the guard alone stands, and nothing changes here."""
        yield

    def execute_agent(
        self, sql: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Rows:
        """Run a statement an agent wrote, which the SQL guard accepted (DuckDB's dialect, ``$name``
        parameters). DuckDB runs the text as written; another engine runs the text generated for it
        from the analysed tree (``runtime.sql.render``), never the agent's text re-read."""
        if self.dialect is DUCKDB:
            return self.execute(sql, params, timeout=timeout)
        from runtime.sql.render import render

        rendered = render(sql, self.dialect)
        return self.execute(rendered.text, rendered.values(params or {}), timeout=timeout)

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, params: Params = None) -> Any:
        row = self.fetchone(sql, params)
        return None if row is None else row[0]

    @property
    def cursor(self) -> Any:
        return self._cursor

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


class Reader(Session):
    """A read-only snapshot: statements see the database as of the snapshot's start."""

    unread: bool = False
    """A result may be left partly read on the cursor; the caller clears it once it read to the end."""

    def execute(self, sql: str, params: Params = None, *, timeout: float | None = None) -> Rows:
        self.unread = True
        return super().execute(sql, params, timeout=timeout)


@dataclass(eq=False)
class Work:
    """A snapshot or a writer transaction while it runs: what ``Engine.sharing_memory`` waits for."""

    thread: int
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None


class Tx(Session):
    """One open writer transaction. Every statement goes through ``execute``."""

    def __init__(
        self,
        cursor: Any,
        deadline: float | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        super().__init__(cursor, deadline, watchdog)
        self.failed: ButtressError | None = None
        self._on_commit: list[Callable[[], None]] = []
        self._on_commit_locked: list[Callable[[], None]] = []
        self.statements = 0
        self.rollback_only = False  # set by dry-runs: roll back at the end instead of committing

    def execute(self, sql: str, params: Params = None, *, timeout: float | None = None) -> Rows:
        """Run one statement; a failure aborts the whole transaction (it will not commit)."""
        if self.failed is not None:
            raise EngineError(
                Code.ENGINE_ERROR,
                "the transaction already failed; nothing more runs in it",
                details={"first_error": self.failed.to_dict()},
            )
        self.statements += 1
        try:
            return super().execute(sql, params, timeout=timeout)
        except ButtressError as error:
            self.failed = error
            raise

    def on_commit(self, callback: Callable[[], None], *, in_lane: bool = False) -> None:
        """Run ``callback`` after a successful COMMIT (never after a rollback).

        ``in_lane``: run it before the writer lane is released, so that the next writer already sees
        its effect (in-memory state derived from what committed, such as the current version).
        """
        (self._on_commit_locked if in_lane else self._on_commit).append(callback)
