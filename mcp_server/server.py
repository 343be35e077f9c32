"""The MCP server: registers the tools of ``tools.registry.REGISTRY``, the resources and the prompt, maps every
tool failure to one structured error shape, and announces tool list changes after each version
change. It adapts; the runtime decides.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from mcp.server import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.models import InitializationOptions
from mcp.types import CallToolResult, InputRequiredResult
from mcp.types import Tool as MCPTool

from mcp_server import errors, listing
from runtime.errors import ButtressError, Code
from tools.base import LazyRuntime, ToolContext, ToolEnv, ToolSpec

if TYPE_CHECKING:
    from runtime.boundary.policy import Policy
    from runtime.runtime import Runtime

logger = logging.getLogger(__name__)
T = TypeVar("T")

ACTION_TOOL_PREFIX = "app_"

INSTRUCTIONS = """\
Buttress holds one application (entities, invariants, views, actions) in an embedded database, with
versions and an audit log. Start with describe_app. Change the application only through
propose_change (or define_entity) -> dry_run -> deploy; read the hazards and the dry-run report
before deploying, verify with query, and rollback if the result is wrong. Errors carry a stable
code, a message and a hint saying what to do next. The safe_change prompt walks through it."""

SAFE_CHANGE = """\
Make this change to the application safely: {goal}

1. Call describe_app. Note `version` (your base_version), the entities and fields involved, and
   any pending proposals or drift (drift blocks deploys: stop and tell the operator).
2. Call propose_change with typed operations and base_version set to that version (define_entity
   for a new entity). On spec.invalid, fix the operation named in details.path/problems.
3. Read the proposal's steps and hazards. data.drop_field and data.drop_entity remove data (it is
   retained until the operator finalizes); compat.rename_* breaks readers using the old name.
4. Call dry_run(proposal_id). Read the report: each step's rows_affected and losses, the checks,
   and, if passed is false, report.error with its code, rows and hint. Fix and propose again.
5. Only when passed is true, call deploy(proposal_id). On plan.stale_base someone deployed first:
   go back to step 1.
