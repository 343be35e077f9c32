"""What changing the application returns: a proposal, its dry-run report, a deploy, a rollback, a
finalize."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Step


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
