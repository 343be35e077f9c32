"""What MCP offers beyond tools: resource change notifications, completions, the logging level, and
URL elicitation of an approval.

*Change notifications* reach a client through whichever mechanism its protocol revision has: a
2025-11-25 client calls ``resources/subscribe`` for a URI and hears ``notifications/resources/updated``
on its session; a 2026-07-28 client opens ``subscriptions/listen`` for it and hears it on that stream
(the server's subscription bus). ``buttress://spec/current`` changes with every deploy and rollback,
whoever made it (this server, another attached to the project, the CLI); ``buttress://runs/{run_id}``
changes whenever the run's row does, which the server learns by polling ``Runtime.run_changes`` while
anyone may be listening.

*Completions* complete the arguments of the resource templates: version numbers, proposal ids, run
ids, and entity, action, workflow and topic names.

*Logging* (``logging/setLevel``) is served to the revisions that still have it; 2026-07-28 deprecates it.

(Approval by URL elicitation lives with the tools that wait for one: ``tools/approval.py``.)
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
from mcp.server.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp.types import (
    METHOD_NOT_FOUND,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmptyResult,
    PromptReference,
    ResourceTemplateReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

from runtime.api import OPERATOR

if TYPE_CHECKING:
    from mcp_server.server import ButtressServer

logger = logging.getLogger(__name__)

SPEC_URI: Final = "buttress://spec/current"
RUN_PREFIX: Final = "buttress://runs/"
POLL_S: Final = 0.5
MODERN: Final = frozenset({"2026-07-28"})
MAX_COMPLETIONS: Final = 100


class Notices:
    """The server's listeners, by revision, and what it tells them."""

    def __init__(self, server: ButtressServer) -> None:
        self.server = server
        self._sessions: dict[int, tuple[Any, set[str]]] = {}
        """id(connection) -> (the connection, the URIs it subscribed to): 2025-11-25 clients."""
        self.levels: dict[int, str] = {}
        self._mark: str | None = None

    # ------------------------------------------------------------------------------ handlers

    def install(self) -> None:
        low = self.server._lowlevel_server
        low.add_request_handler("resources/subscribe", SubscribeRequestParams, self.on_subscribe)
        low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, self.on_unsubscribe)
        low.add_request_handler("logging/setLevel", SetLevelRequestParams, self.on_set_level)
        self.server.completion()(self.complete)  # type: ignore[no-untyped-call]

    async def on_subscribe(self, ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        """Subscribe the caller's connection to a URI; only callers that may read (a refusal is
        audited and answered as the tools' errors are)."""
        await self.server.authorize_read(
            "resources/subscribe", {"uri": str(params.uri)}, "subscribe to resources"
        )
        connection = _connection(ctx)
        entry = self._sessions.setdefault(id(connection), (connection, set()))
        entry[1].add(str(params.uri))
        return EmptyResult()

    async def on_unsubscribe(self, ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        key = id(_connection(ctx))
        entry = self._sessions.get(key)
        if entry is not None:
            entry[1].discard(str(params.uri))
            if not entry[1]:
                del self._sessions[key]
        return EmptyResult()

    async def on_set_level(self, ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        if ctx.protocol_version in MODERN:
            raise MCPError(
                code=METHOD_NOT_FOUND,
                message="logging/setLevel is not part of protocol 2026-07-28 (logging is deprecated there)",
            )
        self.levels[id(_connection(ctx))] = str(params.level)
        return EmptyResult()

    # ------------------------------------------------------------------------------- notifying

    async def updated(self, uri: str) -> None:
        """Tell every listener of ``uri`` that it changed, in both revisions."""
        await self.server._subscriptions.publish(ResourceUpdated(uri=uri))
        for key, (session, uris) in list(self._sessions.items()):
            if uri not in uris:
                continue
            try:
                await session.send_resource_updated(uri)
            except Exception:
                logger.debug("resource update not delivered; forgetting the session", exc_info=True)
                self._sessions.pop(key, None)

    def _listening_to_runs(self) -> bool:
        if any(uri.startswith(RUN_PREFIX) for _, uris in self._sessions.values() for uri in uris):
            return True
        listeners = getattr(self.server._subscriptions, "_listeners", None)
        return bool(listeners)

    async def watch_runs(self) -> None:
        """While anyone listens, poll for runs that changed and tell their listeners (the first poll
        only takes the mark to start from; nobody listening, nothing is read).

        The poll is the server's own, for its subscribers (as the operator: over HTTP there is no one
        agent to poll as); who may hear of a run was decided when they subscribed, and what a
        notification carries is the URI alone: reading the run is a call of its own, authorized and
        audited."""
        while True:
            await anyio.sleep(POLL_S if self._mark is not None else 0.05)
            if not self._listening_to_runs():
                continue  # the mark stays where it was: a listener that comes later hears what changed since
            runtime = self.server.env.ready()
            if runtime is None:
                continue
            try:
                changes = await anyio.to_thread.run_sync(
                    functools.partial(runtime.run_changes, self._mark, actor=OPERATOR)
                )
            except Exception:
                logger.debug("run changes not read", exc_info=True)
                continue
            first = self._mark is None
            self._mark = changes.mark
            if first:
                continue
            for run_id in changes.runs:
                await self.updated(f"{RUN_PREFIX}{run_id}")

    # ------------------------------------------------------------------------------ completions

    async def complete(
        self,
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        """Candidates for an argument of a resource template, by prefix (none for unknown ones)."""
        if not isinstance(ref, ResourceTemplateReference):
            return Completion(values=[], total=0, has_more=False)
        runtime = await self.server._open_runtime()
        if runtime is None:
            return Completion(values=[], total=0, has_more=False)
        caller = self.server.env.caller()
        found = await anyio.to_thread.run_sync(
            lambda: _candidates(runtime, str(ref.uri), argument.name, caller)
        )
        matching = [value for value in found if value.startswith(argument.value)]
        return Completion(
            values=matching[:MAX_COMPLETIONS], total=len(matching), has_more=len(matching) > MAX_COMPLETIONS
        )


def _connection(ctx: Any) -> Any:
    """The client's connection (one per session of a 2025-11-25 client), which outlives the request:
    the SDK wraps it in a new session object for every request (``ServerSession._connection``)."""
    return getattr(ctx.session, "_connection", ctx.session)


def _candidates(runtime: Any, uri: str, name: str, caller: str) -> list[str]:
    number, spec = runtime.current
    if name == "number":
        return [str(n) for n in range(number, -1, -1)]
    if name == "proposal_id":
        return [p.proposal_id for p in runtime.proposals(actor=caller)]
    if name == "run_id":
        return [r.run_id for r in runtime.list_runs(limit=MAX_COMPLETIONS * 2, actor=caller)]
    parts = {
        "entity": spec.entities,
        "action": spec.actions,
        "workflow": spec.workflows,
        "topic": spec.topics,
    }
    return sorted(item.name for item in parts.get(name, ()))
