"""What the control room reads: audit pages and statistics, the overview, approval requests, pages of
versions and proposals, and the rows the operator decides from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Step
from runtime.results.app import AuditEntry, Facet, ProposalSummary, VersionInfo, WorkflowSummary
from runtime.results.changes import DryRunReport, Loss
from runtime.schema.diff import SpecDiff
from runtime.schema.spec import AppSpec


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
