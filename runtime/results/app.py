"""What reading and using the application returns: its description, versions, queries, SQL checks,
audit entries, the chain's verification and an action's result."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from runtime.boundary.policy import PolicyOrigin
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


class Facet(BaseModel):
    """One value of an audit column (an actor, an operation, an outcome, an error code) and how many
    entries carry it."""

    value: str
    count: int


class WorkflowSummary(BaseModel):
    """Work in flight at a glance: runs by state, effects whose outcome is unknown, messages not yet
    delivered."""

    runs_by_status: list[Facet] = Field(description="How many runs are in each state, most first.")
    unknown_effects: int = Field(description="Effects with no answer after every attempt (operator's call).")
    undelivered_messages: int = Field(description="Messages some consumer has not received, or held back.")


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
