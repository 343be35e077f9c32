"""PostgreSQL behind the same door as DuckDB: the writer lane across servers, snapshot readers, errors.

``PgEngine`` answers what ``Engine`` answers — ``transaction()``, ``snapshot()``, ``in_transaction()``,
``sharing_memory()``, ``close()`` — with sessions that speak the same ``Session`` interface and the
``POSTGRES`` dialect. Several processes, on several hosts, may hold a ``PgEngine`` on one database.

**The writer lane across servers (phase A).** A change takes the process's lane, then a session-level
advisory lock on the writer connection, *before* ``BEGIN ISOLATION LEVEL SERIALIZABLE``: every
server's writer transactions commit one after another, and each starts its snapshot after the
previous one committed. (An advisory lock taken inside a SERIALIZABLE or REPEATABLE READ transaction
leaves the snapshot older than the wait: stale reads. ``notes/postgres-facts``.) The lock is released
after COMMIT or ROLLBACK, and PostgreSQL frees it by itself when a server dies. Waiting is bounded by
``lock_timeout`` (``engine.busy``).

**Statements** always use the extended protocol, which refuses a text holding several statements.
DuckDB's parameters (``?``, ``$name``) are numbered (``Dialect.numbered``), so the runtime's SQL is
written once. A statement past its deadline is cancelled by the watchdog (``limit.timeout``).

**Reads** run in ``REPEATABLE READ READ ONLY`` transactions on pooled connections, concurrently with
any server's writer.

**Agent SQL** reads as its own login role (``snapshot(agent=True)``), which ``provision_agent_role``
creates: no superuser, no role or database creation, no inheritance, no access to the system schema,
``SELECT`` on the application's tables only, and per-role ``statement_timeout``, ``work_mem``,
``idle_in_transaction_session_timeout`` and a pinned ``search_path``. Because the role is the session
user, a ``set_config('role', ...)`` cannot climb back to the owner; what an agent's statement sets
with ``set_config`` ends with the snapshot's rollback, and session-level advisory locks it took are
released before its connection goes back to the pool (one could otherwise hold every server's lane).

``translate_pg`` (``pg_errors``) maps SQLSTATEs to the error tree: serialization failures and
deadlocks are ``engine.conflict`` (safe to retry), unique and check violations ``engine.constraint``.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_loads

from runtime.errors import ButtressError, Code, EngineError
from runtime.sql.dialect import POSTGRES, SUPPORT_SCHEMA, Dialect
from runtime.store.pg_errors import translate_pg
from runtime.store.sessions import Params, Reader, Rows, Tx, Watchdog

T = TypeVar("T")

LANE_KEY: Final = 0x42755454
"""The advisory lock key of the writer lane (one per database; ``Buttress`` in ASCII, shortened)."""
READER_POOL: Final = 16
AGENT_ROLE: Final = "buttress_agent"
WATCH_SLICE: Final = 0.25
"""How long a watch waits for a notification at a time (its stop is noticed this soon)."""


@dataclass(frozen=True)
class PgSettings:
    """Limits every connection is opened with (from the operator's ``[limits]``)."""

    work_mem_mb: int = 64
    idle_in_transaction_s: float = 60.0
    application_name: str = "buttress"
    agent_statement_timeout_s: float = 30.0
    """The agent role's ``statement_timeout``: the bound on any one statement of agent SQL."""


def connect_pg(dsn: str, settings: PgSettings | None = None) -> psycopg.Connection[Any]:
    """Open a PostgreSQL connection: the only ``psycopg.connect`` in the runtime.

    Autocommit (the engine issues BEGIN itself), a pinned ``search_path``, bounded ``work_mem`` and
    idle-in-transaction time, and the server's time zone fixed to UTC."""
    settings = settings or PgSettings()
    options = " ".join(
        (
            "-c search_path=public",
            f"-c work_mem={settings.work_mem_mb}MB",
            f"-c idle_in_transaction_session_timeout={int(settings.idle_in_transaction_s * 1000)}",
            "-c TimeZone=UTC",
        )
    )
    try:
        connection = psycopg.connect(
            dsn, autocommit=True, options=options, application_name=settings.application_name
        )
    except psycopg.Error as error:
        raise translate_pg(error) from None
    set_json_loads(_json_text, connection)  # JSON reads as its text, as DuckDB's client gives it
    return connection


def _json_text(data: bytes | bytearray | memoryview | str) -> str:
    return data if isinstance(data, str) else bytes(data).decode("utf-8")


class _Cancel:
    """The watchdog's handle on a PostgreSQL connection: interrupting it cancels what runs on it."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def interrupt(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._connection.cancel_safe(timeout=5.0)


class _PgStatements:
    """Runs a session's statements on PostgreSQL: numbered parameters, the extended protocol only."""

    dialect: ClassVar[Dialect] = POSTGRES
    _cursor: Any
    _watchdog: Watchdog | None
    agent_role: str | None = None
    """The role agent statements take in this session (``as_agent``); None until it is provisioned."""

    @contextlib.contextmanager
    def as_agent(self) -> Iterator[None]:
        """The agent's statements as the agent role, for this stretch of the transaction; the runtime's
        own statements after it run as the owner again. A statement that failed leaves the transaction
        aborted (it rolls back, and the role with it), so nothing is reset then."""
        if self.agent_role is None:
            yield
            return
        self._run("SELECT set_config('role', ?, true)", [self.agent_role], None)
        try:
            yield
        finally:
            if self._cursor.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
                self._run("SELECT set_config('role', 'none', true)", None, None)

    def _run(self, sql: str, params: Params, timeout: float | None) -> Rows:
        text, values = POSTGRES.numbered(sql, params)
        cursor = psycopg.RawCursor(self._cursor)
        token = None
        if timeout is not None and self._watchdog is not None:
            token = self._watchdog.arm(_Cancel(self._cursor), timeout)
        try:
            # binary results force the extended protocol even without parameters: never two statements
            cursor.execute(text, values, binary=True)
        except psycopg.Error as error:
            raise translate_pg(error, sql=sql) from None
        finally:
            if token is not None and self._watchdog is not None:
                self._watchdog.disarm(token)
        if cursor.description is None:  # no rows of its own: answer as DuckDB does
            return _Count(cursor.rowcount)
        return cursor


class _Count:
    """What a write without RETURNING answers, as DuckDB's client does: one row, the rows it changed
    (DDL and other statements that count nothing answer no rows)."""

    def __init__(self, count: int) -> None:
        self._rows: list[tuple[int]] = [(count,)] if count >= 0 else []
        self.description: Any = [("Count",)] if count >= 0 else None

    def fetchone(self) -> tuple[int] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[int]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchmany(self, size: int = 1) -> list[tuple[int]]:
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows


class PgTx(_PgStatements, Tx):
    """A writer-lane transaction on PostgreSQL (SERIALIZABLE, under the lane lock)."""


class PgReader(_PgStatements, Reader):
    """A REPEATABLE READ READ ONLY snapshot on PostgreSQL."""


class PgEngine:
    """A server's handle on a PostgreSQL database that other servers may share."""

    dialect: ClassVar[Dialect] = POSTGRES

    def __init__(
        self,
        dsn: str,
        *,
        settings: PgSettings | None = None,
        lane_key: int = LANE_KEY,
        agent_dsn: str | None = None,
        path: str | None = None,
    ) -> None:
        """``agent_dsn``: how the agent role logs in (default: ``dsn`` as ``buttress_agent``, without
        the owner's password, which suits peer and trust authentication). ``path``: a file name in the
        directory where this server keeps what still lives beside a database (the audit anchor,
        approval requests; a project's ``app.postgres``), until those move into the database."""
        self.dsn = dsn
        self.path = path or str(Path.cwd() / "app.postgres")
        self.agent_login = agent_dsn is not None
        """Agent reads log in as the agent role (``agent_dsn`` given); else they take the role on the
        owner's connection for their transaction (``set_config('role', ..., true)``), which works
        whatever the authentication, while the SQL guard refuses any function that could set it back."""
        self.agent_dsn = agent_dsn or agent_conninfo(dsn)
        self.agent_role = AGENT_ROLE
        self.agent_writes = False
        """Actions' statements run as the agent role (set once ``provision_agent_role`` granted it)."""
        self.settings = settings or PgSettings()
        self.lane_key = lane_key
        self._writer = connect_pg(dsn, self.settings)
        self._readers: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._agent_readers: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._watchdog = Watchdog()
        self._lane = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._on_begin: list[Callable[[Tx], None]] = []

    def on_begin(self, callback: Callable[[Tx], None]) -> None:
        """Run ``callback(tx)`` at the start of every writer transaction, on its snapshot: where state
        other servers may have changed is read again (the current version)."""
        self._on_begin.append(callback)

    # ------------------------------------------------------------------------------ writer lane

    @contextmanager
    def transaction(self, *, timeout: float | None = None, wait: float | None = None) -> Iterator[Tx]:
        """The writer lane across every server on the database: one transaction at a time.

        ``wait`` bounds the wait for this process's lane and then for the other servers' (the
        advisory lock, under ``lock_timeout``); ``timeout`` is the transaction's deadline."""
        current: Tx | None = getattr(self._local, "tx", None)
        if current is not None:  # the same thread's outer transaction: join it
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
        started = time.monotonic()
        if not self._lane.acquire(timeout=-1 if bound is None else bound):
            raise EngineError(
                Code.ENGINE_BUSY,
                f"the writer lane stayed busy for {bound:g} s (another change is running)",
                hint="Retry the call in a moment; it is safe to retry. Nothing was done.",
                details={"waited_s": bound},
            )
        committed = False
        tx: PgTx | None = None
        try:
            self._ensure_writer()
            left = None if bound is None else max(0.001, bound - (time.monotonic() - started))
            self._take_lane_lock(left)
            try:
                tx = PgTx(
                    self._writer, None if timeout is None else time.monotonic() + timeout, self._watchdog
                )
                tx.agent_role = self.agent_role if self.agent_writes else None
                self._local.tx = tx
                try:
                    self._plain(POSTGRES.begin_write)
                    token = self._watchdog.arm(_Cancel(self._writer), timeout)
                    try:
                        for begun in self._on_begin:
                            begun(tx)
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
                self._release_lane_lock()
        finally:
            self._lane.release()
        if committed and tx is not None:
            for callback in tx._on_commit:
                callback()

    def in_transaction(self) -> bool:
        return getattr(self._local, "tx", None) is not None

    @contextmanager
    def scratch_schema(self) -> Iterator[tuple[Tx, str]]:
        """A writer transaction that always rolls back, with a fresh schema first on its
        ``search_path``: DDL run in it builds nothing that lasts (PostgreSQL's DDL is transactional).
        PostgreSQL's counterpart of DuckDB's scratch database, for deriving an expected catalog.
        Inside this thread's writer transaction it is a savepoint of that transaction, rolled back
        (with its ``search_path``) at the end: the outer work goes on and commits."""
        name = f"_scratch_{uuid.uuid4().hex[:12]}"
        outer: Tx | None = getattr(self._local, "tx", None)
        if outer is not None:  # inside this thread's writer transaction: a savepoint rolled back
            outer.execute(f"SAVEPOINT {name}")
            try:
                outer.execute(f"CREATE SCHEMA {name}")
                outer.execute(f"SET LOCAL search_path = {name}, public")  # undone with the savepoint
                yield outer, name
            finally:
                outer.execute(f"ROLLBACK TO SAVEPOINT {name}")
                outer.execute(f"RELEASE SAVEPOINT {name}")
            return
        with self.transaction() as tx:
            tx.rollback_only = True
            tx.execute(f"CREATE SCHEMA {name}")
            tx.execute(f"SET LOCAL search_path = {name}, public")
            yield tx, name

    def _commit(self) -> None:
        """COMMIT, and make sure it did: PostgreSQL answers COMMIT in a transaction one of whose
        statements failed with a ROLLBACK, and no error."""
        try:
            cursor = self._writer.execute("COMMIT", prepare=False)
        except psycopg.Error as error:
            raise translate_pg(error, sql="COMMIT") from None
        if cursor.statusmessage != "COMMIT":
            raise EngineError(
                Code.ENGINE_ERROR,
                "the transaction was rolled back instead of committed: a statement in it had failed",
                hint="Nothing was changed. This is a fault of the runtime; the call may be retried.",
                details={"status": cursor.statusmessage},
            )

    def _plain(self, sql: str) -> None:
        try:
            self._writer.execute(sql, prepare=False)
        except psycopg.Error as error:
            raise translate_pg(error, sql=sql) from None

    def _take_lane_lock(self, wait: float | None) -> None:
        """The session-level advisory lock, before BEGIN: the snapshot then starts after the wait.

        One round trip when the lane is free (``pg_try_advisory_lock``); a bounded wait otherwise."""
        try:
            free = self._writer.execute(f"SELECT pg_try_advisory_lock({self.lane_key})").fetchone()
        except psycopg.Error as error:
            raise translate_pg(error) from None
        if free and free[0]:
            return
        milliseconds = 0 if wait is None else max(1, int(wait * 1000))
        self._plain(f"SET lock_timeout = {milliseconds}")
        try:
            self._plain(f"SELECT pg_advisory_lock({self.lane_key})")
        finally:
            with contextlib.suppress(ButtressError):
                self._plain("SET lock_timeout = 0")

    def _release_lane_lock(self) -> None:
        with contextlib.suppress(ButtressError):
            self._plain(f"SELECT pg_advisory_unlock({self.lane_key})")

    def _rollback_quietly(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._writer.execute("ROLLBACK")

    def _ensure_writer(self) -> None:
        """Reopen the writer connection after it broke (its lock and transaction went with it)."""
        if self._writer.closed or self._writer.broken:
            with contextlib.suppress(psycopg.Error):
                self._writer.close()
            self._writer = connect_pg(self.dsn, self.settings)

    # -------------------------------------------------------------------------------- snapshots

    @contextmanager
    def snapshot(
        self, *, timeout: float | None = None, single: bool = False, agent: bool = False
    ) -> Iterator[Reader]:
        """A read-only snapshot on a pooled connection; runs concurrently with every server's writer.

        ``agent``: as the agent role (``provision_agent_role``), for SQL an agent wrote."""
        del single  # one statement or many: PostgreSQL needs the transaction for the read-only mode
        login = agent and self.agent_login
        pool = self._agent_readers if login else self._readers
        try:
            connection = pool.get_nowait()
        except queue.Empty:
            connection = connect_pg(self.agent_dsn if login else self.dsn, self.settings)
        healthy = True
        reader = PgReader(connection, None if timeout is None else time.monotonic() + timeout, self._watchdog)
        token = None
        try:
            connection.execute(POSTGRES.begin_read)
            if agent and not login:  # the role and its limits, for this transaction only
                connection.execute(
                    "SELECT set_config('role', %s, true), set_config('statement_timeout', %s, true), "
                    "set_config('work_mem', %s, true)",
                    [
                        self.agent_role,
                        str(int(self.settings.agent_statement_timeout_s * 1000)),
                        f"{self.settings.work_mem_mb}MB",
                    ],
                )
            token = self._watchdog.arm(_Cancel(connection), timeout)
            yield reader
        except psycopg.Error as error:
            raise translate_pg(error) from None
        finally:
            if token is not None:
                self._watchdog.disarm(token)
            try:
                connection.execute("ROLLBACK")  # also undoes what set_config changed in it
                if agent:
                    connection.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                healthy = False
            if healthy and not connection.broken and pool.qsize() < READER_POOL:
                pool.put(connection)
            else:
                connection.close()

    # ------------------------------------------------------------------------------ change feed

    def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """Tell every server watching ``channel`` that ``tx`` changed something, when (and only if)
        it commits. The payload is a hint; watchers read the database for what changed."""
        tx.execute("SELECT pg_notify(?, ?)", [channel, payload])

    def watch(self, channel: str, changed: Callable[[str | None], None], *, poll: float = 5.0) -> Watch:
        """Call ``changed(payload)`` on a thread whenever a server's transaction notified ``channel``,
        and ``changed(None)`` at least every ``poll`` seconds: polling is the source of truth (a
        notification is lost while the connection is down, and then the next poll catches up)."""
        return Watch(self.dsn, self.settings, channel, changed, poll)

    def sharing_memory(self, work: Callable[[], T], *, budget: float | None) -> T:
        """PostgreSQL bounds memory per operation (``work_mem``), not in one shared pool: no victims
        of other sessions' work to run again."""
        del budget
        return work()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lane:
            self._watchdog.clear()
            self._writer.close()
            for pool in (self._readers, self._agent_readers):
                while not pool.empty():
                    pool.get_nowait().close()


def bind_errors(tx: Tx, statements: list[str]) -> list[ButtressError | None]:
    """Have PostgreSQL bind each statement in ``tx`` (``EXPLAIN``: planned, never run), each under a
    savepoint of its own so that one that does not bind leaves the others to be tried; the translated
    error of each that does not bind, None for those that do. ``tx`` is a scratch transaction
    (``PgEngine.scratch_schema``); its statements are the generated text (numbered parameters)."""
    connection: psycopg.Connection[Any] = tx.cursor
    out: list[ButtressError | None] = []
    for statement in statements:
        text, values = POSTGRES.numbered(statement, [])
        cursor = psycopg.RawCursor(connection)
        try:
            connection.execute("SAVEPOINT buttress_bind")
            cursor.execute(f"EXPLAIN {text}", values, binary=True)
        except psycopg.Error as error:
            out.append(translate_pg(error, sql=statement))
            connection.execute("ROLLBACK TO SAVEPOINT buttress_bind")
        else:
            out.append(None)
            connection.execute("RELEASE SAVEPOINT buttress_bind")
    return out


class Watch:
    """A thread listening on one channel with a connection of its own; reconnects when it breaks."""

    def __init__(
        self,
        dsn: str,
        settings: PgSettings,
        channel: str,
        changed: Callable[[str | None], None],
        poll: float,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", channel):
            raise ValueError(f"not a plain channel name: {channel!r}")
        self._dsn, self._settings, self.channel = dsn, settings, channel
        self._changed, self._poll = changed, poll
        self._stop = threading.Event()
        self.listening = threading.Event()
        """Set while the listening connection is up (tests wait for it)."""
        self.reconnects = 0
        self._connection: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name=f"buttress-watch-{channel}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._connection = connect_pg(self._dsn, self._settings)
                self._connection.execute(f"LISTEN {self.channel}")
                self.listening.set()
                self._changed(None)  # caught up: anything missed while down is read now
                ticked = time.monotonic()
                while not self._stop.is_set():
                    for note in self._connection.notifies(timeout=WATCH_SLICE, stop_after=1):
                        self._changed(note.payload)
                        ticked = time.monotonic()
                    if time.monotonic() - ticked >= self._poll:
                        self._changed(None)
                        ticked = time.monotonic()
            except (psycopg.Error, ButtressError):
                self.listening.clear()
                if self._stop.is_set():
                    return
                self.reconnects += 1
                self._stop.wait(min(5.0, 0.1 * 2 ** min(self.reconnects, 6)))
            finally:
                if self._connection is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._connection.close()

    def backend_pid(self) -> int | None:
        connection = self._connection
        return None if connection is None or connection.closed else connection.info.backend_pid

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=WATCH_SLICE + 5)


def agent_conninfo(dsn: str, role: str = AGENT_ROLE) -> str:
    """``dsn`` logging in as ``role``, without the owner's password."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    params["user"] = role
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def provision_agent_role(engine: PgEngine, role: str = AGENT_ROLE) -> None:
    """Create or refresh the role agent SQL reads as, with its limits and grants (idempotent).

    Needs an owner that may create roles. The role reads the application's tables (``public``,
    present and future) and nothing of the system schema; ``CREATE`` on ``public`` is revoked from
    everyone but the owner."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"not a plain role name: {role!r}")
    limits = engine.settings
    with engine.transaction() as tx:
        created = not tx.scalar("SELECT count(*) FROM pg_roles WHERE rolname = ?", [role])
        if created:  # a role is the cluster's: another database's server may be creating it right now
            tx.execute(
                "DO $$ BEGIN "
                f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION "
                "NOBYPASSRLS CONNECTION LIMIT 64; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
        limits_sql = (  # set by whoever creates the role: they apply when it logs in
            f"ALTER ROLE {role} SET statement_timeout = {int(limits.agent_statement_timeout_s * 1000)}",
            f"ALTER ROLE {role} SET work_mem = '{limits.work_mem_mb}MB'",
            f"ALTER ROLE {role} SET idle_in_transaction_session_timeout = "
            f"{int(limits.idle_in_transaction_s * 1000)}",
            f"ALTER ROLE {role} SET search_path = public",
            f"ALTER ROLE {role} SET default_transaction_read_only = on",
        )
        for statement in (
            *(limits_sql if created else ()),
            f"GRANT {role} TO CURRENT_USER",  # the owner takes the role for an agent's reads
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "CREATE SCHEMA IF NOT EXISTS _buttress",
            "REVOKE ALL ON SCHEMA _buttress FROM PUBLIC",
            f"REVOKE ALL ON SCHEMA _buttress FROM {role}",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"CREATE SCHEMA IF NOT EXISTS {SUPPORT_SCHEMA}",  # the try-casts agent SQL calls
            f"REVOKE CREATE ON SCHEMA {SUPPORT_SCHEMA} FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA {SUPPORT_SCHEMA} TO {role}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
            # actions' statements write as the role too (reads stay read-only transactions)
            f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, UPDATE, DELETE ON TABLES TO {role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {SUPPORT_SCHEMA} TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SUPPORT_SCHEMA} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        ):
            tx.execute(statement)
    engine.agent_writes = True
