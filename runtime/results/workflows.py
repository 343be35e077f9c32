"""Runs, steps, effects and messages as the runtime reports them, and the run pages and histories the
control room reads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StepInfo(BaseModel):
    """One recorded step outcome of a run (forward steps, then compensations)."""

    seq: int
    name: str
    kind: str = Field(description="'action', 'effect', 'publish', 'wait', 'sleep' or 'compensation'.")
    status: str = Field(description="'completed' or 'failed'.")
    attempts: int
    output: Any = Field(default=None, description="The step's output (an action's first row, a response).")
    error: dict[str, Any] | None = None
    version: int = Field(
        description="The spec version current when the step ran: the version whose actions, topics and "
        "connectors it used (its definition is the run's pinned version)."
    )
    started_at: str
    finished_at: str


class RunInfo(BaseModel):
    """A workflow run: where it stands."""

    run_id: str
    workflow: str
    version: int = Field(
        description="The version the run is pinned to: it follows that version's definition of its "
        "workflow to the end, whatever is deployed meanwhile (each step records the version it ran on)."
    )
    status: str = Field(
        description="'running', 'waiting' (for a signal, a message or a timer), 'compensating', 'blocked' "
        "(the operator decides: an effect's outcome is unknown, or a step failed for a reason that is not "
        "a business answer after effects or undoable steps completed — error.unsettled names them), "
        "'completed', 'compensated', 'failed' (nothing to undo) or 'cancelled'."
    )
    step: str | None = Field(description="The step it is at (None once finished).")
    attempts: int = Field(description="Attempts of the current step so far.")
    wake_at: str | None = Field(description="When a waiting or backing-off run is due.")
    waiting_on: str | None = Field(default=None, description="'signal:<name>', 'topic:<name>' or 'sleep'.")
    error: dict[str, Any] | None = Field(description="The failure that ended or is compensating it.")
    args: dict[str, Any]
    created_by: str
    created_at: str
    updated_at: str
    origin: str | None = Field(default=None, description="What started it (an action, a subscription).")
    acting_for: str | None = Field(
        default=None,
        description="The agent on whose behalf it runs, under that agent's policy as it was when the run "
        "was started (None: the operator).",
    )
    depth: int = Field(
        default=0, description="Hops down a chain of messages and runs from an agent's own call."
    )


class RunChanges(BaseModel):
    """Runs whose row changed since a mark (``Runtime.run_changes``)."""

    mark: str = Field(description="The newest change seen: pass it back to get only what changes next.")
    runs: list[str] = Field(description="Ids of runs that changed after the mark passed in.")


class RunDetail(RunInfo):
    """A run with every recorded step and its effects."""

    steps: list[StepInfo]
    effects: list[EffectInfo] = []


class EffectInfo(BaseModel):
    """A request to an external system through a connector, with its idempotency key."""

    effect_id: str = Field(description="Also the Idempotency-Key sent with every attempt.")
    run_id: str
    step: str
    connector: str
    state: str = Field(
        description="'pending' (intent recorded; sent or about to be), 'succeeded', 'rejected', 'unknown' "
        "(no answer after every attempt: retry or resolve it), 'resolved' (by the operator)."
    )
    attempts: int
    request: Any
    response: Any = None
    status_code: int | None = None
    error: dict[str, Any] | None = None
    version: int
    created_at: str
    sent_at: str | None = None
    settled_at: str | None = None
    age_s: float = Field(description="Seconds since the intent was recorded.")


class MessageInfo(BaseModel):
    """A message on a topic."""

    seq: int = Field(description="Its position in the topic's stream (global order of publishing).")
    message_id: str = Field(description="Stable id: deduplicate on it.")
    topic: str
    key: str | None = None
    payload: dict[str, Any]
    version: int = Field(
        description="The spec version whose topic its payload fits: the one it was published under, or "
        "the deploy or rollback that last reshaped it while undelivered."
    )
    held: str | None = Field(default=None, description="Why it is held back, when it is.")
    lease_owner: str | None = None
    lease_until: str | None = None
    deliveries: int = Field(description="How many times it was handed to an external consumer.")
    acked_at: str | None = None
    created_at: str
    state: str = Field(
        default="",
        description="'held' (its topic is gone: kept back), 'leased' (an external consumer holds it), "
        "'waiting' (not yet received by an external consumer or a subscription), 'acknowledged' or "
        "'delivered' (every consumer has it).",
    )


class PublishResult(BaseModel):
    """A published message (or the one already published with the same message_id)."""

    message_id: str
    seq: int
    topic: str
    replayed: bool = Field(default=False, description="True when message_id had been published before.")


class ClaimResult(BaseModel):
    """Messages leased to a consumer: acknowledge each with ack_messages before lease_until, or it is
    delivered again."""

    consumer: str
    messages: list[MessageInfo]
    lease_until: str | None = None


class AckResult(BaseModel):
    acked: list[str] = Field(description="The message ids acknowledged.")


class RunRow(RunInfo):
    """A run in a list: where it is or where it stopped, and for how long it has run."""

    at_step: str | None = Field(
        default=None, description="The step it is at, or the step where it stopped (failed, blocked)."
    )
    step_index: int = Field(
        description="That step's position in the definition (from 0; -1 below the first)."
    )
    steps_total: int = Field(description="How many steps its pinned definition has (0 when it is unknown).")
    duration_s: float = Field(description="Seconds from its start to its last update.")


class FailureGroup(BaseModel):
    """Failed or blocked runs that stopped the same way: one workflow, one step, one error code."""

    workflow: str
    status: str = Field(description="'failed' or 'blocked'.")
    step: str | None
    code: str | None
    count: int
    latest_at: str
    message: str | None = Field(default=None, description="The error message of the latest of them.")


class RunPage(BaseModel):
    """A page of runs, newest first, with how many match and the ways runs are failing."""

    runs: list[RunRow]
    matching: int = Field(description="How many runs match the filters (all pages).")
    next_before: list[str] | None = Field(
        default=None, description="[created_at, run_id] of the last run shown: pass it for the next page."
    )
    failures: list[FailureGroup] = Field(
        default=[],
        description="Failed and blocked runs grouped by workflow, step and error code, most first.",
    )


class RunEvent(BaseModel):
    """One audited moment of a run: its start, a step's attempt, an effect sent or answered, a signal,
    an operator's retry, cancel or resolution."""

    seq: int
    time: str
    actor: str
    operation: str
    outcome: str
    error_code: str | None = None
    arguments: dict[str, Any]
    by_operator: bool = False


