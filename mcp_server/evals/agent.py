"""The scripted-agent API: what a scenario's ``agents/<name>.py`` drives the server with.

A scripted agent is a Python module with one coroutine::

    from mcp_server.evals.agent import Agent

    async def run(agent: Agent) -> None:
        app = await agent.ok("describe_app")
        version = await agent.ship([{"op": "add_field", ...}])          # propose → dry-run → deploy
        await agent.attempt("edit the audit", "query", sql="delete from _buttress.audit",
                            refused=["sql.forbidden"])                    # must be refused

It talks to a real ``buttress serve`` through the MCP SDK's ``Client`` (stdio or HTTP, as the run
says; or, in the test suite, the server object in this process over an in-memory transport). ``agent.session()`` opens another connection for concurrent work. Python rather than a
declarative list of steps, because the stories need loops, branches on error codes and real
concurrency; the runner loads the file by path, so a scenario stays one self-contained directory.

**Faults and retries.** When the server dies under a call (an injected kill, or a real crash) the
session reconnects — the server is restarted — and sends the same call again when that is safe by
itself: read-only or idempotent tools (by their MCP annotations), calls carrying an
``idempotency_key``, ``start_workflow`` with a ``run_id`` and ``publish`` with a ``message_id``
(their idempotency keys; without one a resend starts a second run or sends a second message),
``propose_change`` and ``define_entity`` (a lost proposal is inert), and
``deploy`` (a retry that answers ``deploy.already_applied`` means the first one committed: the
result is rebuilt from ``list_versions``). An attached server whose owner went away answers
``engine.owner_gone``; that call is sent again under the same rule. Any other call raises
``Interrupted``: the script must look at the state and decide, as a careful agent would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from mcp_server.evals.faults import FaultPlan, Injector, When
from runtime.workflows.status import TERMINAL, RunStatus

if TYPE_CHECKING:
    from mcp.types import CallToolResult

    from mcp_server.evals.servers import HttpServer, InProcessServer, StdioServers

MAX_RECONNECTS = 5
CALL_TIMEOUT_S = 300.0
RETRY_BY_NAME = frozenset({"propose_change", "define_entity", "deploy"})
RUN_SETTLED = TERMINAL | {RunStatus.BLOCKED}
"""Workflow run statuses that do not change without someone acting."""
RUN_POLL_S = 0.1
RETRY_WITH_KEY = {"start_workflow": "run_id", "publish": "message_id"}
"""Tools whose resend is safe only when the call carries this argument (their idempotency key)."""


class ScriptFailed(Exception):
    """A scripted agent met something it did not expect; the run records the message."""


class Interrupted(ScriptFailed):
    """The server died under a call that is not safe to send again without looking first."""

    def __init__(self, tool: str, arguments: dict[str, Any], why: str = "the connection was lost") -> None:
        super().__init__(
            f"{why} during {tool}; it is not retried by itself (no idempotency key): "
            "look at the state and decide"
        )
        self.tool = tool
        self.arguments = arguments


@dataclass(frozen=True)
class Result:
    """One tool call's answer: ``data`` (its structured content) or ``error`` (code, message, hint,
    details). ``recovered`` says it came after a reconnect."""

    tool: str
    arguments: dict[str, Any]
    ok: bool
    data: dict[str, Any]
    error: dict[str, Any] | None = None
    recovered: bool = False

    @property
    def code(self) -> str | None:
        """The error code, or None when the call succeeded."""
        return None if self.error is None else str(self.error.get("code"))


@dataclass(frozen=True)
class Attempt:
    """An unsafe action an adversarial script tried, and whether the server refused it."""

    label: str
    tool: str
    refused: bool
    code: str | None
    expected: tuple[str, ...]
    message: str


@dataclass
class Link:
    """What the sessions of one scripted run share: how to reach the server, the fault plan, the
    step counter, the operator, and the attempts made."""

    servers: HttpServer | StdioServers | InProcessServer
    plan: FaultPlan
    approve: Callable[[str], Awaitable[bool]]
    tasks: anyio.abc.TaskGroup
    """Where the sessions' connections live (see ``_Connection``)."""
    token: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)
    reconnects: int = 0
    injector: Injector = field(init=False)

    def __post_init__(self) -> None:
        self.injector = Injector(self.plan, self.servers.kill)

    def next_step(self, tool: str) -> tuple[int, int]:
        return self.injector.next_step(tool)

    async def fault(self, step: int, tool: str, occurrence: int, when: When) -> bool:
        """Kill the server if a fault is due now; True when one fired."""
        return await self.injector.fault(step, tool, occurrence, when)

    async def open(self, stack: AsyncExitStack) -> Client:
        """A connected SDK client (the server started or restarted if needed)."""
        from mcp_server.evals.servers import HttpServer

        if isinstance(self.servers, HttpServer):
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            await self.servers.ensure_running()
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=httpx2.Timeout(CALL_TIMEOUT_S, connect=10.0),
                )
            )
            transport: Any = streamable_http_client(self.servers.url, http_client=http)
        else:
            transport = self.servers.transport()
        return await stack.enter_async_context(Client(transport, read_timeout_seconds=CALL_TIMEOUT_S))


