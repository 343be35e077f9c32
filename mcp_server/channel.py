"""Several clients, one project: the process that owns the database serves the others over a socket.

DuckDB lets one process open a database file. The first ``buttress serve`` on a project opens it and
listens on a Unix socket only the project's OS user can open (mode 0600 in a 0700 directory, and the
peer's uid checked); a second ``buttress serve`` and every CLI command attach to it instead of opening
the file, and act through it with their own identity (each call names its actor, so the audit log
shows who did what). With no server running, a command opens the file itself.

The protocol is newline-delimited JSON. A request names one runtime method, its actor and its
parameters; the owner answers with ``{"progress": [done, total, message]}`` lines (for dry-runs,
deploys and rollbacks), then one ``{"result": ...}`` or ``{"error": {code, message, hint, details}}``.
A ``watch`` request stays open and receives ``{"event": "version", "number": n}`` after every deploy
and rollback. If the owner dies, a waiting client gets ``engine.owner_gone`` at once (the connection
closes), never a hang; its next call attaches to the new owner or opens the file itself.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter

from runtime.api import OPERATOR, Progress, RuntimeAPI, SpecCheck
from runtime.boundary.policy import Capability, Limits
from runtime.errors import ButtressError, Code, EngineError, PolicyError, from_dict
from runtime.results import (
    AckResult,
    ActionResult,
    ActivityHead,
    AppDescription,
    ApprovalRequest,
    AuditEntry,
    AuditPage,
    ClaimResult,
    DataFilter,
    DataPage,
    DeployResult,
    DryRunReport,
    EffectInfo,
    FinalizeResult,
    MessageInfo,
    Overview,
    ProposalDetail,
    ProposalPage,
    ProposalResult,
    ProposalSummary,
    PublishResult,
    QueryResult,
    RollbackResult,
    RowDetail,
    RunChanges,
    RunDetail,
    RunHistory,
    RunInfo,
    RunPage,
    SqlCheckResult,
    VerifyResult,
    VersionComparison,
    VersionInfo,
    VersionPage,
    WorkflowSummary,
)
from runtime.schema.diff import SpecDiff
from runtime.schema.spec import AppSpec

logger = logging.getLogger(__name__)

MAX_PATH = 100  # sun_path holds 108 bytes
CONNECT_TIMEOUT = 2.0
MAX_LINE = 256 * 1024 * 1024
"""The longest answer line a client reads (answers come from the owner, bounded by its limits)."""
MAX_CONNECTIONS: Final = 256
"""Most connections the owner serves at once: an attached server holds two (its session and its
watch), each call in progress one more. One more is answered ``limit.exceeded`` and closed."""
ENVELOPE_BYTES: Final = 65_536
"""What a request line may hold beyond ``[limits] max_request_bytes``: its method, actor and session."""
READ_S: Final = 30.0
"""Longest the owner waits for a request line to arrive whole."""
WRITE_S: Final = 60.0
"""Longest the owner waits on a client that does not read its answer."""

RESULTS: dict[str, TypeAdapter[Any]] = {
    "describe": TypeAdapter(AppDescription),
    "versions": TypeAdapter(list[VersionInfo]),
    "version_spec": TypeAdapter(AppSpec),
    "diff_versions": TypeAdapter(SpecDiff),
    "proposals": TypeAdapter(list[ProposalSummary]),
    "query": TypeAdapter(QueryResult),
    "check_sql": TypeAdapter(SqlCheckResult),
    "read_audit": TypeAdapter(list[AuditEntry]),
    "verify_audit": TypeAdapter(VerifyResult),
    "reanchor_audit": TypeAdapter(VerifyResult),
    "propose": TypeAdapter(ProposalResult),
    "redeploy": TypeAdapter(ProposalResult),
    "dry_run": TypeAdapter(DryRunReport),
    "deploy": TypeAdapter(DeployResult),
    "rollback": TypeAdapter(RollbackResult),
    "finalize": TypeAdapter(FinalizeResult),
    "run_action": TypeAdapter(ActionResult),
    # workflows and messages
    "start_workflow": TypeAdapter(RunInfo),
    "get_run": TypeAdapter(RunDetail),
    "list_runs": TypeAdapter(list[RunInfo]),
    "cancel_run": TypeAdapter(RunInfo),
    "signal_run": TypeAdapter(RunInfo),
    "retry_run": TypeAdapter(RunInfo),
    "resolve_effect": TypeAdapter(EffectInfo),
    "list_effects": TypeAdapter(list[EffectInfo]),
    "publish_message": TypeAdapter(PublishResult),
    "claim_messages": TypeAdapter(ClaimResult),
    "ack_messages": TypeAdapter(AckResult),
    "list_messages": TypeAdapter(list[MessageInfo]),
    # control room
    "overview": TypeAdapter(Overview),
    "workflow_summary": TypeAdapter(WorkflowSummary),
    "version_page": TypeAdapter(VersionPage),
    "compare_versions": TypeAdapter(VersionComparison),
    "proposal_page": TypeAdapter(ProposalPage),
    "proposal_detail": TypeAdapter(ProposalDetail),
    "approval_requests": TypeAdapter(list[ApprovalRequest]),
    "approve_request": TypeAdapter(ApprovalRequest),
    "refuse_request": TypeAdapter(ApprovalRequest),
    "audit_page": TypeAdapter(AuditPage),
    "activity_head": TypeAdapter(ActivityHead),
    "run_changes": TypeAdapter(RunChanges),
    "search_runs": TypeAdapter(RunPage),
    "run_history": TypeAdapter(RunHistory),
    "browse_data": TypeAdapter(DataPage),
    "read_row": TypeAdapter(RowDetail),
    "export_data": TypeAdapter(QueryResult),
}
"""The runtime methods the channel carries, and how each result is read back."""

PROGRESSING = frozenset({"dry_run", "deploy", "rollback"})


def socket_path(database: str | Path) -> Path:
    """Where the owner of ``database`` listens: ``.buttress/<name>.sock`` beside it, or, when that path
    is too long for a Unix socket, a per-user directory under the temporary directory."""
    database = Path(database).resolve()
    local = database.parent / ".buttress" / f"{database.name}.sock"
    if len(str(local)) <= MAX_PATH:
        return local
    digest = hashlib.sha256(str(database).encode()).hexdigest()[:20]
    return Path("/tmp") / f"buttress-{os.getuid()}" / f"{digest}.sock"


def _owner_gone(why: str) -> EngineError:
    return EngineError(
        Code.ENGINE_OWNER_GONE,
        f"the process that owned the project stopped or did not answer ({why})",
        hint="Call again: the next call attaches to the new owner, or opens the project itself.",
    )


# ------------------------------------------------------------------------------------------- owner


@dataclass
class Session:
    """A long-lived client attached to the owner (a ``buttress serve``, the control room), for as long as
    its session connection stays open."""

    id: str
    pid: int
    agent: str
    transport: str
    since: str
    actors: set[str] = field(default_factory=set)

    def public(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "agent": self.agent,
            "transport": self.transport,
            "since": self.since,
            "actors": sorted(self.actors),
        }


class ChannelServer:
    """Serves one owned runtime to the project's other processes: a thread per connection, at most
    ``max_connections`` at once, each request line at most ``[limits] max_request_bytes`` (plus
    ``ENVELOPE_BYTES``); a client that vanishes mid-request or mid-answer costs its thread and nothing
    else. ``describe`` adds what the owning process knows of itself to ``status``."""

    def __init__(
        self,
        runtime: RuntimeAPI,
        path: Path,
        *,
        max_connections: int = MAX_CONNECTIONS,
        describe: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.path = path
        self.max_connections = max_connections
        self._describe = describe
        self._watchers: list[socket.socket] = []
        self._sessions: dict[str, Session] = {}
        self._session_sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._connections = 0
        self._accepted = 0
        self._requests = 0
        self._last_activity = time.monotonic()
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # we own the database: any socket left here is a dead owner's
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            self._listener.bind(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        self._listener.listen(64)
        runtime.on_version_change(self._announce)
        self._thread = threading.Thread(target=self._accept, name="buttress-channel", daemon=True)
        self._thread.start()

    # connections -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError as error:
                if self._closed:
                    return
                logger.warning("the project socket cannot accept a connection: %s", error)
                time.sleep(0.1)  # out of file descriptors, say: try again, do not stop serving
                continue
            if not _same_user(connection):
                connection.close()
                continue
            with self._lock:
                self._accepted += 1
                admitted = self._connections < self.max_connections
                if admitted:
                    self._connections += 1
            if not admitted:
                _refuse(connection, _too_many(self.max_connections))
                continue
            try:
                threading.Thread(
                    target=self._serve, args=(connection,), name="buttress-channel-call", daemon=True
                ).start()
            except RuntimeError:  # no thread to be had: the same answer as at the cap
                self._release()
                _refuse(connection, _too_many(self.max_connections))

    def _release(self) -> None:
        with self._lock:
            self._connections -= 1
            self._last_activity = time.monotonic()

    def _serve(self, connection: socket.socket) -> None:
        try:
            with connection, connection.makefile("rwb") as stream:
                self._handle(connection, stream)
        except (OSError, ValueError) as error:  # the client went away mid-request or mid-answer
            logger.debug("a channel client went away: %r", error)
        except Exception:
            logger.exception("a channel connection failed")
        finally:
            self._release()

    def _handle(self, connection: socket.socket, stream: Any) -> None:
        connection.settimeout(READ_S)
        limit = self.runtime.limits.max_request_bytes + ENVELOPE_BYTES
        line = stream.readline(limit + 1)
        if not line.endswith(b"\n"):
            if len(line) > limit:  # unterminated within the cap: refuse it, read no further
                _write(stream, {"error": _too_large(len(line), limit).to_dict()})
            return  # else the client went away before finishing its request
        connection.settimeout(WRITE_S)
        try:
            request = json.loads(line)
            method = str(request["method"])
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise TypeError("params")
        except (ValueError, KeyError, TypeError):
            _write(stream, {"error": _malformed().to_dict()})
            return
        session = str(request.get("session") or "")
        if method == "watch":
            self._hold(connection, stream, self._watchers, {"number": self.runtime.current[0]})
            return
        if method == "session":
            self._attach(connection, stream, params)
            return
        with self._lock:
            self._requests += 1
            found = self._sessions.get(session)
            actor = str(request.get("actor", OPERATOR))[:200]
            if found is not None and len(found.actors) < 32:
                found.actors.add(actor)
        try:
            self._answer(method, actor, params, stream)
        finally:
            with self._lock:
                self._requests -= 1
                self._last_activity = time.monotonic()
                self._settled.notify_all()

    def _answer(self, method: str, actor: str, params: dict[str, Any], stream: Any) -> None:
        try:
            result = self._call(method, actor, params, stream)
        except ButtressError as error:
            _write(stream, {"error": error.to_dict()})
        except (OSError, ValueError):
            raise
        except Exception:
            logger.exception("channel request %s failed", method)
            _write(
                stream,
                {"error": {"code": "internal", "message": f"{method} failed", "hint": "", "details": {}}},
            )
        else:
            _write(stream, {"result": result})

    def _hold(
        self, connection: socket.socket, stream: Any, into: list[socket.socket], first: dict[str, Any]
    ) -> None:
        """Answer ``first``, then keep the connection among ``into`` until the client closes it."""
        _write(stream, {"result": first})
        with self._lock:
            into.append(connection)
        try:
            connection.settimeout(None)
            while stream.read1(4096):  # held open until the client goes away (anything it sends is dropped)
                pass
        finally:
            with self._lock, contextlib.suppress(ValueError):
                into.remove(connection)

    def _attach(self, connection: socket.socket, stream: Any, params: dict[str, Any]) -> None:
        session = Session(
            id=os.urandom(8).hex(),
            pid=int(params.get("pid") or 0),
            agent=str(params.get("agent") or "")[:200],
            transport=str(params.get("transport") or "")[:20],
            since=_now(),
        )
        with self._lock:
            self._sessions[session.id] = session
            self._session_sockets[session.id] = connection
        try:
            self._hold(connection, stream, [], {"session": session.id})
        finally:
            with self._lock:
                self._sessions.pop(session.id, None)
                self._session_sockets.pop(session.id, None)
                self._last_activity = time.monotonic()

    # state -------------------------------------------------------------------------------------

    def idle_for(self, *, calls_excluded: int = 0) -> float:
        """Seconds since the last client went away, with no client attached or calling (0 while any is;
        ``calls_excluded``: calls in progress not to count, the asking one)."""
        with self._lock:
            if self._sessions or self._watchers or self._requests > calls_excluded:
                return 0.0
            return time.monotonic() - self._last_activity

    def status(self) -> dict[str, Any]:
        """Who owns the project (``describe``), how long it has been idle and who is attached to it (asked
        by one call over the socket)."""
        with self._lock:
            sessions = [s.public() for s in self._sessions.values()]
            connections, requests, accepted = self._connections, self._requests, self._accepted
        owner: dict[str, Any] = self._describe() if self._describe is not None else {"pid": os.getpid()}
        owner["idle_for_s"] = round(self.idle_for(calls_excluded=1), 1)  # asked by one call
        return {
            "owner": owner,
            "sessions": sorted(sessions, key=lambda s: (s["since"], s["pid"])),
            "connections": connections,
            "accepted": accepted,
            "requests": requests,
            "max_connections": self.max_connections,
        }

    def _call(self, method: str, actor: str, params: dict[str, Any], stream: Any) -> Any:
        runtime = self.runtime
        if method == "state":
            number, spec = runtime.current
            known = params.get("hash")
            return {
                "number": number,
                "hash": spec.hash(),
                "spec": None if known == spec.hash() else spec.model_dump(mode="json"),
            }
        if method == "limits":
            return runtime.limits.model_dump(mode="json")
        if method == "status":
            return self.status()
        if method == "authorize":
            runtime.authorize(actor, Capability(params["capability"]), what=str(params["what"]))
            return None
        if method == "record_refusal":
            runtime.record_refusal(
                str(params["operation"]), actor, dict(params["arguments"]), from_dict(params["error"])
            )
            return None
        if method not in RESULTS:
            raise EngineError(Code.NOT_FOUND, f"no runtime method {method!r}")
        call: Callable[..., Any] = getattr(runtime, method)
        if method in PROGRESSING:

            def progress(done: int, total: int, message: str) -> None:
                with contextlib.suppress(OSError, ValueError):  # a caller gone away does not stop the work
                    _write(stream, {"progress": [done, total, message]})

            params = {**params, "progress": progress}
        result = call(**params, actor=actor)
        return RESULTS[method].dump_python(result, mode="json")

    def _announce(self, number: int) -> None:
        """Tell every watcher of a new version, without ever waiting on one: a watcher that stopped
        reading is dropped."""
        line = json.dumps({"event": "version", "number": number}).encode() + b"\n"
        with self._lock:
            watchers = list(self._watchers)
        for connection in watchers:
            try:
                sent = connection.send(line, socket.MSG_DONTWAIT)
            except OSError:
                sent = -1
            if sent != len(line):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def close(self, *, drain_s: float = 0.0, wait_s: float = 10.0) -> None:
        """Stop serving: no new client finds the socket; those already queued are served for
        ``drain_s``; calls in progress get up to ``wait_s`` to answer; attached clients are let go."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if drain_s:
            time.sleep(drain_s)
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        deadline = time.monotonic() + wait_s
        with self._lock:
            while self._requests and time.monotonic() < deadline:
                self._settled.wait(max(0.0, deadline - time.monotonic()))
            held = [*self._watchers, *self._session_sockets.values()]
        for connection in held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _same_user(connection: socket.socket) -> bool:
    """The peer runs as this process's user (Linux checks it; elsewhere the socket's mode does)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    raw = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", raw)
    return bool(uid == os.getuid())


def _write(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message, default=str).encode() + b"\n")
    stream.flush()


def _refuse(connection: socket.socket, error: ButtressError) -> None:
    """Answer ``error`` and close, without waiting on the client (a connection over the cap)."""
    with contextlib.suppress(OSError), connection:
        connection.settimeout(0.5)
        connection.sendall(json.dumps({"error": error.to_dict()}).encode() + b"\n")


def _too_many(cap: int) -> PolicyError:
    return PolicyError(
        Code.LIMIT_EXCEEDED,
        f"the project's owner is serving its limit of {cap} connections",
        hint="Retry in a moment; `buttress status` shows who is attached.",
        details={"max_connections": cap},
    )


def _too_large(size: int, limit: int) -> PolicyError:
    return PolicyError(
        Code.LIMIT_EXCEEDED,
        f"the request is larger than {limit} bytes (max_request_bytes and its envelope); it was not read",
        hint="Send a smaller request (split the change), or ask the operator to raise max_request_bytes.",
        details={"bytes_read": size, "max_bytes": limit},
    )


def _malformed() -> ButtressError:
    return ButtressError(
        Code.INTERNAL,
        "malformed request",
        hint="A request is one JSON object per line: method, actor, params.",
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ client


@dataclass(frozen=True)
class ClientInfo:
    """Who a long-lived client is, as ``buttress status`` shows it."""

    agent: str
    transport: str
    pid: int = field(default_factory=os.getpid)


def owner_status(path: Path) -> dict[str, Any]:
    """What the owner listening at ``path`` says of itself and of its attached clients (``status``);
    ``engine.owner_gone`` when nobody listens."""
    status: dict[str, Any] = RemoteRuntime(path, Limits())._request("status", {}, actor=OPERATOR, timeout=10)
    return status


class RemoteRuntime:
    """The runtime of a project another process owns, reached over its socket (a ``RuntimeAPI``).

    Attached with a ``ClientInfo`` it also holds a session open, so the owner counts it as attached
    (and lists it in ``buttress status``) and it learns at once when the owner goes away (``broken``:
    the next call resolves the owner again)."""

    LIMITS_TTL_S: Final = 1.0

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        self._limits = limits
        self._limits_at = time.monotonic()
        self.spec_checks: list[SpecCheck] = []  # the owner runs its own
        self.broken = False
        self.session: str | None = None
        self._session_socket: socket.socket | None = None
        self._spec: AppSpec | None = None
        self._number = -1
        self._watch: socket.socket | None = None

    @classmethod
    def attach(cls, path: Path, client: ClientInfo | None = None) -> RemoteRuntime:
        """Attach to the owner listening at ``path`` (as ``client``: a session held open until
        ``close``); ``engine.owner_gone`` when nobody listens."""
        probe = cls(path, Limits())
        limits = Limits.model_validate(probe._request("limits", {}, actor=OPERATOR, timeout=10))
        remote = cls(path, limits)
        if client is not None:
            remote._open_session(client)
        return remote

    def _open_session(self, client: ClientInfo) -> None:
        connection = self._connect()
        try:
            connection.settimeout(10)
            stream = connection.makefile("rwb")
            _write(
                stream,
                {
                    "method": "session",
                    "params": {"pid": client.pid, "agent": client.agent, "transport": client.transport},
                },
            )
            line = stream.readline(MAX_LINE)
            self.session = str(json.loads(line)["result"]["session"])
            connection.settimeout(None)
        except (OSError, ValueError, KeyError, TypeError):
            connection.close()
            self.broken = True
            raise _owner_gone("the session was not opened") from None
        self._session_socket = connection

        def held() -> None:
            with contextlib.suppress(OSError, ValueError):
                while stream.read1(4096):
                    pass
            self.broken = True  # the owner went away: the next call finds the new one

        threading.Thread(target=held, name="buttress-session", daemon=True).start()

    # transport ------------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(CONNECT_TIMEOUT)
        try:
            connection.connect(str(self.path))
        except OSError as error:
            connection.close()
            self.broken = True
            raise _owner_gone(type(error).__name__) from None
        return connection

    @contextlib.contextmanager
    def _connection(self) -> Iterator[socket.socket]:
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    def _request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        actor: str,
        timeout: float,
        progress: Progress | None = None,
    ) -> Any:
        with self._connection() as connection:
            connection.settimeout(timeout)
            stream = connection.makefile("rwb")
            try:
                request = {"method": method, "actor": actor, "params": params, "session": self.session}
                # the owner may have answered before reading (a refusal): then read what it said
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    _write(stream, request)
                while True:
                    line = stream.readline(MAX_LINE)
                    if not line:
                        self.broken = True
                        raise _owner_gone("the connection closed")
                    message = json.loads(line)
                    if "progress" in message:
                        if progress is not None:
                            progress(*message["progress"])
                        continue
                    if "error" in message:
                        raise from_dict(message["error"])
                    return message["result"]
            except TimeoutError:
                self.broken = True
                raise _owner_gone(f"no answer within {timeout:g} s") from None
            except (ConnectionError, OSError) as error:
                self.broken = True
                raise _owner_gone(type(error).__name__) from None
            finally:
                with contextlib.suppress(OSError):
                    stream.close()

    def _call(self, method: str, actor: str, progress: Progress | None = None, **params: Any) -> Any:
        limits = self.limits
        timeout = {
            "query": limits.query_timeout_s,
            "run_action": limits.action_timeout_s + limits.lane_wait_s,
        }.get(method, limits.change_timeout_s + limits.lane_wait_s) + 30
        raw = self._request(method, params, actor=actor, timeout=timeout, progress=progress)
        return RESULTS[method].validate_python(raw)

    # state ------------------------------------------------------------------------------------

    @property
    def current(self) -> tuple[int, AppSpec]:
        known = self._spec.hash() if self._spec is not None else None
        state = self._request("state", {"hash": known}, actor=OPERATOR, timeout=30)
        if state["spec"] is not None:
            self._spec = AppSpec.model_validate(state["spec"])
        self._number = int(state["number"])
        assert self._spec is not None
        return self._number, self._spec

    @property
    def limits(self) -> Limits:
        """The owner's limits in force (asked again when a second has passed: the operator may have
        changed them in buttress.toml)."""
        if time.monotonic() - self._limits_at >= self.LIMITS_TTL_S and not self.broken:
            with contextlib.suppress(ButtressError):
                self._limits = Limits.model_validate(self._request("limits", {}, actor=OPERATOR, timeout=10))
            self._limits_at = time.monotonic()
        return self._limits

    def on_version_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(version)`` whenever the owner deploys or rolls back (a watch connection)."""

        def watch() -> None:
            try:
                with self._connection() as connection:
                    connection.settimeout(None)
                    stream = connection.makefile("rwb")
                    _write(stream, {"method": "watch", "session": self.session})
                    for line in stream:
                        message = json.loads(line)
                        if message.get("event") == "version":
                            listener(int(message["number"]))
            except (ButtressError, OSError, ValueError):
                logger.debug("watch of %s ended", self.path, exc_info=True)

        threading.Thread(target=watch, name="buttress-watch", daemon=True).start()

    def authorize(self, actor: str, capability: Capability, *, what: str) -> None:
        self._request("authorize", {"capability": str(capability), "what": what}, actor=actor, timeout=30)

    def record_refusal(
        self, operation: str, actor: str, arguments: dict[str, Any], error: ButtressError
    ) -> None:
        from runtime.store.audit import cap

        self._request(
            "record_refusal",
            {
                "operation": operation,
                "arguments": cap(json.loads(json.dumps(arguments, default=str))),
                "error": error.to_dict(),
            },
            actor=actor,
            timeout=30,
        )

    # the facade -------------------------------------------------------------------------------

    def describe(self, *, actor: str = OPERATOR) -> AppDescription:
        result: AppDescription = self._call("describe", actor)
        return result

    def versions(self, *, actor: str = OPERATOR) -> list[VersionInfo]:
        result: list[VersionInfo] = self._call("versions", actor)
        return result

    def version_spec(self, number: int, *, actor: str = OPERATOR) -> AppSpec:
        result: AppSpec = self._call("version_spec", actor, number=number)
        return result

    def diff_versions(self, from_version: int, to_version: int, *, actor: str = OPERATOR) -> SpecDiff:
        result: SpecDiff = self._call(
            "diff_versions", actor, from_version=from_version, to_version=to_version
        )
        return result

    def proposals(self, *, actor: str = OPERATOR, pending: bool = False) -> list[ProposalSummary]:
        result: list[ProposalSummary] = self._call("proposals", actor, pending=pending)
        return result

    def query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        *,
        limit: int | None = None,
        actor: str = OPERATOR,
    ) -> QueryResult:
        result: QueryResult = self._call("query", actor, sql=sql, params=params, limit=limit)
        return result

    def check_sql(self, sql: str, *, proposal_id: str | None = None, actor: str = OPERATOR) -> SqlCheckResult:
        result: SqlCheckResult = self._call("check_sql", actor, sql=sql, proposal_id=proposal_id)
        return result

    def read_audit(
        self, *, limit: int = 50, after_seq: int = 0, operation: str | None = None, actor: str = OPERATOR
    ) -> list[AuditEntry]:
        result: list[AuditEntry] = self._call(
            "read_audit", actor, limit=limit, after_seq=after_seq, operation=operation
        )
        return result

    def verify_audit(self, *, actor: str = OPERATOR) -> VerifyResult:
        result: VerifyResult = self._call("verify_audit", actor)
        return result

    def reanchor_audit(self, *, actor: str = OPERATOR) -> VerifyResult:
        result: VerifyResult = self._call("reanchor_audit", actor)
        return result

    def propose(
        self,
        operations: Sequence[Any],
        *,
        base_version: int | None = None,
        note: str | None = None,
        actor: str = OPERATOR,
    ) -> ProposalResult:
        result: ProposalResult = self._call(
            "propose", actor, operations=list(operations), base_version=base_version, note=note
        )
        return result

    def redeploy(self, version: int, *, note: str | None = None, actor: str = OPERATOR) -> ProposalResult:
        result: ProposalResult = self._call("redeploy", actor, version=version, note=note)
        return result

    def dry_run(
        self, proposal_id: str, *, actor: str = OPERATOR, progress: Progress | None = None
    ) -> DryRunReport:
        result: DryRunReport = self._call("dry_run", actor, progress, proposal_id=proposal_id)
        return result

    def deploy(
        self,
        proposal_id: str,
        *,
        actor: str = OPERATOR,
        progress: Progress | None = None,
    ) -> DeployResult:
        result: DeployResult = self._call("deploy", actor, progress, proposal_id=proposal_id)
        return result

    def rollback(
        self,
        *,
        to_version: int | None = None,
        actor: str = OPERATOR,
        progress: Progress | None = None,
    ) -> RollbackResult:
        result: RollbackResult = self._call("rollback", actor, progress, to_version=to_version)
        return result

    def finalize(self, *, before_version: int, actor: str = OPERATOR) -> FinalizeResult:
        result: FinalizeResult = self._call("finalize", actor, before_version=before_version)
        return result

    def run_action(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str = OPERATOR,
    ) -> ActionResult:
        result: ActionResult = self._call(
            "run_action", actor, name=name, args=args, idempotency_key=idempotency_key
        )
        return result

    def close(self) -> None:
        """Leave the owner (it keeps the database): the session, if one is held, ends."""
        connection, self._session_socket = self._session_socket, None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    # workflows and messages

    def start_workflow(
        self,
        workflow: str,
        args: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        actor: str = OPERATOR,
    ) -> RunInfo:
        result: RunInfo = self._call("start_workflow", actor, workflow=workflow, args=args, run_id=run_id)
        return result

    def get_run(self, run_id: str, *, actor: str = OPERATOR) -> RunDetail:
        result: RunDetail = self._call("get_run", actor, run_id=run_id)
        return result

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        actor: str = OPERATOR,
    ) -> list[RunInfo]:
        result: list[RunInfo] = self._call("list_runs", actor, workflow=workflow, status=status, limit=limit)
        return result

    def cancel_run(self, run_id: str, *, reason: str | None = None, actor: str = OPERATOR) -> RunInfo:
        result: RunInfo = self._call("cancel_run", actor, run_id=run_id, reason=reason)
        return result

    def signal_run(
        self, run_id: str, name: str, payload: dict[str, Any] | None = None, *, actor: str = OPERATOR
    ) -> RunInfo:
        result: RunInfo = self._call("signal_run", actor, run_id=run_id, name=name, payload=payload)
        return result

    def retry_run(self, run_id: str, *, actor: str = OPERATOR) -> RunInfo:
        result: RunInfo = self._call("retry_run", actor, run_id=run_id)
        return result

    def resolve_effect(
        self, effect_id: str, outcome: str, *, response: Any = None, actor: str = OPERATOR
    ) -> EffectInfo:
        result: EffectInfo = self._call(
            "resolve_effect", actor, effect_id=effect_id, outcome=outcome, response=response
        )
        return result

    def list_effects(
        self, *, state: str | None = None, run_id: str | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> list[EffectInfo]:
        result: list[EffectInfo] = self._call("list_effects", actor, state=state, run_id=run_id, limit=limit)
        return result

    def publish_message(
        self, topic: str, payload: dict[str, Any], *, message_id: str | None = None, actor: str = OPERATOR
    ) -> PublishResult:
        result: PublishResult = self._call(
            "publish_message", actor, topic=topic, payload=payload, message_id=message_id
        )
        return result

    def claim_messages(
        self,
        topic: str,
        *,
        consumer: str | None = None,
        limit: int = 10,
        lease_s: float = 30.0,
        actor: str = OPERATOR,
    ) -> ClaimResult:
        result: ClaimResult = self._call(
            "claim_messages", actor, topic=topic, consumer=consumer, limit=limit, lease_s=lease_s
        )
        return result

    def ack_messages(
        self, message_ids: Sequence[str], *, consumer: str | None = None, actor: str = OPERATOR
    ) -> AckResult:
        result: AckResult = self._call(
            "ack_messages", actor, message_ids=list(message_ids), consumer=consumer
        )
        return result

    def list_messages(
        self, *, topic: str | None = None, undelivered: bool = False, limit: int = 100, actor: str = OPERATOR
    ) -> list[MessageInfo]:
        result: list[MessageInfo] = self._call(
            "list_messages", actor, topic=topic, undelivered=undelivered, limit=limit
        )
        return result

    # control room

    def overview(self, *, actor: str = OPERATOR) -> Overview:
        result: Overview = self._call("overview", actor)
        return result

    def workflow_summary(self, *, actor: str = OPERATOR) -> WorkflowSummary:
        result: WorkflowSummary = self._call("workflow_summary", actor)
        return result

    def version_page(
        self, *, before: int | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> VersionPage:
        result: VersionPage = self._call("version_page", actor, before=before, limit=limit)
        return result

    def compare_versions(
        self, from_version: int, to_version: int, *, actor: str = OPERATOR
    ) -> VersionComparison:
        result: VersionComparison = self._call(
            "compare_versions", actor, from_version=from_version, to_version=to_version
        )
        return result

    def proposal_page(
        self,
        *,
        status: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        actor: str = OPERATOR,
    ) -> ProposalPage:
        result: ProposalPage = self._call(
            "proposal_page", actor, status=status, before_seq=before_seq, limit=limit
        )
        return result

    def proposal_detail(self, proposal_id: str, *, actor: str = OPERATOR) -> ProposalDetail:
        result: ProposalDetail = self._call("proposal_detail", actor, proposal_id=proposal_id)
        return result

    def approval_requests(self, *, limit: int = 100, actor: str = OPERATOR) -> list[ApprovalRequest]:
        result: list[ApprovalRequest] = self._call("approval_requests", actor, limit=limit)
        return result

    def approve_request(self, request_id: str, *, actor: str = OPERATOR) -> ApprovalRequest:
        result: ApprovalRequest = self._call("approve_request", actor, request_id=request_id)
        return result

    def refuse_request(self, request_id: str, *, reason: str = "", actor: str = OPERATOR) -> ApprovalRequest:
        result: ApprovalRequest = self._call("refuse_request", actor, request_id=request_id, reason=reason)
        return result

    def audit_page(
        self,
        *,
        agent: str | None = None,
        operation: str | None = None,
        outcome: str | None = None,
        code: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        since: str | None = None,
        until: str | None = None,
        search: str | None = None,
        hide_operator_reads: bool = False,
        actor: str = OPERATOR,
    ) -> AuditPage:
        result: AuditPage = self._call(
            "audit_page",
            actor,
            agent=agent,
            operation=operation,
            outcome=outcome,
            code=code,
            before_seq=before_seq,
            limit=limit,
            since=since,
            until=until,
            search=search,
            hide_operator_reads=hide_operator_reads,
        )
        return result

    def run_changes(self, since: str | None = None, *, actor: str = OPERATOR) -> RunChanges:
        result: RunChanges = self._call("run_changes", actor, since=since)
        return result

    def activity_head(self, *, actor: str = OPERATOR) -> ActivityHead:
        result: ActivityHead = self._call("activity_head", actor)
        return result

    def search_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        search: str | None = None,
        step: str | None = None,
        code: str | None = None,
        runs: Sequence[str] | None = None,
        before: Sequence[str] | None = None,
        limit: int = 50,
        failures: bool = True,
        actor: str = OPERATOR,
    ) -> RunPage:
        result: RunPage = self._call(
            "search_runs",
            actor,
            workflow=workflow,
            status=status,
            search=search,
            step=step,
            code=code,
            runs=list(runs) if runs is not None else None,
            before=list(before) if before else None,
            limit=limit,
            failures=failures,
        )
        return result

    def run_history(self, run_id: str, *, actor: str = OPERATOR) -> RunHistory:
        result: RunHistory = self._call("run_history", actor, run_id=run_id)
        return result

    def browse_data(
        self,
        table: str,
        *,
        filters: Sequence[DataFilter | Mapping[str, Any]] = (),
        sort: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
        facets: Sequence[str] = (),
        suggest: bool = True,
        actor: str = OPERATOR,
    ) -> DataPage:
        result: DataPage = self._call(
            "browse_data",
            actor,
            table=table,
            filters=[DataFilter.model_validate(f).model_dump() for f in filters],
            sort=sort,
            descending=descending,
            offset=offset,
            limit=limit,
            facets=list(facets),
            suggest=suggest,
        )
        return result

    def read_row(self, table: str, key: Mapping[str, str], *, actor: str = OPERATOR) -> RowDetail:
        result: RowDetail = self._call("read_row", actor, table=table, key=dict(key))
        return result

    def export_data(
        self,
        table: str,
        *,
        filters: Sequence[DataFilter | Mapping[str, Any]] = (),
        sort: str | None = None,
        descending: bool = False,
        actor: str = OPERATOR,
    ) -> QueryResult:
        result: QueryResult = self._call(
            "export_data",
            actor,
            table=table,
            filters=[DataFilter.model_validate(f).model_dump() for f in filters],
            sort=sort,
            descending=descending,
        )
        return result
