"""The runtime's public surface as a protocol: what the MCP tools, the server and the CLI may call.

``runtime.runtime.Runtime`` implements it over the database file it owns; ``mcp_server.channel.
RemoteRuntime`` implements it by asking the process that owns the file, over the project's socket.
Everything above the runtime is typed against this protocol, so it works the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from runtime.boundary.policy import Capability, Limits
from runtime.errors import ButtressError
from runtime.results import (
    AckResult,
    ActionResult,
    ActivityHead,
    AppDescription,
    ApprovalRequest,
    AuditEntry,
    AuditPage,
    ClaimResult,
    DataFilter,
    DataPage,
    DeployResult,
    DryRunReport,
    EffectInfo,
    FinalizeResult,
    MessageInfo,
    Overview,
    ProposalDetail,
    ProposalPage,
    ProposalResult,
    ProposalSummary,
    PublishResult,
    QueryResult,
    RollbackResult,
    RowDetail,
    RunChanges,
    RunDetail,
    RunHistory,
    RunInfo,
    RunPage,
    SqlCheckResult,
    VerifyResult,
    VersionComparison,
    VersionInfo,
    VersionPage,
    WorkflowSummary,
)
from runtime.schema.diff import SpecDiff
from runtime.schema.spec import AppSpec

Progress = Callable[[int, int, str], None]
SpecCheck = Callable[[AppSpec], None]

OPERATOR = "operator"
"""The identity of the operator (the CLI): the policy restricts agents, not the operator."""


class RuntimeAPI(Protocol):
    """One application, whichever process owns its database file."""

    @property
    def current(self) -> tuple[int, AppSpec]: ...

    @property
    def limits(self) -> Limits: ...

    spec_checks: list[SpecCheck]

    def on_version_change(self, listener: Callable[[int], None]) -> None: ...

    def authorize(self, actor: str, capability: Capability, *, what: str) -> None: ...

    def record_refusal(
        self, operation: str, actor: str, arguments: dict[str, Any], error: ButtressError
    ) -> None: ...

    def describe(self, *, actor: str = OPERATOR) -> AppDescription: ...

    def versions(self, *, actor: str = OPERATOR) -> list[VersionInfo]: ...

    def version_spec(self, number: int, *, actor: str = OPERATOR) -> AppSpec: ...

    def diff_versions(self, from_version: int, to_version: int, *, actor: str = OPERATOR) -> SpecDiff: ...

    def proposals(self, *, actor: str = OPERATOR, pending: bool = False) -> list[ProposalSummary]: ...

    def query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        *,
        limit: int | None = None,
        actor: str = OPERATOR,
    ) -> QueryResult: ...

    def check_sql(
        self, sql: str, *, proposal_id: str | None = None, actor: str = OPERATOR
    ) -> SqlCheckResult: ...

    def read_audit(
        self, *, limit: int = 50, after_seq: int = 0, operation: str | None = None, actor: str = OPERATOR
    ) -> list[AuditEntry]: ...

    def verify_audit(self, *, actor: str = OPERATOR) -> VerifyResult: ...

    def reanchor_audit(self, *, actor: str = OPERATOR) -> VerifyResult: ...

    def propose(
        self,
        operations: Sequence[Any],
        *,
        base_version: int | None = None,
        note: str | None = None,
        actor: str = OPERATOR,
    ) -> ProposalResult: ...

    def redeploy(self, version: int, *, note: str | None = None, actor: str = OPERATOR) -> ProposalResult: ...

    def dry_run(
        self, proposal_id: str, *, actor: str = OPERATOR, progress: Progress | None = None
    ) -> DryRunReport: ...

    def deploy(
        self,
        proposal_id: str,
        *,
        actor: str = OPERATOR,
        progress: Progress | None = None,
    ) -> DeployResult: ...

    def rollback(
        self,
        *,
        to_version: int | None = None,
        actor: str = OPERATOR,
        progress: Progress | None = None,
    ) -> RollbackResult: ...

    def finalize(self, *, before_version: int, actor: str = OPERATOR) -> FinalizeResult: ...

    def run_action(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str = OPERATOR,
    ) -> ActionResult: ...

    def close(self) -> None: ...

    # workflows and messages

    def start_workflow(
        self,
        workflow: str,
        args: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        actor: str = OPERATOR,
    ) -> RunInfo: ...

    def get_run(self, run_id: str, *, actor: str = OPERATOR) -> RunDetail: ...

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        actor: str = OPERATOR,
    ) -> list[RunInfo]: ...

    def cancel_run(self, run_id: str, *, reason: str | None = None, actor: str = OPERATOR) -> RunInfo: ...

    def signal_run(
        self, run_id: str, name: str, payload: dict[str, Any] | None = None, *, actor: str = OPERATOR
    ) -> RunInfo: ...

    def retry_run(self, run_id: str, *, actor: str = OPERATOR) -> RunInfo: ...

    def resolve_effect(
        self, effect_id: str, outcome: str, *, response: Any = None, actor: str = OPERATOR
    ) -> EffectInfo: ...

    def list_effects(
        self, *, state: str | None = None, run_id: str | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> list[EffectInfo]: ...

    def publish_message(
        self, topic: str, payload: dict[str, Any], *, message_id: str | None = None, actor: str = OPERATOR
    ) -> PublishResult: ...

    def claim_messages(
        self,
        topic: str,
        *,
        consumer: str | None = None,
        limit: int = 10,
        lease_s: float = 30.0,
        actor: str = OPERATOR,
    ) -> ClaimResult: ...

    def ack_messages(
        self, message_ids: Sequence[str], *, consumer: str | None = None, actor: str = OPERATOR
    ) -> AckResult: ...

    def list_messages(
        self, *, topic: str | None = None, undelivered: bool = False, limit: int = 100, actor: str = OPERATOR
    ) -> list[MessageInfo]: ...

    # control room

    def overview(self, *, actor: str = OPERATOR) -> Overview: ...

    def workflow_summary(self, *, actor: str = OPERATOR) -> WorkflowSummary: ...

    def version_page(
        self, *, before: int | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> VersionPage: ...

    def compare_versions(
        self, from_version: int, to_version: int, *, actor: str = OPERATOR
    ) -> VersionComparison: ...

    def proposal_page(
        self,
        *,
        status: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        actor: str = OPERATOR,
    ) -> ProposalPage: ...

    def proposal_detail(self, proposal_id: str, *, actor: str = OPERATOR) -> ProposalDetail: ...

    def approval_requests(self, *, limit: int = 100, actor: str = OPERATOR) -> list[ApprovalRequest]: ...

    def approve_request(self, request_id: str, *, actor: str = OPERATOR) -> ApprovalRequest: ...

    def refuse_request(
        self, request_id: str, *, reason: str = "", actor: str = OPERATOR
    ) -> ApprovalRequest: ...

    def audit_page(
        self,
        *,
        agent: str | None = None,
        operation: str | None = None,
        outcome: str | None = None,
        code: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        since: str | None = None,
        until: str | None = None,
        search: str | None = None,
        hide_operator_reads: bool = False,
        actor: str = OPERATOR,
    ) -> AuditPage: ...

    def activity_head(self, *, actor: str = OPERATOR) -> ActivityHead: ...

    def run_changes(self, since: str | None = None, *, actor: str = OPERATOR) -> RunChanges: ...

    def search_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        search: str | None = None,
        step: str | None = None,
        code: str | None = None,
        runs: Sequence[str] | None = None,
        before: Sequence[str] | None = None,
        limit: int = 50,
        failures: bool = True,
        actor: str = OPERATOR,
    ) -> RunPage: ...

    def run_history(self, run_id: str, *, actor: str = OPERATOR) -> RunHistory: ...

    def browse_data(
        self,
        table: str,
        *,
        filters: Sequence[DataFilter | Mapping[str, Any]] = (),
        sort: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
        facets: Sequence[str] = (),
        suggest: bool = True,
        actor: str = OPERATOR,
    ) -> DataPage: ...

    def read_row(self, table: str, key: Mapping[str, str], *, actor: str = OPERATOR) -> RowDetail: ...

    def export_data(
        self,
        table: str,
        *,
        filters: Sequence[DataFilter | Mapping[str, Any]] = (),
        sort: str | None = None,
        descending: bool = False,
        actor: str = OPERATOR,
    ) -> QueryResult: ...
