"""DuckDB behind one door: connections, the writer lane, snapshot readers, transaction ownership.

**Connections.** ``connect`` is the only place in the runtime that opens a DuckDB database, the
project file and private in-memory scratch databases alike. Every connection it opens is hardened:
external access (files, network, ATTACH), extension installing and loading, and configuration are
locked, and memory is bounded (``Settings``), spilling into a directory inside the project. Agent
SQL that slipped past the SQL guard still cannot read a file, attach a database or change a setting.

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

Statements run on sessions (``runtime.store.sessions``: ``Session``, ``Reader``, ``Tx``, importable from
here), which translate DuckDB's errors.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import duckdb

from runtime.errors import ButtressError, Code, EngineError
from runtime.sql.dialect import DUCKDB, Dialect
from runtime.store.sessions import Reader, Watchdog, Work, contended, translate
from runtime.store.sessions import Session as Session  # importable from here, as before the split
from runtime.store.sessions import Tx as Tx
from runtime.store.sessions import bind_errors as bind_errors

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


class Engine:
    """The process's only handle on the database file."""

    dialect: ClassVar[Dialect] = DUCKDB

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
            asked = current.rollback_only
            yield current
            if current.rollback_only and not asked:  # never roll back the outer work in silence
                raise EngineError(
                    Code.ENGINE_ERROR,
                    "a transaction nested in another asked to roll back, which would undo the outer one",
                    hint="This is a fault of the runtime; nothing was committed.",
                )
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
