"""The workflow, message and effect operations: runs started, read, cancelled, signalled, retried;
effects resolved; messages published, claimed, acknowledged and read. ``Runtime`` inherits them
(``WorkflowOperations`` is a mixin typed against ``runtime.context.WorkflowContext``); each declares
itself with ``@operation`` and makes one call into ``runtime.workflows.service``, which authorises,
audits and does the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.boundary.policy import Capability
from runtime.context import WorkflowContext
from runtime.registry import OPERATOR, Kind, operation
from runtime.results import (
    AckResult,
    ClaimResult,
    EffectInfo,
    MessageInfo,
    PublishResult,
    RunDetail,
    RunInfo,
)
from runtime.workflows import service as workflow_service


class WorkflowOperations:
    """Runs, effects and messages, mixed into ``Runtime``."""

    @operation(Kind.CHANGE, Capability.RUN_WORKFLOWS, tools=("start_workflow",), cli=("runs start",))
    def start_workflow(
        self: WorkflowContext,
        workflow: str,
        args: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        actor: str = OPERATOR,
    ) -> RunInfo:
        """Start a run of a deployed workflow; ``run_id`` makes it idempotent (the same id returns it)."""
        return workflow_service.start_workflow(self, workflow, args or {}, run_id, actor)

    @operation(Kind.READ, Capability.READ, tools=("get_run",), cli=("runs show",))
    def get_run(self: WorkflowContext, run_id: str, *, actor: str = OPERATOR) -> RunDetail:
        """A run with every recorded step (output or error, attempts, version) and its effects."""
        return workflow_service.get_run(self, run_id, actor)

    @operation(Kind.READ, Capability.READ, tools=("list_runs",), cli=("runs list",))
    def list_runs(
        self: WorkflowContext,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        actor: str = OPERATOR,
    ) -> list[RunInfo]:
        """Runs, newest first (``status="active"``: those not finished)."""
        return workflow_service.list_runs(self, workflow, status, limit, actor)

    @operation(
        Kind.DESTRUCTIVE,
        Capability.RUN_WORKFLOWS,
        also=(Capability.MANAGE_RUNS,),
        tools=("cancel_run",),
        cli=("runs cancel",),
        acts=("cancel_run", "bulk_runs"),
    )
    def cancel_run(
        self: WorkflowContext, run_id: str, *, reason: str | None = None, actor: str = OPERATOR
    ) -> RunInfo:
        """Cancel a run: its completed steps are compensated, newest first, then it is cancelled."""
        return workflow_service.cancel_run(self, run_id, reason, actor)

    @operation(
        Kind.CHANGE,
        Capability.RUN_WORKFLOWS,
        also=(Capability.MANAGE_RUNS,),
        tools=("signal_run",),
        cli=("runs signal",),
        acts=("signal_run",),
    )
    def signal_run(
        self: WorkflowContext,
        run_id: str,
        name: str,
        payload: dict[str, Any] | None = None,
        *,
        actor: str = OPERATOR,
    ) -> RunInfo:
        """Send a run a signal (a wait step consumes it)."""
        return workflow_service.signal_run(self, run_id, name, payload or {}, actor)

    @operation(Kind.CHANGE, Capability.RESOLVE_EFFECTS, cli=("runs retry",), acts=("retry_run", "bulk_runs"))
    def retry_run(self: WorkflowContext, run_id: str, *, actor: str = OPERATOR) -> RunInfo:
        """Retry a failed or blocked run at its step (the operator's decision)."""
        return workflow_service.retry_run(self, run_id, actor)

    @operation(Kind.CHANGE, Capability.RESOLVE_EFFECTS, cli=("effects resolve",), acts=("resolve_effect",))
    def resolve_effect(
        self: WorkflowContext, effect_id: str, outcome: str, *, response: Any = None, actor: str = OPERATOR
    ) -> EffectInfo:
        """Record what an effect with an unknown outcome did (the operator checked with the provider)."""
        return workflow_service.resolve_effect(self, effect_id, outcome, response, actor)

    @operation(Kind.READ, Capability.READ, cli=("effects list",))
    def list_effects(
        self: WorkflowContext,
        *,
        state: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
        actor: str = OPERATOR,
    ) -> list[EffectInfo]:
        """Effects, the unknown ones first, then those in flight."""
        return workflow_service.list_effects(self, state, run_id, limit, actor)

    @operation(Kind.CHANGE, Capability.PUBLISH, audited="publish", tools=("publish",))
    def publish_message(
        self: WorkflowContext,
        topic: str,
        payload: dict[str, Any],
        *,
        message_id: str | None = None,
        actor: str = OPERATOR,
    ) -> PublishResult:
        """Publish a message; ``message_id`` deduplicates (the same id returns the first message)."""
        return workflow_service.publish_message(self, topic, payload, message_id, actor)

    @operation(Kind.CHANGE, Capability.CONSUME, tools=("claim_messages",))
    def claim_messages(
        self: WorkflowContext,
        topic: str,
        *,
        consumer: str | None = None,
        limit: int = 10,
        lease_s: float = 30.0,
        actor: str = OPERATOR,
    ) -> ClaimResult:
        """Lease messages of an external topic to a consumer (redelivered if not acknowledged in time)."""
        return workflow_service.claim_messages(self, topic, consumer, limit, lease_s, actor)

    @operation(Kind.CHANGE, Capability.CONSUME, tools=("ack_messages",))
    def ack_messages(
        self: WorkflowContext,
        message_ids: Sequence[str],
        *,
        consumer: str | None = None,
        actor: str = OPERATOR,
    ) -> AckResult:
        """Acknowledge messages the consumer holds."""
        return workflow_service.ack_messages(self, message_ids, consumer, actor)

    @operation(Kind.READ, Capability.READ, tools=("list_messages",), cli=("messages",))
    def list_messages(
        self: WorkflowContext,
        *,
        topic: str | None = None,
        undelivered: bool = False,
        limit: int = 100,
        actor: str = OPERATOR,
    ) -> list[MessageInfo]:
        """Messages, newest first (``undelivered``: those some consumer has yet to receive, and held ones)."""
        return workflow_service.list_messages(self, topic, undelivered, limit, actor)
