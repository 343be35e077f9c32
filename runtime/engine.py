"""DuckDB behind one door: the writer lane, snapshot readers, transaction ownership, hardening.

One process owns the database file. Every write goes through ``Engine.transaction()``: one
writer at a time, one context manager that owns BEGIN/COMMIT/ROLLBACK, checks every statement,
and never reports success for a transaction DuckDB aborted (DuckDB's COMMIT after a failed
statement returns OK and silently discards the work). There are no savepoints: a nested
``transaction()`` on the same thread joins the outer one.

Reads use ``Engine.snapshot()``: a fresh cursor in a READ ONLY transaction, concurrent with the
writer, with a time limit enforced by interrupting the query.

The database is opened with external access, extension auto-loading and configuration locked,
so agent SQL that slips past the parser still cannot read files, attach databases or change
settings. ``translate`` is the one place ``duckdb.Error`` becomes a ``ButtressError``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import duckdb

from runtime.errors import ButtressError, Code, EngineError, SqlError

HARDENED: Final[dict[str, Any]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}

Params = dict[str, Any] | list[Any] | tuple[Any, ...] | None
READER_POOL = 16


class Watchdog:
    """One thread that interrupts statements past their deadline (no thread per query)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, duckdb.DuckDBPyConnection]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, cursor: duckdb.DuckDBPyConnection, timeout: float | None) -> int | None:
        if timeout is None:
            return None
        import time

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
        import time

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


class _Disarm:
    def __init__(self, watchdog: Watchdog, token: int) -> None:
        self._watchdog, self._token = watchdog, token

    def cancel(self) -> None:
        self._watchdog.disarm(self._token)


def translate(error: duckdb.Error, *, sql: str | None = None) -> ButtressError:
    """Map a DuckDB exception to the error tree (the only place this happens)."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    details: dict[str, Any] = {"reason": reason, "kind": type(error).__name__}
    if sql is not None:
        details["sql"] = sql[:2000]
    if isinstance(error, duckdb.InterruptException):
        return EngineError(
            Code.QUERY_TIMEOUT,
            "the statement ran past its time limit and was interrupted",
            hint="Narrow the query (filters, LIMIT) or ask the operator for a longer limit.",
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
            hint="Read details.reason: a key, NOT NULL, CHECK or foreign key was violated.",
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


class Tx:
    """One open writer transaction. Every statement goes through ``execute``."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self.failed: ButtressError | None = None
        self._on_commit: list[Callable[[], None]] = []
        self.statements = 0
        self.memo: dict[str, Any] = {}  # bookkeeping that lives and dies with this transaction
        self.rollback_only = False  # set by dry-runs: roll back at the end instead of committing

    def execute(self, sql: str, params: Params = None) -> duckdb.DuckDBPyConnection:
        """Run one statement; a failure aborts the whole transaction (it will not commit)."""
        if self.failed is not None:
            raise EngineError(
                Code.ENGINE_ERROR,
                "the transaction already failed; nothing more runs in it",
                details={"first_error": self.failed.to_dict()},
            )
        try:
            self.statements += 1
            return self._cursor.execute(sql, params) if params else self._cursor.execute(sql)
        except duckdb.Error as error:
            self.failed = translate(error, sql=sql)
            raise self.failed from None

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        return self.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Params = None) -> Any:
        row = self.fetchone(sql, params)
        return None if row is None else row[0]

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after a successful COMMIT (never after a rollback)."""
        self._on_commit.append(callback)

    @property
    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._cursor


class Engine:
    """The process's only handle on the database file."""

    def __init__(self, path: str | Path, *, hardened: bool = True) -> None:
        self.path = str(path)
        try:
            self._db = duckdb.connect(self.path, config=HARDENED if hardened else {})
        except duckdb.Error as error:
            raise translate(error) from None
        self._writer = self._db.cursor()
        self._readers: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._watchdog = Watchdog()
        self._lane = threading.Lock()
        self._local = threading.local()
        self._closed = False

    # ------------------------------------------------------------------------------ writer lane

    @contextmanager
    def transaction(self, *, timeout: float | None = None) -> Iterator[Tx]:
        """The writer lane: one transaction at a time; COMMIT only if every statement succeeded."""
        current: Tx | None = getattr(self._local, "tx", None)
        if current is not None:  # no savepoints in DuckDB: join the outer transaction
            yield current
            return
        if not self._lane.acquire(timeout=-1 if timeout is None else timeout):
            raise EngineError(
                Code.ENGINE_CONFLICT,
                "the writer lane stayed busy past the time limit",
                hint="Retry the call; another write was running.",
            )
        tx = Tx(self._writer)
        self._local.tx = tx
        try:
            self._begin()
            timer = self._arm(self._writer, timeout)
            try:
                yield tx
            finally:
                if timer is not None:
                    timer.cancel()
            if tx.rollback_only:
                self._rollback_quietly()
                return
            if tx.failed is not None:
                raise tx.failed
            self._commit()
        except BaseException:
            self._rollback_quietly()
            raise
        finally:
            self._local.tx = None
            self._lane.release()
        for callback in tx._on_commit:
            callback()

    def in_transaction(self) -> bool:
        return getattr(self._local, "tx", None) is not None

    def _begin(self) -> None:
        try:
            self._writer.execute("BEGIN TRANSACTION")
        except duckdb.Error as error:
            raise translate(error, sql="BEGIN") from None

    def _commit(self) -> None:
        try:
            self._writer.execute("COMMIT")
        except duckdb.Error as error:
            raise translate(error, sql="COMMIT") from None

    def _rollback_quietly(self) -> None:
        # DuckDB may already have ended the transaction (a failed COMMIT rolls back by itself).
        with contextlib.suppress(duckdb.Error):
            self._writer.execute("ROLLBACK")

    # -------------------------------------------------------------------------------- snapshots

    @contextmanager
    def snapshot(
        self, *, timeout: float | None = None, single: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only snapshot on a pooled cursor; runs concurrently with the writer.

        ``single``: the caller runs exactly one statement, which DuckDB already runs on its own
        snapshot, so the explicit READ ONLY transaction (two round trips) is skipped.
        """
        try:
            cursor = self._readers.get_nowait()
        except queue.Empty:
            cursor = self._db.cursor()
        token = None
        healthy = True
        try:
            if not single:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
            token = self._watchdog.arm(cursor, timeout)
            yield cursor
        except duckdb.Error as error:
            raise translate(error) from None
        finally:
            if token is not None:
                self._watchdog.disarm(token)
            try:
                if not single:
                    cursor.execute("ROLLBACK")
            except duckdb.Error:
                healthy = False
            if healthy and self._readers.qsize() < READER_POOL:
                self._readers.put(cursor)
            else:
                cursor.close()

    def _arm(self, cursor: duckdb.DuckDBPyConnection, timeout: float | None) -> _Disarm | None:
        token = self._watchdog.arm(cursor, timeout)
        return None if token is None else _Disarm(self._watchdog, token)

    def scratch(self) -> duckdb.DuckDBPyConnection:
        """A private in-memory database (hardened) for deriving expected catalogs."""
        return duckdb.connect(":memory:", config=HARDENED)

    def checkpoint(self) -> None:
        with self._lane:
            self._writer.execute("CHECKPOINT")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lane:
            with contextlib.suppress(duckdb.Error):
                self._writer.execute("CHECKPOINT")
            self._watchdog.clear()
            self._writer.close()
            while not self._readers.empty():
                self._readers.get_nowait().close()
            self._db.close()
