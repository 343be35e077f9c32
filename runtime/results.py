"""Every result the ``Runtime`` facade returns, as pydantic models (no database imports).

The MCP tools return these models (their ``outputSchema`` is derived from them) and the CLI prints
them, so each field's description is written for the agent that reads it. Keeping them free of the
engine lets the server list its tools without loading DuckDB.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Step
from runtime.schema.spec import AppSpec, ParamSpec

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

# ------------------------------------------------------------------------------------------ reading


class ActionSummary(BaseModel):
    """A deployed action: typed, analysed SQL the runtime runs on the agent's behalf."""

    name: str
    kind: str = Field(description="'query' (reads) or 'mutation' (writes through the writer lane).")
    description: str
    params: list[ParamSpec]
    reads: list[str] = Field(description="Entities and views the action reads.")
    writes: list[str] = Field(description="Entities the action writes.")
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
