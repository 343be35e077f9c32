"""Every result the ``Runtime`` facade returns, as pydantic models (no database imports).

The MCP tools return these models (their ``outputSchema`` is derived from them) and the CLI prints
them, so each field's description is written for the agent that reads it. Keeping them free of the
engine lets the server list its tools without loading DuckDB. The models live in submodules by area
(``app``, ``changes``, ``control``, ``workflows``, ``data``); every one is importable from here.
"""

from __future__ import annotations

from runtime.results.app import (
    ActionResult as ActionResult,
)
from runtime.results.app import (
    ActionSummary as ActionSummary,
)
from runtime.results.app import (
    AppDescription as AppDescription,
)
from runtime.results.app import (
    AuditEntry as AuditEntry,
)
from runtime.results.app import (
    ConnectorSummary as ConnectorSummary,
)
from runtime.results.app import (
    DryRunState as DryRunState,
)
from runtime.results.app import (
    Facet as Facet,
)
from runtime.results.app import (
    InvariantCheck as InvariantCheck,
)
from runtime.results.app import (
    PendingProposal as PendingProposal,
)
from runtime.results.app import (
    ProposalSummary as ProposalSummary,
)
from runtime.results.app import (
    QueryResult as QueryResult,
)
from runtime.results.app import (
    Rows as Rows,
)
from runtime.results.app import (
    SqlCheckResult as SqlCheckResult,
)
from runtime.results.app import (
    VerifyResult as VerifyResult,
)
from runtime.results.app import (
    VersionInfo as VersionInfo,
)
from runtime.results.app import (
    WorkflowSummary as WorkflowSummary,
)
from runtime.results.changes import (
    Check as Check,
)
from runtime.results.changes import (
    DeployResult as DeployResult,
)
from runtime.results.changes import (
    DryRunReport as DryRunReport,
)
from runtime.results.changes import (
    FinalizeResult as FinalizeResult,
)
from runtime.results.changes import (
    Loss as Loss,
)
from runtime.results.changes import (
    ProposalResult as ProposalResult,
)
from runtime.results.changes import (
    RollbackResult as RollbackResult,
)
from runtime.results.changes import (
    StepReport as StepReport,
)
from runtime.results.control import (
    REFUSAL_KEY as REFUSAL_KEY,
)
from runtime.results.control import (
    ActivityBucket as ActivityBucket,
)
from runtime.results.control import (
    ActivityHead as ActivityHead,
)
from runtime.results.control import (
    ApprovalRequest as ApprovalRequest,
)
from runtime.results.control import (
    AuditFacets as AuditFacets,
)
from runtime.results.control import (
    AuditPage as AuditPage,
)
from runtime.results.control import (
    AuditStats as AuditStats,
)
from runtime.results.control import (
    Overview as Overview,
)
from runtime.results.control import (
    ProposalDetail as ProposalDetail,
)
from runtime.results.control import (
    ProposalPage as ProposalPage,
)
from runtime.results.control import (
    ProposalRow as ProposalRow,
)
from runtime.results.control import (
    VersionComparison as VersionComparison,
)
from runtime.results.control import (
    VersionPage as VersionPage,
)
from runtime.results.control import (
    VersionRow as VersionRow,
)
from runtime.results.data import (
    ChildRows as ChildRows,
)
from runtime.results.data import (
    ColumnFacet as ColumnFacet,
)
from runtime.results.data import (
    ColumnInfo as ColumnInfo,
)
from runtime.results.data import (
    DataFilter as DataFilter,
)
from runtime.results.data import (
    DataPage as DataPage,
)
from runtime.results.data import (
    FacetValue as FacetValue,
)
from runtime.results.data import (
    ParentLink as ParentLink,
)
from runtime.results.data import (
    RowDetail as RowDetail,
)
from runtime.results.workflows import (
    AckResult as AckResult,
)
from runtime.results.workflows import (
    ClaimResult as ClaimResult,
)
from runtime.results.workflows import (
    EffectInfo as EffectInfo,
)
from runtime.results.workflows import (
    FailureGroup as FailureGroup,
)
from runtime.results.workflows import (
    MessageInfo as MessageInfo,
)
from runtime.results.workflows import (
    PlannedStep as PlannedStep,
)
from runtime.results.workflows import (
    PublishResult as PublishResult,
)
from runtime.results.workflows import (
    RunChanges as RunChanges,
)
from runtime.results.workflows import (
    RunDetail as RunDetail,
)
from runtime.results.workflows import (
    RunEvent as RunEvent,
)
from runtime.results.workflows import (
    RunHistory as RunHistory,
)
from runtime.results.workflows import (
    RunInfo as RunInfo,
)
from runtime.results.workflows import (
    RunPage as RunPage,
)
from runtime.results.workflows import (
    RunRow as RunRow,
)
from runtime.results.workflows import (
    SignalInfo as SignalInfo,
)
from runtime.results.workflows import (
    StepInfo as StepInfo,
)

__all__ = [
    "REFUSAL_KEY",
    "AckResult",
    "ActionResult",
    "ActionSummary",
    "ActivityBucket",
    "ActivityHead",
    "AppDescription",
    "ApprovalRequest",
    "AuditEntry",
    "AuditFacets",
    "AuditPage",
    "AuditStats",
    "Check",
    "ChildRows",
    "ClaimResult",
    "ColumnFacet",
    "ColumnInfo",
    "ConnectorSummary",
    "DataFilter",
    "DataPage",
    "DeployResult",
    "DryRunReport",
    "DryRunState",
    "EffectInfo",
    "Facet",
    "FacetValue",
    "FailureGroup",
    "FinalizeResult",
    "InvariantCheck",
    "Loss",
    "MessageInfo",
    "Overview",
    "ParentLink",
    "PendingProposal",
    "PlannedStep",
    "ProposalDetail",
    "ProposalPage",
    "ProposalResult",
    "ProposalRow",
    "ProposalSummary",
    "PublishResult",
    "QueryResult",
    "RollbackResult",
    "RowDetail",
    "Rows",
    "RunChanges",
    "RunDetail",
    "RunEvent",
    "RunHistory",
    "RunInfo",
    "RunPage",
    "RunRow",
    "SignalInfo",
    "SqlCheckResult",
    "StepInfo",
    "StepReport",
    "VerifyResult",
    "VersionComparison",
    "VersionInfo",
    "VersionPage",
    "VersionRow",
    "WorkflowSummary",
]
