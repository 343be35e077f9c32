"""The workflow and message tools: start, follow, signal and cancel runs; publish, claim and acknowledge
messages. Each projects one ``Runtime`` method; every state change lands in the audit chain.

What is exactly once and what is at least once (the model reads this in the descriptions): a run id
is an idempotency key; an action step's writes commit with its record (exactly once); an effect is
sent with an idempotency key derived from the run and the step, and resent with the same key after a
crash (exactly once in effect when the provider honours keys); a message claimed and not
acknowledged before its lease ends is delivered again (at least once: deduplicate on message_id).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from runtime.results import AckResult, ClaimResult, MessageInfo, PublishResult, RunDetail, RunInfo
from runtime.workflows.status import RunFilter
from tools.base import ToolContext, ToolSpec, call_runtime, changing, reading

RunId = Annotated[
    str, Field(min_length=1, max_length=200, description="The run's id (start_workflow returns it).")
]


class RunList(BaseModel):
    """Runs, newest first."""

    runs: list[RunInfo]


class MessageList(BaseModel):
    """Messages, newest first."""

    messages: list[MessageInfo]


async def start_workflow(
    ctx: ToolContext,
    workflow: Annotated[
        str, Field(min_length=1, max_length=63, description="The workflow (describe_app lists them).")
    ],
    args: Annotated[dict[str, Any] | None, Field(description="The workflow's parameters by name.")] = None,
    run_id: Annotated[
        str | None,
        Field(
            default=None,
            max_length=200,
            description="Your id for the run, e.g. derived from the order: starting the same id again returns "
            "the same run (an idempotency key); the same id with other arguments is refused.",
        ),
    ] = None,
) -> RunInfo:
    """Start a durable run of a deployed workflow.

    The run is recorded before this returns; the server advances it step by step, and after a crash or
    restart it resumes at its first unfinished step (a completed step never runs again). Follow it with
    get_run. Pass run_id when a retry of this call must not start a second run.

    Errors: not_found (no such workflow), action.invalid_args (fix the arguments per details.problems),
    workflow.run_conflict (run_id already used with other arguments: use a new id), policy.denied.
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.start_workflow(workflow, args or {}, run_id=run_id, actor=actor)
    )


async def get_run(ctx: ToolContext, run_id: RunId) -> RunDetail:
    """A run: its status, the step it is at, and every recorded step with its output or error, attempts
    and the version it ran under; its effects (external requests) with their state.

    Statuses: running, waiting (a signal, a message or a timer), compensating, blocked (an effect's
    outcome is unknown: the operator retries or resolves it), completed, compensated, failed, cancelled.

    Errors: not_found (list_runs shows the runs).
    """
    return await call_runtime(ctx, lambda runtime, actor: runtime.get_run(run_id, actor=actor))


async def list_runs(
    ctx: ToolContext,
    workflow: Annotated[str | None, Field(description="Only runs of this workflow.")] = None,
    status: Annotated[
        RunFilter | None, Field(description="Only runs in this status; 'active' for every run not finished.")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=1000, description="At most this many, newest first.")] = 50,
) -> RunList:
    """List workflow runs, newest first, with where each stands: status, the step it is at, what it
    waits on and when it wakes, the version it started under and its last error.

    Use it to find runs that need attention (status 'blocked' waits for the operator; 'active' lists
    every run not finished); get_run shows one run's steps and effects.
    """
    return await call_runtime(
        ctx,
        lambda runtime, actor: RunList(
            runs=runtime.list_runs(workflow=workflow, status=status, limit=limit, actor=actor)
        ),
    )


async def cancel_run(
    ctx: ToolContext,
    run_id: RunId,
    reason: Annotated[str | None, Field(max_length=500, description="Why, for the audit log.")] = None,
) -> RunInfo:
    """Cancel a run that has not finished. The compensations of its completed steps run first, newest
    first, each recorded; then it is cancelled. Cancelling twice is refused, not repeated.

    Errors: not_found, workflow.not_active (it already finished).
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.cancel_run(run_id, reason=reason, actor=actor)
    )


async def signal_run(
    ctx: ToolContext,
    run_id: RunId,
    name: Annotated[str, Field(min_length=1, max_length=63, description="The signal a wait step waits for.")],
    payload: Annotated[dict[str, Any] | None, Field(description="Data the waiting step receives.")] = None,
) -> RunInfo:
    """Send a named signal with a payload to a run: the wait step waiting for that name takes it and
    its payload becomes the step's output (steps.<step>.<field> for later steps). A signal sent before
    the run reaches its wait is kept for it. Use it for human or outside events (a document arrived, an
    approval came in); an action can send the same signal with its writes (an emit).

    Errors: not_found, workflow.not_active (it already finished).
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.signal_run(run_id, name, payload or {}, actor=actor)
    )