class PlannedStep(BaseModel):
    """A step of the run's pinned definition, done, at hand or still to come."""

    index: int
    name: str
    kind: str
    does: str = Field(
        description="What it does, in words (an action, a connector, a signal, a topic, a sleep)."
    )
    state: str = Field(
        description="'completed', 'failed', 'current' (the run is at it), 'to come', 'not run' (the run "
        "ended before it) or 'compensated'."
    )
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    compensation: str | None = Field(default=None, description="What undoes it, in words.")
    compensation_state: str | None = Field(
        default=None, description="'completed' or 'failed' once its compensation ran."
    )
    events: list[RunEvent] = Field(default=[], description="Its attempts, sends and answers, oldest first.")


class SignalInfo(BaseModel):
    """A signal sent to a run."""

    seq: int
    name: str
    payload: dict[str, Any]
    consumed: bool
    created_at: str
    created_by: str


class RunHistory(BaseModel):
    """A run's whole history: every step of its pinned definition (past, current, to come), its
    audited events (attempts with their errors and times, the operator's interventions), its signals
    and effects."""

    run: RunDetail
    steps: list[PlannedStep]
    compensations: list[PlannedStep] = []
    events: list[RunEvent]
    events_more: bool = Field(default=False, description="True when older events were left out.")
    signals: list[SignalInfo] = []
    waits_for: list[str] = Field(default=[], description="The signals its definition's wait steps expect.")
    duration_s: float
