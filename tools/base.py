"""What every tool shares: the environment it runs in, its registration record, and the bridge
from async MCP handlers to the synchronous, thread-safe runtime.

A tool is an ``async`` function whose parameters are the typed arguments the agent sends (plus
``ctx``), whose return annotation is a pydantic model (so the tool has an ``outputSchema`` and
every call returns ``structuredContent``), and whose docstring is written for the model that
reads it. Its body makes exactly one ``Runtime`` call through ``call_runtime``. Runtime errors
(``ButtressError``) propagate unchanged; ``mcp_server`` turns them into tool error results.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations

if TYPE_CHECKING:
    from runtime.api import RuntimeAPI
    from runtime.boundary.policy import Policy

T = TypeVar("T")
logger = logging.getLogger(__name__)


@runtime_checkable
class LazyRuntime(Protocol):
    """A runtime that opens in the background (so a server answers ``initialize`` at once)."""

    def start(self) -> None:
        """Begin opening, if not begun yet; returns at once."""

    def get(self) -> RuntimeAPI:
        """The open runtime: starts opening if needed, waits for it, or raises why it failed."""
        ...


@runtime_checkable
class PolicySource(Protocol):
    """A policy that may change while the server runs (``runtime.boundary.policyfile.PolicyFile``)."""

    def current(self) -> Policy:
        """The policy in force now."""
        ...


class ToolEnv:
    """The runtime the tools act on, the operator's policy, and who is calling.

    Over stdio the caller is the agent the operator named when starting the server; over HTTP it
    is the agent whose bearer token authenticated the request. The policy is read at each request,
    so a server following its policy file applies a change to the next request.
    """

    def __init__(
        self,
        runtime: RuntimeAPI | LazyRuntime,
        *,
        agent: str,
        policy: Policy | PolicySource | None = None,
    ) -> None:
        self._runtime = runtime
        self.agent = agent
        self._policy = policy

    @property
    def policy(self) -> Policy | None:
        """The operator's policy in force (None: no policy, every tool is shown)."""
        source = self._policy
        return source.current() if isinstance(source, PolicySource) else source

    def caller(self) -> str:
        """The agent making the current request."""
        from mcp.server.auth.middleware.auth_context import get_access_token

        token = get_access_token()
        return token.client_id if token is not None and token.client_id else self.agent

    def ready(self) -> RuntimeAPI | None:
        """The runtime if it is already open, without waiting."""
        if isinstance(self._runtime, LazyRuntime):
            return self._runtime.ready() if hasattr(self._runtime, "ready") else None
        return self._runtime

    def warm_up(self) -> None:
        """Start opening a lazy runtime in the background (a no-op for an open one)."""
        if isinstance(self._runtime, LazyRuntime):
            self._runtime.start()

    async def runtime(self) -> RuntimeAPI:
        """The open runtime, waiting (off the event loop) for it to finish opening if needed."""
        if isinstance(self._runtime, LazyRuntime):
            return await anyio.to_thread.run_sync(self._runtime.get)
        return self._runtime


ToolContext = Context[ToolEnv, Any]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the server registers it: the function, a title and its MCP annotations.

    ``changes_version`` marks tools after which the server re-syncs per-action tools and
    announces ``tools/list_changed``. ``untrusted`` marks tools whose results carry values others
    wrote (rows, payloads, run arguments, providers' answers, other agents' calls): the server's text
    content fences them as data that must not be followed as instructions.
    """

    fn: Callable[..., Awaitable[Any]]
    title: str
    annotations: ToolAnnotations
    changes_version: bool = False
    untrusted: bool = False

    @property
    def name(self) -> str:
        """The tool's name: its function's name."""
        return self.fn.__name__

    @property
    def description(self) -> str:
        """The tool's description: its function's docstring."""
        return inspect.cleandoc(self.fn.__doc__ or "")


def reading(fn: Callable[..., Awaitable[Any]], title: str, *, untrusted: bool = False) -> ToolSpec:
    """A tool that only reads: read-only, idempotent, closed world."""
    hints = ToolAnnotations(
        title=title, read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )
    return ToolSpec(fn=fn, title=title, annotations=hints, untrusted=untrusted)


def changing(
    fn: Callable[..., Awaitable[Any]],
    title: str,
    *,
    destructive: bool,
    idempotent: bool,
    changes_version: bool = False,
    untrusted: bool = False,
) -> ToolSpec:
    """A tool that writes to the application's catalog or data (never outside it)."""
    hints = ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )
    return ToolSpec(
        fn=fn, title=title, annotations=hints, changes_version=changes_version, untrusted=untrusted
    )


async def call_runtime(ctx: ToolContext, call: Callable[[RuntimeAPI, str], T]) -> T:
    """Run ``call(runtime, agent)`` in a worker thread: the runtime is synchronous and thread-safe.

    Each tool passes a one-line lambda naming the one runtime method it projects, with the agent's
    name as ``actor`` where the method audits.
    """
    env = ctx.request_context.lifespan_context
    runtime = await env.runtime()
    return await anyio.to_thread.run_sync(call, runtime, env.caller())


def progress_reporter(ctx: ToolContext) -> Progress:
    """A runtime ``progress(done, total, message)`` callback that reports MCP progress.

    The runtime calls it from the worker thread; the report hops back to the event loop. Progress
    is best effort: a client that went away must never abort a deploy, so failures are logged.
    """

    def report(done: int, total: int, message: str) -> None:
        try:
            anyio.from_thread.run(functools.partial(ctx.report_progress, done, total, message))
        except Exception:
            logger.debug("progress report dropped", exc_info=True)

    return report