6. Verify with query (e.g. count rows, select a sample) that the data has the shape you expect.
7. If it is wrong, call rollback (it restores dropped data); on rollback.not_lossless, fix the rows
   named in details.rows first. Report the final version number."""


class ButtressServer(MCPServer[ToolEnv]):
    """An MCPServer whose tool failures are structured Buttress errors, whose version-changing tools
    announce ``tools/list_changed`` in both protocol eras, and which can answer ``tools/list`` from a
    stored listing while it loads the tool modules on first use (see ``mcp_server.listing``)."""

    def __init__(
        self,
        env: ToolEnv,
        *,
        extra_tools: tuple[ToolSpec, ...] = (),
        listing_dir: Path | None = None,
        log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING",
        auth: dict[str, Any] | None = None,
    ) -> None:
        @asynccontextmanager
        async def lifespan(_: MCPServer[ToolEnv]) -> AsyncIterator[ToolEnv]:
            yield env

        super().__init__(
            "buttress",
            title="Buttress",
            version=_version(),
            instructions=INSTRUCTIONS,
            lifespan=lifespan,
            log_level=log_level,
            **(auth or {}),
        )
        self.env = env
        self.tool_names: set[str] = set()
        self._actions: dict[str, Any] = {}
        self._extra_names = {t.name for t in extra_tools}
        self._extra_tools = extra_tools
        self._version_changing: set[str] = set()
        self._registering: anyio.Lock | None = None
        self._listing_dir = listing_dir
        self._listing_key = listing.fingerprint(t.name for t in extra_tools) if listing_dir else ""
        self._stored_listing = listing.load(listing_dir, self._listing_key) if listing_dir else None
        if self._stored_listing is None:
            self.register_all(_registry())
        _advertise_list_changed(self)

    @property
    def registered(self) -> bool:
        """True once the tool modules are loaded and registered."""
        return bool(self.tool_names)

    def register(self, spec: ToolSpec) -> None:
        """Register one tool (typed input, output model, annotations, docstring as description)."""
        self.add_tool(
            spec.fn,
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=spec.annotations,
            structured_output=True,
        )
        self.tool_names.add(spec.name)
        if spec.changes_version:
            self._version_changing.add(spec.name)

    def register_all(self, registry: tuple[ToolSpec, ...]) -> None:
        """Register the registry and the extra tools."""
        for spec in (*registry, *self._extra_tools):
            self.register(spec)

    async def ensure_registered(self) -> None:
        """Load and register the tools if only the stored listing has been served so far."""
        if self.registered:
            return
        if self._registering is None:
            self._registering = anyio.Lock()
        async with self._registering:
            if not self.registered:
                self.register_all(await anyio.to_thread.run_sync(_registry))

    async def list_tools(self) -> list[MCPTool]:
        """The tools this caller may use: from the stored listing until the tool modules are loaded,
        plus one ``app_<name>`` tool per deployed action once the database is open."""
        self.env.warm_up()  # a client that lists tools calls one next: open the database meanwhile
        runtime = self.env.ready()
        if runtime is not None and (runtime.current[1].actions or self._actions):
            await self.ensure_registered()
            await self.sync_action_tools()
        if not self.registered and self._stored_listing is not None:
            return self._visible(self._stored_listing)
        tools = [_admitting_errors(tool) for tool in await super().list_tools()]
        if self._listing_dir is not None and self._stored_listing is None:
            self._stored_listing = [t for t in tools if not t.name.startswith(ACTION_TOOL_PREFIX)]
            listing.save(self._listing_dir, self._listing_key, self._stored_listing)
        return self._visible(tools)

    def _visible(self, tools: list[MCPTool]) -> list[MCPTool]:
        policy = self.env.policy
        if policy is None:
            return tools
        allowed = set(policy.tools_for(self.env.caller(), [t.name for t in tools]))
        return [t for t in tools if t.name in allowed or t.name in self._extra_names]

    async def _denied(self, name: str, arguments: dict[str, Any]) -> CallToolResult | None:
        """A policy.denied result (audited) when the caller may not use this tool, else None."""
        policy = self.env.policy
        if policy is None or name in self._extra_names:
            return None
        caller = self.env.caller()
        if policy.tools_for(caller, [name]):
            return None
        from runtime.errors import PolicyError

        error = PolicyError(
            Code.POLICY_DENIED,
            f"agent {caller!r} may not call {name}",
            hint="This is the operator's decision (buttress.toml); ask them rather than retrying.",
            details={"agent": caller, "tool": name},
        )
        runtime = await self.env.runtime()
        safe = {k: v for k, v in arguments.items() if isinstance(v, str | int | float | bool | type(None))}
        await anyio.to_thread.run_sync(lambda: runtime.record_refusal(name, caller, safe, error))
        return errors.buttress_error_result(error)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: ToolContext | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call a tool; every failure comes back as a structured error result, never as Python text."""
        await self.ensure_registered()
        if name.startswith(ACTION_TOOL_PREFIX) and name not in self.tool_names:
            await self.sync_action_tools()
        denied = await self._denied(name, arguments)
        if denied is not None:
            return denied
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as error:
            return errors.tool_error_result(name, error, known_tool=name in self.tool_names)
        if name in self._version_changing and isinstance(result, CallToolResult) and not result.is_error:
            await self.after_version_change(context)
        return result

    async def after_version_change(self, ctx: ToolContext | None) -> None:
        """Re-sync the per-action tools and announce the tool list change to both protocol eras."""
        await self.sync_action_tools()
        if ctx is None:
            return
        try:
            await ctx.session.send_tool_list_changed()  # handshake-era clients (2025-11-25 and older)
        except Exception:
            logger.debug("legacy tools/list_changed not delivered", exc_info=True)
        await ctx.notify_tools_changed()  # 2026-07-28 clients listening on subscriptions/listen

    async def sync_action_tools(self) -> bool:
        """Make the ``app_<name>`` tools match the current version's actions; True if the set changed.

        A replaced action (new parameters) gets a freshly derived tool.
        """
        from tools.logic import action_tool

        runtime = await self.env.runtime()
        _, spec = runtime.current
        wanted = {ACTION_TOOL_PREFIX + action.name: action for action in spec.actions}
        present = {name for name in self.tool_names if name.startswith(ACTION_TOOL_PREFIX)}
        stale = {name for name in present if name not in wanted or self._actions.get(name) != wanted[name]}
        for name in stale:
            self.remove_tool(name)
            self.tool_names.discard(name)
            self._actions.pop(name, None)
        added = [name for name in wanted if name not in self.tool_names]
        for name in added:
            self.register(action_tool(wanted[name]))
            self._actions[name] = wanted[name]
        return bool(stale or added)


def build_server(
    runtime: Runtime | LazyRuntime,
    *,
    agent: str,
    extra_tools: tuple[ToolSpec, ...] = (),
    listing_dir: Path | None = None,
    policy: Policy | None = None,
    require_tokens: bool = False,
) -> ButtressServer:
    """The Buttress MCP server over ``runtime`` (open, or opening in the background), acting as ``agent``.

    With ``listing_dir``, the server answers ``tools/list`` from the listing stored there (written on
    the first start) and loads the tool modules on the first tool call. With ``policy``, each caller
    sees and may call only the tools its role allows. ``require_tokens`` (HTTP) makes every request
    carry a bearer token whose sha256 the policy maps to an agent; others get HTTP 401.
    """
    env = ToolEnv(runtime, agent=agent, policy=policy)
    auth = _token_auth(policy) if require_tokens else None
    server = ButtressServer(env, extra_tools=extra_tools, listing_dir=listing_dir, auth=auth)
    _add_resources(server, env)
    server.prompt(name="safe_change", title="Change the application safely")(safe_change)
    return server


