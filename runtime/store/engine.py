"""DuckDB behind one door: connections, the writer lane, snapshot readers, transaction ownership.

**Connections.** ``connect`` is the only place in the runtime that opens a DuckDB database, the
project file and private in-memory scratch databases alike. Every connection it opens is hardened:
external access (files, network, ATTACH), extension installing and loading, and configuration are
locked, and memory is bounded (``Settings``), spilling into a directory inside the project. Agent
SQL that slipped past the SQL guard still cannot read a file, attach a database or change a setting.

**Statements.** Every statement runs alone: ``Tx.execute`` and ``Reader.execute`` have DuckDB's own
parser split the text first and refuse anything that is not exactly one statement, so no string that
reaches generated SQL can add a statement to it (the Python client would otherwise run each statement
of a multi-statement string, each autocommitted).

**The writer lane.** One process owns the database file. Every write goes through
``Engine.transaction()``: one writer at a time, waiting at most ``wait`` seconds for the lane
(``engine.busy`` otherwise), one context manager that owns BEGIN/COMMIT/ROLLBACK, checks every
statement, enforces a deadline (``limit.timeout``), and never reports success for a transaction
DuckDB aborted (DuckDB's COMMIT after a failed statement returns OK and silently discards the work).
There are no savepoints: a nested ``transaction()`` on the same thread joins the outer one.

**Reads** use ``Engine.snapshot()``: a pooled cursor in a READ ONLY transaction, concurrent with the
writer, with a time limit enforced by interrupting the query. A result left partly read (truncated,
or abandoned by an error) is dropped with its cursor: DuckDB would otherwise keep the rest of it, a
sort of the whole table for instance, in memory for as long as the pooled cursor lives.

**Memory is one pool.** DuckDB's ``memory_limit`` is shared by every session of the database, so a
statement can fail only because another one filled the pool. ``Engine.sharing_memory`` runs work
that is safe to run again (a read, a mutation's transaction) so that such a victim does not fail:
when it runs out of memory while older work was running, it waits for that work to end and runs
again. The statement that filled the pool itself (nothing older was running) fails at once.

``translate`` is the one place ``duckdb.Error`` becomes a ``ButtressError``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb

from runtime.errors import ButtressError, Code, EngineError, SqlError

HARDENED: Final[dict[str, Any]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}
"""Settings every connection is opened with. External access and the configuration lock are set
right after opening (``connect``): DuckDB refuses a spill directory once external access is off."""

LOCKS: Final[tuple[str, ...]] = (
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)

Params = dict[str, Any] | list[Any] | tuple[Any, ...] | None
T = TypeVar("T")
READER_POOL = 16
MEMORY_ATTEMPTS: Final = 3
"""How often ``Engine.sharing_memory`` runs work that ran out of memory while older work held it."""


@dataclass(frozen=True)
class Settings:
    """How much of the machine one database may use (from the operator's ``[limits]``)."""

    memory_limit_mb: int = 2048
    """DuckDB's memory limit; larger work spills to ``spill_directory``."""
    spill_directory: str | None = None
    """Where DuckDB spills; None: no spilling (in-memory scratch databases)."""
    max_spill_mb: int = 10240
    threads: int | None = None
    """DuckDB's worker threads; None: one per core."""


def connect(path: str, settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """Open a hardened DuckDB connection: the only ``duckdb.connect`` in the runtime.

    ``path`` is a database file or ``":memory:"`` (a private scratch database).
    """
    settings = settings or Settings()
    config: dict[str, Any] = {**HARDENED, "memory_limit": f"{settings.memory_limit_mb}MB"}
    if settings.threads is not None:
        config["threads"] = settings.threads
    if settings.spill_directory is not None:
        Path(settings.spill_directory).mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = settings.spill_directory
        config["max_temp_directory_size"] = f"{settings.max_spill_mb}MB"
    else:
        config["temp_directory"] = ""  # no spilling: nothing is written outside the database
    try:
        connection = duckdb.connect(path, config=config)
    except duckdb.Error as error:
        raise translate(error) from None
    try:
        for statement in LOCKS:
            connection.execute(statement)
    except duckdb.Error as error:
        connection.close()
        raise translate(error) from None
    return connection


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
        self._heap: list[tuple[float, int, duckdb.DuckDBPyConnection]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, cursor: duckdb.DuckDBPyConnection, timeout: float | None) -> int | None:
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
    """Statements on one cursor: each checked to be one statement, DuckDB errors translated."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        deadline: float | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._cursor = cursor
        self.deadline = deadline
        self._watchdog = watchdog
        self.memo: dict[str, Any] = {}  # bookkeeping that lives and dies with this session

    def execute(
        self, sql: str, params: Params = None, *, timeout: float | None = None
    ) -> duckdb.DuckDBPyConnection:
        """Run one statement. ``timeout``: interrupt this statement after so many seconds (on top of
        the session's own deadline)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise timeout_error({"sql": sql[:2000]})
        single_statement(self._cursor, sql)
        token = None
        if timeout is not None and self._watchdog is not None:
            token = self._watchdog.arm(self._cursor, timeout)
        try:
            return self._cursor.execute(sql, params) if params else self._cursor.execute(sql)
        except duckdb.Error as error:
            raise translate(error, sql=sql) from None
        finally:
            if token is not None and self._watchdog is not None:
                self._watchdog.disarm(token)

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        return self.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Params = None) -> Any:
        row = self.fetchone(sql, params)
        return None if row is None else row[0]

    @property
    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._cursor

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


class Reader(Session):
    """A read-only snapshot: statements see the database as of the snapshot's start."""

    unread: bool = False
    """A result may be left partly read on the cursor; the caller clears it once it read to the end."""

    def execute(
        self, sql: str, params: Params = None, *, timeout: float | None = None
    ) -> duckdb.DuckDBPyConnection:
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
        cursor: duckdb.DuckDBPyConnection,
        deadline: float | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        super().__init__(cursor, deadline, watchdog)
        self.failed: ButtressError | None = None
        self._on_commit: list[Callable[[], None]] = []
        self._on_commit_locked: list[Callable[[], None]] = []
        self.statements = 0
        self.rollback_only = False  # set by dry-runs: roll back at the end instead of committing

    def execute(
        self, sql: str, params: Params = None, *, timeout: float | None = None
    ) -> duckdb.DuckDBPyConnection:
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


class Engine:
    """The process's only handle on the database file."""

    def __init__(self, path: str | Path, *, settings: Settings | None = None) -> None:
        self.path = str(path)
        self.settings = settings or Settings(
            spill_directory=str(Path(self.path).parent / ".buttress" / "spill")
        )
        self._db = connect(self.path, self.settings)
        self._writer = self._db.cursor()
        self._readers: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._watchdog = Watchdog()
        self._lane = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._running: set[Work] = set()
        self._ended: deque[Work] = deque(maxlen=256)
        self._work_changed = threading.Condition()

    # ------------------------------------------------------------------------------ writer lane

    @contextmanager
    def transaction(self, *, timeout: float | None = None, wait: float | None = None) -> Iterator[Tx]:
        """The writer lane: one transaction at a time; COMMIT only if every statement succeeded.

        ``wait``: the longest the caller waits for the lane (``engine.busy`` after that; None waits
        as long as ``timeout``, or without bound when neither is given — for operator tools only).
        ``timeout``: the transaction's deadline; a statement running past it is interrupted and the
        transaction rolls back (``limit.timeout``).
        """
        current: Tx | None = getattr(self._local, "tx", None)
        if current is not None:  # no savepoints in DuckDB: join the outer transaction
            yield current
            return
        bound = wait if wait is not None else timeout
        if not self._lane.acquire(timeout=-1 if bound is None else bound):
            raise EngineError(
                Code.ENGINE_BUSY,
                f"the writer lane stayed busy for {bound:g} s (another change is running)",
                hint="Retry the call in a moment; it is safe to retry. Nothing was done.",
                details={"waited_s": bound},
            )
        tx = Tx(self._writer, None if timeout is None else time.monotonic() + timeout, self._watchdog)
        self._local.tx = tx
        committed = False
        work = self._start_work()
        try:
            try:
                self._begin()
                token = self._watchdog.arm(self._writer, timeout)
                try:
                    yield tx
                finally:
                    if token is not None:
                        self._watchdog.disarm(token)
                if tx.rollback_only:
                    self._rollback_quietly()
                    return
                if tx.failed is not None:
                    raise tx.failed
                self._commit()
                committed = True
            except BaseException:
                self._rollback_quietly()
                raise
            finally:
                self._local.tx = None
            for callback in tx._on_commit_locked:
                callback()
        finally:
            self._end_work(work)
            self._lane.release()
        if committed:
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
    def snapshot(self, *, timeout: float | None = None, single: bool = False) -> Iterator[Reader]:
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
        work = self._start_work()
        reader = Reader(cursor, None if timeout is None else time.monotonic() + timeout, self._watchdog)
        try:
            if not single:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
            token = self._watchdog.arm(cursor, timeout)
            yield reader
        except duckdb.Error as error:
            raise translate(error) from None
        finally:
            if token is not None:
                self._watchdog.disarm(token)
            try:
                if not single:
                    cursor.execute("ROLLBACK")  # also drops a result left partly read
                elif reader.unread:
                    healthy = False  # only closing the cursor frees what DuckDB holds for the rest
            except duckdb.Error:
                healthy = False
            self._end_work(work)
            if healthy and self._readers.qsize() < READER_POOL:
                self._readers.put(cursor)
            else:
                cursor.close()

    # ----------------------------------------------------------------------------- shared memory

    def sharing_memory(self, work: Callable[[], T], *, budget: float | None) -> T:
        """Run ``work`` so that it does not fail for memory that other sessions' work held.

        ``work`` must be safe to run again: a read, or a function that opens its own transaction
        (which rolled back when it failed). When it fails with ``limit.memory`` while work that
        started before it was running, it waits for that work to end (until ``budget`` seconds after
        the first try) and runs again, at most ``MEMORY_ATTEMPTS`` times. When nothing older was
        running, the statement needed the memory by itself: its error is raised at once. A victim
        that still fails gets ``details.contended`` and a hint to retry.
        """
        if self.in_transaction():  # a failed statement aborted the caller's transaction: nothing to rerun
            return work()
        deadline = None if budget is None else time.monotonic() + budget
        for attempt in itertools.count(1):
            started = time.monotonic()
            try:
                return work()
            except ButtressError as error:
                if error.code != Code.LIMIT_MEMORY:
                    raise
                older = self._older_than(started)
                if not older:
                    raise
                if attempt >= MEMORY_ATTEMPTS or not self._wait_for(older, deadline):
                    raise contended(error, attempt) from None
        raise AssertionError("unreachable")

    def memory_in_use(self) -> int:
        """Bytes DuckDB holds for the whole database right now (every session's work)."""
        cursor = self._db.cursor()  # not a pooled one: running this on it would free what it holds
        try:
            row = cursor.execute(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
            ).fetchone()
        except duckdb.Error as error:
            raise translate(error) from None
        finally:
            cursor.close()
        return int(row[0]) if row else 0

    def _start_work(self) -> Work:
        work = Work(threading.get_ident())
        with self._work_changed:
            self._running.add(work)
        return work

    def _end_work(self, work: Work) -> None:
        with self._work_changed:
            work.ended = time.monotonic()
            self._running.discard(work)
            self._ended.append(work)
            self._work_changed.notify_all()

    def _older_than(self, started: float) -> list[Work]:
        """Other threads' work that began before ``started`` and was still running at or after it."""
        me = threading.get_ident()
        with self._work_changed:
            return [
                w
                for w in (*self._running, *self._ended)
                if w.thread != me and w.started < started and (w.ended is None or w.ended >= started)
            ]

    def _wait_for(self, works: list[Work], deadline: float | None) -> bool:
        """Wait until every one of ``works`` has ended; False when ``deadline`` came first."""
        with self._work_changed:
            while any(w.ended is None for w in works):
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return False
                self._work_changed.wait(wait)
        return True

    def scratch(self) -> duckdb.DuckDBPyConnection:
        """A private, hardened in-memory database (for deriving expected catalogs); close it after use."""
        return connect(":memory:", Settings(memory_limit_mb=256, threads=1))

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