def _connection_lost(error: BaseException) -> bool:
    """Whether a failed call means the server or the connection went away (not a tool error)."""
    if isinstance(error, MCPError):
        return error.code == CONNECTION_CLOSED
    if isinstance(error, BaseExceptionGroup):
        return all(_connection_lost(e) for e in error.exceptions)
    return isinstance(
        error, OSError | anyio.BrokenResourceError | anyio.ClosedResourceError | anyio.EndOfStream
    ) or (type(error).__module__.startswith(("httpx", "httpcore")))


class _Connection:
    """One live MCP client, owned by a task of its own: anyio requires a context to be left by the
    task that entered it, and the sessions of a script are used from many tasks."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.closing = anyio.Event()
        self.closed = anyio.Event()


def _owner_gone(answer: CallToolResult) -> bool:
    """An attached server whose owner died answers ``engine.owner_gone``: the call may or may not
    have reached the database, as when the connection itself is lost."""
    if not answer.is_error:
        return False
    error = (answer.structured_content or {}).get("error")
    return isinstance(error, dict) and error.get("code") == "engine.owner_gone"


class Session:
    """One MCP connection of the agent (connected on first use, reconnected after a crash)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._connection: _Connection | None = None
        self._lock = anyio.Lock()

    async def _connected(self) -> Client:
        """The live client, connecting first if needed (one connection, however many tasks call)."""
        async with self._lock:
            if self._connection is None or self._connection.client is None:
                connection = _Connection()
                await self._link.tasks.start(self._hold, connection)
                self._connection = connection
            assert self._connection.client is not None
            return self._connection.client

    async def _hold(self, connection: _Connection, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Open the client, hand it over, keep it until asked to close; a connection that dies
        meanwhile is closed quietly (the call that noticed reconnects)."""
        started = False
        try:
            async with AsyncExitStack() as stack:
                client = await self._link.open(stack)
                if not self._link.annotations:
                    listed = await client.list_tools()
                    for tool in listed.tools:
                        hints = tool.annotations.model_dump(exclude_none=True) if tool.annotations else {}
                        self._link.annotations[tool.name] = hints
                connection.client = client
                task_status.started()
                started = True
                await connection.closing.wait()
        except Exception:
            if not started:
                raise
        finally:
            connection.closed.set()

    async def _drop(self, client: Client | None) -> None:
        """Close a dead connection (its server is gone or going), unless another task has already
        replaced it."""
        async with self._lock:
            connection = self._connection
            if connection is None or client is None or connection.client is not client:
                return
            self._connection = None
        connection.closing.set()
        with anyio.CancelScope(shield=True):
            await connection.closed.wait()

    async def close(self) -> None:
        """Close the connection (a stdio server exits with it)."""
        connection = self._connection
        if connection is not None:
            await self._drop(connection.client)

    def _retry_safe(self, tool: str, arguments: dict[str, Any]) -> bool:
        if tool in RETRY_WITH_KEY:
            # idempotent only with the caller's key: without one, a resend starts another run
            return bool(arguments.get(RETRY_WITH_KEY[tool]))
        hints = self._link.annotations.get(tool, {})
        return bool(
            hints.get("read_only_hint")
            or hints.get("idempotent_hint")
            or arguments.get("idempotency_key")
            or tool in RETRY_BY_NAME
        )

    # ------------------------------------------------------------------------------------ calling

    async def call(self, tool: str, args: dict[str, Any] | None = None, /, **kwargs: Any) -> Result:
        """Call a tool; a tool error is a ``Result`` with ``ok`` false, never an exception."""
        arguments = {**(args or {}), **kwargs}
        step, occurrence = self._link.next_step(tool)
        await self._link.fault(step, tool, occurrence, "before")
        reconnects = 0
        while True:
            client: Client | None = None
            why = "the connection was lost"
            try:
                client = await self._connected()
                answer = await client.call_tool(tool, arguments)
                lost = await self._link.fault(step, tool, occurrence, "after")
            except Exception as error:
                if not _connection_lost(error):
                    raise
                lost = True
            if not lost and _owner_gone(answer):
                # this server lives and its next call reaches the new owner
                lost, client, why = True, None, "the server's owner went away (engine.owner_gone)"
            if not lost:
                return await self._result(tool, arguments, answer, recovered=reconnects > 0)
            await self._drop(client)
            reconnects += 1
            self._link.reconnects += 1
            if reconnects > MAX_RECONNECTS:
                raise ScriptFailed(f"the server could not be reached for {tool} after {MAX_RECONNECTS} tries")
            if not self._retry_safe(tool, arguments):
                raise Interrupted(tool, arguments, why)

    async def _result(
        self, tool: str, arguments: dict[str, Any], answer: CallToolResult, *, recovered: bool
    ) -> Result:
        content = dict(answer.structured_content or {})
        if not answer.is_error:
            return Result(tool, arguments, True, content, recovered=recovered)
        error = content.get("error")
        if not isinstance(error, dict):
            text = " ".join(getattr(block, "text", "") for block in answer.content)
            error = {"code": "internal", "message": text, "hint": "", "details": {}}
        if recovered and tool == "deploy" and error.get("code") == "deploy.already_applied":
            return await self._deployed(arguments)
        return Result(tool, arguments, False, {}, error=error, recovered=recovered)

    async def _deployed(self, arguments: dict[str, Any]) -> Result:
        """A deploy whose answer was lost, then answered ``deploy.already_applied``: it committed."""
        versions = await self.ok("list_versions")
        found = [v for v in versions["versions"] if v.get("proposal_id") == arguments.get("proposal_id")]
        if not found:
            raise ScriptFailed(f"deploy of {arguments.get('proposal_id')} is applied but no version names it")
        version = found[-1]
        data = {
            "version": version["number"],
            "previous_version": version["parent"],
            "proposal_id": version["proposal_id"],
        }
        return Result("deploy", arguments, True, data, recovered=True)

    async def ok(self, tool: str, args: dict[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured content. ``ScriptFailed`` otherwise."""
        result = await self.call(tool, args, **kwargs)
        if not result.ok:
            error = result.error or {}
            raise ScriptFailed(f"{tool} failed: [{error.get('code')}] {error.get('message')}")
        return result.data

    async def attempt(
        self,
        label: str,
        tool: str,
        args: dict[str, Any] | None = None,
        /,
        *,
        refused: Iterable[str] = (),
        **kwargs: Any,
    ) -> Result:
        """Try something unsafe; it counts as refused when the call fails (with one of ``refused``'s
        codes, when given). The scorecard lists every attempt."""
        result = await self.call(tool, args, **kwargs)
        self.record(label, result, refused=refused)
        return result

    def record(self, label: str, result: Result, *, refused: Iterable[str] = ()) -> Attempt:
        """Count ``result`` as an attempt (for unsafe paths that take more than one call, such as
        a deploy that first waits for the operator)."""
        expected = tuple(refused)
        was_refused = not result.ok and (not expected or result.code in expected)
        if result.ok:
            message = "it succeeded: the server did not refuse it"
        elif was_refused:
            message = f"refused with {result.code}"
        else:
            message = f"refused with {result.code}, expected one of {', '.join(expected)}"
        attempt = Attempt(label, result.tool, was_refused, result.code, expected, message)
        self._link.attempts.append(attempt)
        return attempt

    # ------------------------------------------------------------------------------ the safe path

    async def propose(self, operations: list[dict[str, Any]], *, note: str | None = None) -> dict[str, Any]:
        """``propose_change`` on the version ``describe_app`` shows now; the proposal."""
        app = await self.ok("describe_app")
        return await self.ok("propose_change", operations=operations, base_version=app["version"], note=note)

    async def _approved(self, tool: str, **arguments: Any) -> Result:
        """Call ``deploy`` or ``rollback``; on ``deploy.needs_approval`` ask the operator and, once
        approved, call again. The last answer, refused or not."""
        result = await self.call(tool, **arguments)
        if result.code == "deploy.needs_approval":
            request = str((result.error or {}).get("details", {}).get("approval_request", ""))
            if await self._link.approve(request):
                result = await self.call(tool, **arguments)
        return result

    async def deploy_result(self, proposal_id: str) -> Result:
        """Deploy a dry-run proposal; on ``deploy.needs_approval`` ask the operator and, once
        approved, deploy again. The last answer, refused or not."""
        return await self._approved("deploy", proposal_id=proposal_id)

    async def rollback_result(self, to_version: int | None = None) -> Result:
        """Roll back (to the version before the current one, by default); on
        ``deploy.needs_approval`` (the rollback drops data present now) ask the operator and, once
        approved, roll back again. The last answer, refused or not."""
        arguments = {} if to_version is None else {"to_version": to_version}
        return await self._approved("rollback", **arguments)

    async def rollback(self, to_version: int | None = None) -> dict[str, Any]:
        """``rollback_result`` that must succeed; its data (``version``, ``restored_version``,
        ``steps``). ``ScriptFailed`` otherwise."""
        result = await self.rollback_result(to_version)
        if not result.ok:
            error = result.error or {}
            raise ScriptFailed(f"rollback failed: [{error.get('code')}] {error.get('message')}")
        return result.data

    async def deploy(self, proposal_id: str) -> int:
        """``deploy_result`` that must succeed; the new version number (``ScriptFailed`` otherwise)."""
        result = await self.deploy_result(proposal_id)
        if not result.ok:
            error = result.error or {}
            raise ScriptFailed(
                f"deploy of {proposal_id} failed: [{error.get('code')}] {error.get('message')}"
            )
        return int(result.data["version"])

    async def ship(self, operations: list[dict[str, Any]], *, note: str | None = None) -> int:
        """Propose on the current version, dry-run (which must pass), deploy; the new version."""
        proposal = await self.propose(operations, note=note)
        report = await self.ok("dry_run", proposal_id=proposal["proposal_id"])
        if not report["passed"]:
            error = report["report"].get("error") or {}
            raise ScriptFailed(
                f"dry-run of {proposal['proposal_id']} failed: [{error.get('code')}] {error.get('message')}"
            )
        return await self.deploy(str(proposal["proposal_id"]))

    async def follow(
        self, run_id: str, *, until: Iterable[str] = RUN_SETTLED, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Poll ``get_run`` (read-only: resent after a crash) until the workflow run's status is one
        of ``until`` (by default: finished, or blocked on the operator); the run's detail.
        ``ScriptFailed`` when that takes longer than ``timeout_s``."""
        wanted = frozenset(until)
        with anyio.move_on_after(timeout_s):
            while True:
                run = await self.ok("get_run", run_id=run_id)
                if run["status"] in wanted:
                    return run
                await anyio.sleep(RUN_POLL_S)
        raise ScriptFailed(f"run {run_id} is still {run['status']} after {timeout_s:g}s")

    async def rows(self, sql: str, **params: Any) -> list[list[Any]]:
        """The rows of one read-only ``query``."""
        result = await self.ok("query", sql=sql, params=params or None)
        return list(result["rows"])


class Agent(Session):
    """The scripted agent's first session, with the task it was given."""

    def __init__(self, link: Link, *, scenario: str, prompt: str, run: int) -> None:
        super().__init__(link)
        self.scenario = scenario
        self.prompt = prompt
        self.run = run
        self._sessions: list[Session] = []

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """Another connection to the server (over stdio, another ``buttress serve`` process
        attached to the same project), for concurrent work."""
        other = Session(self._link)
        self._sessions.append(other)
        try:
            yield other
        finally:
            await other.close()

    async def close_all(self) -> None:
        """Close this session and every other one the script opened (the runner calls it)."""
        for session in [self, *self._sessions]:
            await session.close()

    @staticmethod
    def expect(condition: bool, message: str) -> None:
        """Stop the script with ``message`` unless ``condition`` holds."""
        if not condition:
            raise ScriptFailed(message)


async def null_agent(agent: Agent) -> None:
    """The built-in null agent: it does nothing at all."""
    del agent
