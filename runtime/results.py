"""Every result the ``Runtime`` facade returns, as pydantic models (no database imports).

The MCP tools return these models (their ``outputSchema`` is derived from them) and the CLI prints
them, so each field's description is written for the agent that reads it. Keeping them free of the
engine lets the server list its tools without loading DuckDB.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from runtime.boundary.policy import PolicyOrigin
from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Step
from runtime.schema.diff import SpecDiff
from runtime.schema.spec import AppSpec, Emit, ParamSpec

Rows = Annotated[
    list[list[Any]],
    WithJsonSchema(
        {
            "type": "array",
            "description": "Rows, each an array of values in column order.",
        }
    ),
]
"""Result rows. The schema stops at "an array": clients validate ``structuredContent`` against the
output schema, and a schema that reaches every cell costs them a validation step per value (most
of the time of a 2,000-row result through the Python SDK's client)."""

DryRunState = Literal["passed", "failed", "stale", "not_dry_run"]
"""Where a proposal's dry-run stands (``runtime.store.catalog.dry_run_state``)."""

# ------------------------------------------------------------------------------------------ reading


class ActionSummary(BaseModel):
    """A deployed action: typed, analysed SQL the runtime runs on the agent's behalf."""

    name: str
    kind: str = Field(description="'query' (reads) or 'mutation' (writes through the writer lane).")
    description: str
    params: list[ParamSpec]
    reads: list[str] = Field(description="Entities and views the action reads.")
    writes: list[str] = Field(description="Entities the action writes.")
    fields_read: list[str] = Field(
        default=[], description="Fields (entity.field, or view.column) its statements read."
    )
    fields_written: list[str] = Field(default=[], description="Fields (entity.field) its statements assign.")
    emits: list[Emit] = Field(
        default=[], description="Messages it publishes, runs it starts and signals it sends with its writes."
    )
    tool: str = Field(description="The name of the action's own tool (app_<name>).")


class PendingProposal(BaseModel):
    """A proposal made on the current version that is not deployed yet."""

    proposal_id: str
    note: str | None = None
    created_by: str
    created_at: str
    dry_run_passed: bool = Field(
        description="True once a dry-run of this proposal passed on the current version."
    )
    dry_run: DryRunState = Field(
        description="'passed', 'failed' (dry-run, and none passed: fix and propose again) or 'not_dry_run'."
    )


class ProposalSummary(BaseModel):
    """A stored proposal and where it stands."""

    proposal_id: str
    base_version: int
    note: str | None = None
    created_by: str
    created_at: str
    status: str = Field(
        description="'deployed' (as deployed_as), 'pending' (on the current version) or 'stale' (its base "
        "is no longer current: propose again)."
    )
    deployed_as: int | None = None
    dry_run_passed: bool = Field(description="True once a dry-run of it passed on its base version.")
    dry_run: DryRunState = Field(
        description="'passed', 'failed' (dry-run, and none passed), 'stale' (one passed, but its base is no "
        "longer the current version: a deploy is refused) or 'not_dry_run'."
    )
    hazards: list[str] = Field(default=[], description="The codes of its plan's hazards.")


class InvariantCheck(BaseModel):
    """How an invariant is checked after each mutation."""

    name: str
    incremental: bool = Field(
        description="True: checked only on the keys a mutation touched, so its cost stays flat as data grows."
    )
    reason: str = Field(
        description="Incremental: the key ('by slot.id'). Otherwise why it is checked in full, and how to "
        "make it incremental."
    )


class ConnectorSummary(BaseModel):
    """A connector the operator configured: what effect steps may name (never where it points)."""

    name: str
    description: str = ""


class AppDescription(BaseModel):
    """The whole application at its current version."""

    version: int
    hash: str
    spec: AppSpec
    actions: list[ActionSummary]
    invariant_checks: list[InvariantCheck] = []
    pending_proposals: list[PendingProposal]
    drift: list[str]
    audit_problem: str | None = None
    connectors: list[ConnectorSummary] = []
    work: WorkflowSummary | None = None
    policy: PolicyOrigin | None = Field(
        default=None,
        description="The operator policy in force: its file, the file's sha256, when it was read, and what of "
        "the file as it is now is not in force (problem, restart_needed).",
    )
    policy_problem: str | None = Field(
        default=None,
        description="Why buttress.toml as it is now was refused (the policy read before stays in force); "
        "null when the file in force is the file as it is.",
    )


class VersionInfo(BaseModel):
    """One deployed version: a deploy of a proposal, or a rollback restoring an earlier version."""

    number: int
    hash: str
    kind: str = Field(description="'init' (version 0), 'deploy' or 'rollback'.")
    parent: int | None = Field(default=None, description="The version this one was deployed on.")
    restores: int | None = Field(
        default=None, description="For a rollback: the version whose spec it restores."
    )
    proposal_id: str | None = None
    note: str | None = None
    deployed_at: str
    deployed_by: str


class QueryResult(BaseModel):
    """The rows a query returned."""

    columns: list[str]
    rows: Rows = Field(
        description="Rows as lists in column order; times and decimals as ISO/text strings; "
        "NaN and infinities as the strings 'NaN', 'Infinity' and '-Infinity'."
    )
    row_count: int = Field(description="Number of rows returned (after the limits).")
    truncated: bool = Field(
        description="True when more rows matched than the row or byte limit let through; narrow the query "
        "or page."
    )


class SqlCheckResult(BaseModel):
    """What a statement would do, as far as analysis can tell without running it."""

    ok: bool = Field(description="True when the statement is allowed and binds against the spec.")
    kind: str | None = Field(
        default=None, description="The statement kind, e.g. 'select', 'insert', 'update'."
    )
    reads: list[str] = []
    writes: list[str] = []
    params: list[str] = Field(default=[], description="The $names the statement expects.")
    output_columns: list[str] = []
    fields_read: list[str] = Field(default=[], description="Fields (entity.field, or view.column) it reads.")
    fields_written: list[str] = Field(default=[], description="Fields (entity.field) it assigns.")
    against_version: int
    proposal_id: str | None = None
    as_invariant: str | None = Field(
        default=None,
        description="For a SELECT: how it would be checked as an invariant ('incremental, by slot.id', or "
        "'in full: <why>').",
    )
    error: dict[str, Any] | None = Field(
        default=None, description="When ok is false: {code, message, hint, details}."
    )


class AuditEntry(BaseModel):
    """One row of the hash-chained audit log."""

    seq: int
    time: str = Field(description="When, as ISO 8601 UTC.")
    actor: str
    operation: str
    arguments: dict[str, Any]
    outcome: str = Field(description="'ok', 'refused', 'replayed', 'passed' or 'failed'.")
    error_code: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    proposal_id: str | None = None
    prev_hash: str
    hash: str


class VerifyResult(BaseModel):
    """Whether the audit chain is whole: every row fits its hash and the one before, and the rows the
    anchor proves were committed are all there."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    missing: list[int] | None = Field(
        default=None, description="[first, last] sequence numbers proven committed and now gone."
    )
    anchor: dict[str, Any] | None = Field(
        default=None, description="The anchored head that was checked: {seq, hash, time}."
    )


# ------------------------------------------------------------------------------------------ changing


class ProposalResult(BaseModel):
    """A stored, immutable proposal: the plan that dry_run will execute and deploy will apply."""

    proposal_id: str
    base_version: int = Field(description="The version the plan applies to; deploy refuses any other.")
    target_hash: str = Field(description="Hash of the spec the proposal deploys.")
    plan_hash: str
    steps: list[Step] = Field(description="Ordered steps: forward SQL, reverse operations, probes, hazards.")
    hazards: list[Hazard] = Field(description="Every step's hazards: read them before dry-running.")
    note: str | None = None


class Loss(BaseModel):
    """Data a step removes or changes (retained, so a rollback restores it)."""

    code: str
    message: str
    count: int = Field(description="How many rows lose or change data (it is retained for rollback).")
    sample: list[dict[str, Any]]


class StepReport(BaseModel):
    """What one step did when it ran."""

    index: int
    summary: str
    strategy: str
    statements: int
    rows_affected: int
    duration_ms: float
    losses: list[Loss] = []


class Check(BaseModel):
    """One check run after the steps."""

    name: str = Field(description="'catalog', 'views', 'invariants', 'actions' or 'tools'.")
    passed: bool
    detail: str = ""
    sample: list[dict[str, Any]] = []


class DryRunReport(BaseModel):
    """What executing the plan on the real data did, before it was rolled back."""

    proposal_id: str | None
    base_version: int
    plan_hash: str
    passed: bool
    steps: list[StepReport]
    checks: list[Check]
    hazards: list[Hazard]
    error: dict[str, Any] | None = Field(
        default=None, description="Why it failed: {code, message, hint, details}."
    )
    duration_ms: float
    dry_run_id: int | None = None


class DeployResult(BaseModel):
    """The version a deploy created."""

    version: int = Field(description="The new current version.")
    previous_version: int
    hash: str
    proposal_id: str | None
    steps: list[StepReport]
    duration_ms: float


class RollbackResult(BaseModel):
    """The version a rollback created, and the version whose spec it restored."""

    version: int = Field(description="The new current version (a rollback is a new version).")
    previous_version: int
    restored_version: int = Field(description="The version whose spec (and data shape) is now current.")
    hash: str
    steps: list[StepReport]
    duration_ms: float


class FinalizeResult(BaseModel):
    """Retained data discarded by finalize."""

    before_version: int
    finalized_tables: list[str]


# ------------------------------------------------------------------------------------------- logic


class ActionResult(BaseModel):
    """The result of an action: the rows of its last row-producing statement."""

    action: str
    kind: str = Field(description="'query' or 'mutation'.")
    columns: list[str]
    rows: Rows
    row_count: int
    rows_affected: int = Field(description="Rows inserted, updated or deleted (RETURNING rows count too).")
    replayed: bool = Field(
        default=False, description="True when an idempotency key returned the stored first result."
    )
    version: int = Field(description="The application version the action ran under.")


# ------------------------------------------------------------------------------------ control room


class Facet(BaseModel):
    """One value of an audit column (an actor, an operation, an outcome, an error code) and how many
    entries carry it."""

    value: str
    count: int


class AuditFacets(BaseModel):
    """The values the audit log holds in the columns people filter on, most frequent first."""

    actors: list[Facet]
    operations: list[Facet]
    outcomes: list[Facet]
    codes: list[Facet]


class AuditPage(BaseModel):
    """One page of the audit log, newest first, filtered; with the values there are to filter on."""

    entries: list[AuditEntry]
    matching: int = Field(description="How many entries match the filters (all pages).")
    total: int = Field(description="How many entries the log holds.")
    next_before: int | None = Field(
        default=None, description="Pass as before_seq for the next (older) page; None on the last page."
    )
    facets: AuditFacets


class ActivityBucket(BaseModel):
    """Agent calls in one stretch of time, by outcome."""

    start: str = Field(description="The bucket's start as an ISO 8601 prefix (to the minute, hour or day).")
    allowed: int = Field(description="Calls that succeeded (ok, passed, replayed).")
    refused: int
    failed: int = Field(description="Dry-runs that ran and failed.")


class AuditStats(BaseModel):
    """Agent calls over time and refusals by code, counted in the database."""

    granularity: str = Field(description="'minute', 'hour' or 'day'.")
    buckets: list[ActivityBucket] = Field(
        description="Consecutive buckets, oldest first, empty ones included."
    )
    refusals_by_code: list[Facet]


class ApprovalRequest(BaseModel):
    """An agent's hazardous deploy or rollback waiting for (or decided by) the operator."""

    request_id: str
    subject: str = Field(description="What it asks to do, in words.")
    proposal_id: str | None = Field(default=None, description="The proposal deployed (None for a rollback).")
    plan_hash: str = Field(description="The exact plan an approval is bound to.")
    hazards: list[Hazard]
    requested_by: str
    requested_at: str
    expires_at: str
    status: str = Field(
        description="'pending', 'approved' (the agent may retry once), 'used', 'refused', 'expired' or "
        "'stale' (its plan can no longer deploy: the version moved on, or its dry-run failed; it cannot be "
        "approved)."
    )
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = Field(
        default=None, description="The operator's reason for a refusal, or why a stale request cannot deploy."
    )
    losses: list[Loss] = Field(
        default=[], description="What the last dry-run of this plan found it would remove, with sample rows."
    )
    note: str | None = Field(default=None, description="The agent's note on the proposal it asks to deploy.")
    dry_run: str | None = Field(
        default=None,
        description="The latest dry-run of this plan on the current version: 'passed', 'failed' or 'none' "
        "(None for a rollback, which is dry-run as it runs).",
    )


class WorkflowSummary(BaseModel):
    """Work in flight at a glance: runs by state, effects whose outcome is unknown, messages not yet
    delivered."""

    runs_by_status: list[Facet] = Field(description="How many runs are in each state, most first.")
    unknown_effects: int = Field(description="Effects with no answer after every attempt (operator's call).")
    undelivered_messages: int = Field(description="Messages some consumer has not received, or held back.")


class Overview(BaseModel):
    """The application at a glance: what runs, what waits, what the agents did lately."""

    version: VersionInfo
    parts: dict[str, int] = Field(description="How many of each part the spec holds (entities, actions...).")
    versions: int
    pending_proposals: list[ProposalRow] = Field(
        description="Proposals on the current version not deployed, with their dry-run and approval state."
    )
    pending_approvals: int
    drift: list[str]
    audit_problem: str | None = None
    audit_entries: int
    recent: list[AuditEntry] = Field(
        description="The agents' own latest calls, newest first (not the work runs and subscriptions do for them)."
    )
    recent_work: list[AuditEntry] = Field(
        default=[], description="The latest work done on agents' behalf (workflow steps, subscriptions)."
    )
    stats: AuditStats
    workflows: WorkflowSummary


class VersionPage(BaseModel):
    """A page of the version history, newest first."""

    versions: list[VersionRow]
    total: int
    next_before: int | None = None


class VersionComparison(BaseModel):
    """Two versions, their specs, and the structural diff between them."""

    before: VersionInfo
    after: VersionInfo
    before_spec: AppSpec
    after_spec: AppSpec
    diff: SpecDiff


class ProposalPage(BaseModel):
    """A page of proposals, newest first."""

    proposals: list[ProposalRow]
    matching: int
    next_before: int | None = None


class ProposalDetail(BaseModel):
    """A proposal in full: its operations, the plan's steps (SQL, strategy, hazards), its latest
    dry-run report (values lost, sample rows) and the approval requests made for it."""

    summary: ProposalRow
    operations: list[dict[str, Any]]
    target_hash: str
    plan_hash: str
    steps: list[Step]
    hazards: list[Hazard]
    dry_run: DryRunReport | None = None
    dry_run_at: str | None = None
    approvals: list[ApprovalRequest] = []


class ActivityHead(BaseModel):
    """What changes when something happens: polled by the control room to refresh itself."""

    version: int
    agent_seq: int = Field(description="The sequence number of the newest audit entry by an agent.")
    pending_approvals: int
    unknown_effects: int = Field(default=0, description="Effects whose outcome is unknown.")


# --------------------------------------------------------------------------- workflows and messages


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


# ------------------------------------------------------------------ control room: deciding from it

REFUSAL_KEY = "_refused"
"""Where a refused call's audit row keeps the error's message, beside the arguments the caller sent."""


class ProposalRow(ProposalSummary):
    """A proposal as the operator decides from it: its latest dry-run and its latest approval request."""

    latest_dry_run: str = Field(
        default="none",
        description="The latest dry-run of its plan on its base version: 'passed', 'failed' or 'none'. A "
        "deploy goes by the latest one.",
    )
    dry_run_error: str | None = Field(default=None, description="The code the latest dry-run failed with.")
    dry_run_at: str | None = None
    approval: str | None = Field(
        default=None,
        description="Its latest approval request's status (as ApprovalRequest.status); None: none.",
    )
    approval_id: str | None = None
    approval_reason: str | None = Field(
        default=None, description="Why the request was refused, or why it can no longer deploy."
    )


class VersionRow(VersionInfo):
    """A version in the history, with the earlier version whose spec it repeats (if any)."""

    same_as: int | None = Field(
        default=None,
        description="The first earlier version with the same spec hash: the version a rollback restored, "
        "or one a redeploy repeats.",
    )


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


class ColumnInfo(BaseModel):
    """A column of an entity or a view as the Data page shows it."""

    name: str
    type: str = Field(description="The spec's type for an entity's field; DuckDB's for a view's column.")
    key: bool = False
    nullable: bool = True
    references: str | None = Field(default=None, description="'entity.field' this column points to.")
    references_key: bool = Field(
        default=False, description="True when the field it points to is that entity's whole primary key."
    )
    referenced_by: list[str] = Field(default=[], description="'entity.field' of the columns pointing here.")


class DataFilter(BaseModel):
    """One condition on a column: ``op`` one of eq, ne, lt, le, gt, ge, contains, startswith, isnull,
    notnull (``value`` unused for the last two)."""

    column: str
    op: str
    value: str | None = None


class FacetValue(BaseModel):
    value: Any
    count: int


class ColumnFacet(BaseModel):
    """The values of a low-cardinality column among the matching rows, with their counts."""

    column: str
    values: list[FacetValue]
    more: bool = Field(description="True when the column has more distinct values than shown.")
    chosen: bool = Field(description="True when the operator asked for it; False when suggested.")


class DataPage(BaseModel):
    """A page of an entity's or a view's rows: sorted, filtered, counted, with facets."""

    table: str
    kind: str = Field(description="'entity' or 'view'.")
    columns: list[ColumnInfo]
    key: list[str]
    rows: Rows
    total: int = Field(description="Rows in the whole table.")
    matching: int = Field(description="Rows matching the filters.")
    offset: int
    limit: int
    more: bool
    sort: str | None = None
    descending: bool = False
    filters: list[DataFilter] = []
    facets: list[ColumnFacet] = []


class ParentLink(BaseModel):
    """A reference from a row to the row it points to."""

    column: str
    table: str
    field: str
    value: Any
    key: bool = Field(description="True when the field pointed to is the parent's whole primary key.")
    found: bool


class ChildRows(BaseModel):
    """Rows of another entity pointing to this row, counted, the first few shown."""

    table: str
    column: str = Field(description="The child's column that points here.")
    field: str = Field(description="This row's field it points to.")
    value: Any
    count: int
    columns: list[str]
    key: list[str]
    rows: Rows


class RowDetail(BaseModel):
    """One row of an entity, by its primary key, with its parents and its children."""

    table: str
    columns: list[ColumnInfo]
    key: dict[str, Any]
    row: list[Any] | None = Field(
        description="The row's values in column order; None when no row has the key."
    )
    parents: list[ParentLink] = []
    children: list[ChildRows] = []


RunDetail.model_rebuild()
for _model in (ApprovalRequest, Overview, VersionPage, ProposalPage, ProposalDetail):
    _model.model_rebuild()