async def publish(
    ctx: ToolContext,
    topic: Annotated[
        str, Field(min_length=1, max_length=63, description="The topic (describe_app lists them).")
    ],
    payload: Annotated[dict[str, Any], Field(description="The message, with the topic's payload fields.")],
    message_id: Annotated[
        str | None,
        Field(
            default=None,
            max_length=200,
            description="Your id for the message: publishing the same id again returns the first message.",
        ),
    ] = None,
) -> PublishResult:
    """Publish a message on a topic. Subscriptions receive it exactly once in effect; external consumers
    claim it with claim_messages.

    Errors: not_found (no such topic), message.invalid_payload (fix the fields per details.problems).
    """
    return await call_runtime(
        ctx,
        lambda runtime, actor: runtime.publish_message(topic, payload, message_id=message_id, actor=actor),
    )


async def claim_messages(
    ctx: ToolContext,
    topic: Annotated[str, Field(min_length=1, max_length=63, description="An external topic.")],
    consumer: Annotated[
        str | None, Field(max_length=100, description="Your consumer name (default: your agent name).")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=100, description="At most this many messages.")] = 10,
    lease_s: Annotated[
        float, Field(ge=1, le=3600, description="Seconds you hold them; unacknowledged ones come back after.")
    ] = 30.0,
) -> ClaimResult:
    """Lease the next messages of an external topic. Acknowledge each with ack_messages once handled;
    one not acknowledged before lease_until is delivered again (deduplicate on message_id). Messages with
    the same key are handed out one at a time, in the order they were published.

    Errors: not_found (no such topic), action.invalid_args (the topic is not external).
    """
    return await call_runtime(
        ctx,
        lambda runtime, actor: runtime.claim_messages(
            topic, consumer=consumer, limit=limit, lease_s=lease_s, actor=actor
        ),
    )


async def ack_messages(
    ctx: ToolContext,
    message_ids: Annotated[
        list[str], Field(min_length=1, max_length=100, description="The ids you handled.")
    ],
    consumer: Annotated[
        str | None, Field(max_length=100, description="The consumer that claimed them.")
    ] = None,
) -> AckResult:
    """Acknowledge messages this consumer claimed, once it has handled them: they are not delivered
    again, and the next message with the same key becomes claimable. Acknowledging twice is harmless.
    A message not acknowledged before its lease ends is delivered again (at least once).

    Errors: message.not_leased (another consumer holds them now: its lease ran out; claim again).
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.ack_messages(message_ids, consumer=consumer, actor=actor)
    )


async def list_messages(
    ctx: ToolContext,
    topic: Annotated[
        str | None,
        Field(max_length=63, description="Only this topic's messages (describe_app lists topics)."),
    ] = None,
    undelivered: Annotated[
        bool, Field(description="Only those some consumer has yet to receive, and held ones.")
    ] = False,
    limit: Annotated[int, Field(ge=1, le=1000, description="At most this many, newest first.")] = 100,
) -> MessageList:
    """Read messages of any topic, internal or external, without claiming them: nothing about their
    delivery changes. Each has its payload, key, state ('waiting', 'leased', 'acknowledged',
    'delivered' or 'held'), deliveries, lease and the version whose topic its payload fits. Use it to
    see what an action or a step published, and what is still undelivered; consumers use
    claim_messages.
    """
    return await call_runtime(
        ctx,
        lambda runtime, actor: MessageList(
            messages=runtime.list_messages(topic=topic, undelivered=undelivered, limit=limit, actor=actor)
        ),
    )


TOOLS: tuple[ToolSpec, ...] = (
    changing(  # idempotent only with run_id
        start_workflow, "Start a workflow run", destructive=False, idempotent=False, untrusted=True
    ),
    reading(get_run, "Get a run", untrusted=True),
    reading(list_runs, "List runs", untrusted=True),
    changing(cancel_run, "Cancel a run", destructive=True, idempotent=False, untrusted=True),
    changing(signal_run, "Signal a run", destructive=False, idempotent=False, untrusted=True),
    changing(publish, "Publish a message", destructive=False, idempotent=False),
    changing(claim_messages, "Claim messages", destructive=False, idempotent=False, untrusted=True),
    changing(ack_messages, "Acknowledge messages", destructive=False, idempotent=True),
    reading(list_messages, "List messages", untrusted=True),
)