class PolicyTokenVerifier:
    """Bearer tokens checked against the sha256 hashes in the policy (a TokenVerifier)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        agent = self.policy.agent_for_token(token)
        if agent is None:
            return None  # HTTP 401
        return AccessToken(token=token, client_id=agent, scopes=[])


def _token_auth(policy: Policy | None) -> dict[str, Any]:
    from mcp.server.auth.settings import AuthSettings

    from runtime.boundary.policy import Policy as PolicyModel

    return {
        "token_verifier": PolicyTokenVerifier(policy or PolicyModel(open_to_any_agent=False, agents={})),
        "auth": AuthSettings(issuer_url="https://buttress.invalid", resource_server_url=None),
    }


def store_listing(listing_dir: Path, extra_tools: tuple[ToolSpec, ...] = ()) -> None:
    """Write the tool listing for the current code into ``listing_dir`` (``buttress init`` does)."""
    server = build_server(_Unopened(), agent="", extra_tools=extra_tools, listing_dir=listing_dir)
    anyio.run(server.list_tools)


def _admitting_errors(tool: MCPTool) -> MCPTool:
    if tool.output_schema is None:
        return tool
    return tool.model_copy(update={"output_schema": errors.with_error_alternative(tool.output_schema)})


class _Unopened:
    """A runtime that is never opened: enough to build the server and list its tools."""

    def start(self) -> None:
        pass

    def get(self) -> Runtime:
        raise RuntimeError("listing the tools does not open a runtime")


def _registry() -> tuple[ToolSpec, ...]:
    from tools.registry import REGISTRY

    return REGISTRY


def safe_change(goal: str = "the change you were asked to make") -> str:
    """A step-by-step walk through a safe change: describe, propose, dry-run, read, deploy, verify, roll back."""
    return SAFE_CHANGE.format(goal=goal)


# ------------------------------------------------------------------------------------------ resources


def _add_resources(server: ButtressServer, env: ToolEnv) -> None:
    @server.resource(
        "buttress://spec/current",
        name="current_spec",
        title="Current spec",
        description="The current version's number, hash and spec (entities, invariants, views, actions).",
        mime_type="application/json",
    )
    async def current_spec() -> str:
        runtime = await env.runtime()
        description = await _read(runtime.describe)
        return _spec_json(description.version, description.spec.model_dump(mode="json"), description.hash)

    @server.resource(
        "buttress://versions/{number}",
        name="version_spec",
        title="Spec of a version",
        description="The spec deployed as version {number} (see list_versions).",
        mime_type="application/json",
    )
    async def version_spec(number: str) -> str:
        if not number.isdigit():
            raise ResourceNotFoundError(
                f"not_found: no version named {number!r} — use a number from list_versions"
            )
        runtime = await env.runtime()
        spec = await _read(functools.partial(runtime.version_spec, int(number)))
        return _spec_json(int(number), spec.model_dump(mode="json"), spec.hash())

    @server.resource(
        "buttress://audit/recent",
        name="recent_audit",
        title="Recent audit entries",
        description="The 50 most recent audit log entries, oldest first.",
        mime_type="application/json",
    )
    async def recent_audit() -> str:
        runtime = await env.runtime()
        entries = await _read(functools.partial(runtime.read_audit, limit=50))
        return json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2)


async def _read(call: Callable[[], T]) -> T:
    """Run a runtime read in a worker thread; runtime errors become resource errors."""
    try:
        return await anyio.to_thread.run_sync(call)
    except ButtressError as error:
        text = f"{error.code}: {error.message} — {error.hint}"
        if error.code == Code.NOT_FOUND:
            raise ResourceNotFoundError(text) from None
        raise ResourceError(text) from None


def _spec_json(version: int, spec: dict[str, Any], spec_hash: str) -> str:
    return json.dumps({"version": version, "hash": spec_hash, "spec": spec}, indent=2)


# ------------------------------------------------------------------------------------------ plumbing


def _advertise_list_changed(server: MCPServer[Any]) -> None:
    """Advertise ``listChanged`` to handshake-era clients too (MCPServer leaves it false for them).

    There is no public setting for it in mcp 2.3; every transport asks the low-level server's
    ``create_initialization_options()`` without arguments, so defaulting its argument is enough.
    """
    low = server._lowlevel_server
    original = low.create_initialization_options

    def with_list_changed(
        notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(
            tools_changed=True, resources_changed=True, prompts_changed=True
        )
        return original(options, *args, **kwargs)

    low.create_initialization_options = with_list_changed  # type: ignore[method-assign]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("buttress")
    except PackageNotFoundError:
        return "0.0.0"
