"""The control room's operations: the reads and the operator's acts behind ``buttress ui``, each page
one audited read. ``Runtime`` inherits them (``ControlRoom`` is a mixin typed against
``runtime.context.ControlRoomContext``, the members of the runtime it uses), so they are declared
with ``@operation`` like every other operation and collected with them (``runtime.registry.collect``
walks the class's bases). The work is in ``runtime.store``: ``activity`` and its views, ``data_pages``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.boundary import approvals
from runtime.boundary.policy import Capability
from runtime.context import ControlRoomContext
from runtime.errors import ButtressError, Code, PolicyError
from runtime.registry import OPERATOR, Kind, operation
from runtime.results import (
    ActivityHead,
    ApprovalRequest,
    AuditPage,
    DataFilter,
    DataPage,
    Overview,
    ProposalDetail,
    ProposalPage,
    QueryResult,
    RowDetail,
    RunChanges,
    RunHistory,
    RunPage,
    VersionComparison,
    VersionPage,
    WorkflowSummary,
)
from runtime.schema import diff as specdiff
from runtime.schema.spec import AppSpec, WorkflowSpec
from runtime.store import activity, catalog, data_pages
from runtime.store.engine import Tx


class ControlRoom:
    """The control room's operations, mixed into ``Runtime``."""

    @operation(Kind.READ, Capability.READ)
    def overview(self: ControlRoomContext, *, actor: str = OPERATOR) -> Overview:
        """The application at a glance: the current version, how many of each part its spec holds,
        pending proposals (with their dry-run and approval state) and approvals, drift and audit
        status, the agents' latest calls and the work done on their behalf, and their counts over time."""

        def read() -> Overview:
            state = self.state
            parts = {
                name: len(value)
                for name in type(state.spec).model_fields
                if isinstance(value := getattr(state.spec, name), tuple)
            }
            with self.engine.snapshot() as reader:
                latest, count = activity.latest_version(reader)
                return Overview(
                    version=latest,
                    parts=parts,
                    versions=count,
                    pending_proposals=activity.pending_proposals(reader, self.filing, current=state.number),
                    pending_approvals=activity.open_requests(reader, self.filing),
                    drift=self.drift,
                    audit_problem=self.audit.problem,
                    audit_entries=activity.audit_count(reader),
                    recent=activity.recent(reader, operator=OPERATOR),
                    recent_work=activity.recent(reader, operator=OPERATOR, limit=5, work=True),
                    stats=activity.audit_stats(reader, operator=OPERATOR),
                    workflows=activity.workflow_summary(reader),
                )

        return self.reading("overview", actor, {}, read)

    @operation(Kind.READ, Capability.READ)
    def workflow_summary(self: ControlRoomContext, *, actor: str = OPERATOR) -> WorkflowSummary:
        """Runs by state, effects whose outcome is unknown and messages not yet delivered, counted."""

        def read() -> WorkflowSummary:
            with self.engine.snapshot() as reader:
                return activity.workflow_summary(reader)

        return self.reading("workflow_summary", actor, {}, read)

    @operation(Kind.READ, Capability.READ)
    def version_page(
        self: ControlRoomContext, *, before: int | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> VersionPage:
        """Versions newest first, a page at a time (``before``: the number to continue below)."""

        def read() -> VersionPage:
            with self.engine.snapshot() as reader:
                return activity.version_page(reader, before=before, limit=limit)

        return self.reading("version_page", actor, {"before": before, "limit": limit}, read)

    @operation(Kind.READ, Capability.READ, audited="diff_versions")
    def compare_versions(
        self: ControlRoomContext, from_version: int, to_version: int, *, actor: str = OPERATOR
    ) -> VersionComparison:
        """Two versions with their specs and the structural diff between them (``diff_versions``)."""
        args = {"from_version": from_version, "to_version": to_version}

        def read() -> VersionComparison:
            with self.engine.snapshot() as reader:
                old = AppSpec.model_validate(catalog.version_row(reader, from_version)["spec"])
                new = AppSpec.model_validate(catalog.version_row(reader, to_version)["spec"])
                return VersionComparison(
                    before=activity.version_info(reader, from_version),
                    after=activity.version_info(reader, to_version),
                    before_spec=old,
                    after_spec=new,
                    diff=specdiff.diff(old, new, from_version, to_version),
                )

        return self.reading("diff_versions", actor, args, read)

    @operation(Kind.READ, Capability.READ)
    def proposal_page(
        self: ControlRoomContext,
        *,
        status: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        actor: str = OPERATOR,
    ) -> ProposalPage:
        """Proposals newest first, a page at a time, optionally only 'pending', 'deployed' or 'stale'."""
        args = {"status": status, "before_seq": before_seq, "limit": limit}

        def read() -> ProposalPage:
            with self.engine.snapshot() as reader:
                return activity.proposal_page(
                    reader,
                    self.filing,
                    current=self.state.number,
                    status=status,
                    before_seq=before_seq,
                    limit=limit,
                )

        return self.reading("proposal_page", actor, args, read)

    @operation(Kind.READ, Capability.READ, audited="read_proposal")
    def proposal_detail(
        self: ControlRoomContext, proposal_id: str, *, actor: str = OPERATOR
    ) -> ProposalDetail:
        """A proposal in full: operations, the plan's steps (SQL, strategy, hazards), its latest
        dry-run report (values lost, sample rows) and its approval requests."""

        def read() -> ProposalDetail:
            with self.engine.snapshot() as reader:
                return activity.proposal_detail(reader, self.filing, proposal_id, current=self.state.number)

        return self.reading("read_proposal", actor, {"proposal_id": proposal_id}, read)

    @operation(Kind.READ, Capability.READ, audited="list_approvals", cli=("approve",))
    def approval_requests(
        self: ControlRoomContext, *, limit: int = 100, actor: str = OPERATOR
    ) -> list[ApprovalRequest]:
        """Approval requests: every open one, then the latest decided, with hazards and the losses
        the last dry-run of each plan found."""

        def read() -> list[ApprovalRequest]:
            with self.engine.snapshot() as reader:
                return activity.approval_requests(reader, self.filing, limit=limit)

        return self.reading("list_approvals", actor, {"limit": limit}, read)

    @operation(Kind.CHANGE, None, audited="approve", cli=("approve",), acts=("approve",))
    def approve_request(
        self: ControlRoomContext, request_id: str, *, actor: str = OPERATOR
    ) -> ApprovalRequest:
        """Approve an agent's pending request as ``buttress approve`` does (``approvals.approve``: signed
        with the operator secret, bound to the plan, single use, until it expires), and audit it."""
        return _decide(self, request_id, approve=True, reason="", actor=actor)

    @operation(Kind.CHANGE, None, audited="refuse", acts=("refuse",))
    def refuse_request(
        self: ControlRoomContext, request_id: str, *, reason: str = "", actor: str = OPERATOR
    ) -> ApprovalRequest:
        """Refuse an agent's request (``approvals.refuse``): the agent's retry of that plan is answered
        with ``policy.denied`` and the reason; an approval not yet used is revoked. Audited."""
        return _decide(self, request_id, approve=False, reason=reason, actor=actor)

    @operation(Kind.READ, Capability.READ)
    def audit_page(
        self: ControlRoomContext,
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
    ) -> AuditPage:
        """Audit entries newest first, filtered by who (``agent``), operation, outcome, error code, a
        time range (``since``/``until``: ISO 8601 prefixes, ``until`` inclusive) and text found in
        the arguments, proposal or actor (``search``), optionally without the operator's own reads;
        a page at a time, with the values there are to filter on."""
        args = {
            "agent": agent,
            "operation": operation,
            "outcome": outcome,
            "code": code,
            "before_seq": before_seq,
            "limit": limit,
            **{
                k: v
                for k, v in (
                    ("since", since),
                    ("until", until),
                    ("search", search),
                    ("hide_operator_reads", hide_operator_reads or None),
                )
                if v
            },
        }

        def read() -> AuditPage:
            with contextlib.suppress(ButtressError):  # a busy lane: read what committed
                self.flush_reads()
            with self.engine.snapshot() as reader:
                return activity.audit_page(
                    reader,
                    actor=agent,
                    operation=operation,
                    outcome=outcome,
                    code=code,
                    since=since,
                    until=until,
                    search=search,
                    hide_operator_reads=hide_operator_reads,
                    before_seq=before_seq,
                    limit=limit,
                )

        return self.reading("audit_page", actor, args, read)

    @operation(Kind.READ, Capability.READ, polled=True)
    def activity_head(self: ControlRoomContext, *, actor: str = OPERATOR) -> ActivityHead:
        """The current version, the newest agent audit entry and the open approval requests: what a
        watcher polls to know that something happened.

        Authorized like any read but not audited: it is polled every few seconds, and a row per poll
        would itself be new activity (refusals are audited)."""
        with self.refusing("activity_head", actor, {}):
            self.authorize(actor, Capability.READ, what="watch activity")
        with self.engine.snapshot() as reader:
            return ActivityHead(
                version=self.state.number,
                agent_seq=activity.agent_head(reader, operator=OPERATOR),
                pending_approvals=activity.open_requests(reader, self.filing),
                unknown_effects=activity.unknown_effects(reader),
            )

    @operation(Kind.READ, Capability.READ, polled=True)
    def run_changes(
        self: ControlRoomContext, since: str | None = None, *, actor: str = OPERATOR
    ) -> RunChanges:
        """Runs whose row changed after ``since`` (an ``updated_at`` from an earlier answer; None: the
        newest mark only): what a server polls to tell subscribed clients that a run moved on.

        Authorized like any read but not audited (it is polled; refusals are audited)."""
        with self.refusing("run_changes", actor, {}):
            self.authorize(actor, Capability.READ, what="watch runs")
        with self.engine.snapshot() as reader:
            mark = str(reader.scalar("SELECT coalesce(max(updated_at), '') FROM _buttress.runs"))
            if since is None:
                return RunChanges(mark=mark, runs=[])
            rows = reader.fetchall(
                "SELECT run_id FROM _buttress.runs WHERE updated_at > ? ORDER BY updated_at LIMIT 1000",
                [since],
            )
        return RunChanges(mark=mark, runs=[str(r[0]) for r in rows])

    @operation(Kind.READ, Capability.READ)
    def search_runs(
        self: ControlRoomContext,
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
    ) -> RunPage:
        """Runs newest first, a page at a time (``before``: the previous page's ``next_before``),
        filtered by workflow, state (``active``: unfinished), the step they are at or stopped at, their
        error's code, text found in their id, arguments, error or starter, and among the ids ``runs``;
        with how many match and the failed and blocked runs grouped by how they stopped."""
        cursor = (str(before[0]), str(before[1])) if before else None
        wanted = activity.RunSearch(
            workflow=workflow,
            status=status,
            search=search,
            step=step,
            code=code,
            runs=tuple(runs) if runs is not None else None,
        )
        args = wanted.arguments() | {"limit": limit} | ({"before": list(cursor)} if cursor else {})

        def read() -> RunPage:
            with self.engine.snapshot() as reader:
                return activity.search_runs(
                    reader,
                    functools.partial(_pinned, self),
                    wanted,
                    before=cursor,
                    limit=limit,
                    failures=failures,
                )

        return self.reading("search_runs", actor, args, read)

    @operation(Kind.READ, Capability.READ)
    def run_history(self: ControlRoomContext, run_id: str, *, actor: str = OPERATOR) -> RunHistory:
        """A run's whole history: every step of the definition it follows (completed, failed, current,
        to come) with its attempts, errors and times, its compensations, signals and effects, and
        every audited event on it, the operator's retries, cancels and resolutions included."""

        def read() -> RunHistory:
            with self.engine.snapshot() as reader:
                return activity.run_history(reader, functools.partial(_pinned, self), run_id)

        return self.reading("run_history", actor, {"run_id": run_id}, read)

    # The Data page: statements written by runtime.store.browse from names checked against the
    # current spec, with values bound as parameters, run through ``_query`` (the query tool's guard
    # and limits) by runtime.store.data_pages, one audit row per page.

    @operation(Kind.READ, Capability.READ)
    def browse_data(
        self: ControlRoomContext,
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
    ) -> DataPage:
        """A page of an entity's or a view's rows: filtered (``filters``: column, op, value), sorted
        (``sort``, ``descending``; then by key), counted (the table and the matching rows), with the
        value counts of the ``facets`` asked for and of the low-cardinality columns (``suggest``).
        Every statement goes through the query guard and limits; the page is one audited read."""
        wanted = [DataFilter.model_validate(f) for f in filters]
        args: dict[str, Any] = {
            "table": table,
            "filters": [f.model_dump() for f in wanted],
            "sort": sort,
            "descending": descending,
            "offset": offset,
            "limit": limit,
            "facets": list(facets),
        }

        return self.reading(
            "browse_data",
            actor,
            args,
            lambda: data_pages.browse_data(
                _data_source(self),
                table,
                wanted,
                sort=sort,
                descending=descending,
                offset=offset,
                limit=limit,
                facets=facets,
                suggest=suggest,
            ),
        )

    @operation(Kind.READ, Capability.READ)
    def read_row(
        self: ControlRoomContext, table: str, key: Mapping[str, str], *, actor: str = OPERATOR
    ) -> RowDetail:
        """One row of an entity by its primary key (each key column's value as text), with the rows
        its reference fields point to and the rows of other entities pointing to it (counted, the first
        few shown). Through the query guard and limits; one audited read."""
        wanted = {str(k): str(v) for k, v in key.items()}

        return self.reading(
            "read_row",
            actor,
            {"table": table, "key": wanted},
            lambda: data_pages.read_row(_data_source(self), table, wanted),
        )

    @operation(Kind.READ, Capability.READ)
    def export_data(
        self: ControlRoomContext,
        table: str,
        *,
        filters: Sequence[DataFilter | Mapping[str, Any]] = (),
        sort: str | None = None,
        descending: bool = False,
        actor: str = OPERATOR,
    ) -> QueryResult:
        """The matching rows of an entity or a view, sorted, as many as the query limits allow
        (``truncated`` says when more matched): what the Data page exports as CSV or JSON. One
        audited read."""
        wanted = [DataFilter.model_validate(f) for f in filters]
        args = {
            "table": table,
            "filters": [f.model_dump() for f in wanted],
            "sort": sort,
            "descending": descending,
        }

        return self.reading(
            "export_data",
            actor,
            args,
            lambda: data_pages.export_data(
                _data_source(self), table, wanted, sort=sort, descending=descending
            ),
        )


def _decide(
    rt: ControlRoomContext, request_id: str, *, approve: bool, reason: str, actor: str
) -> ApprovalRequest:
    operation = "approve" if approve else "refuse"
    args: dict[str, Any] = {"request_id": request_id, **({} if approve else {"reason": reason})}
    database = rt.filing

    def act(tx: Tx) -> None:
        if actor != OPERATOR:
            raise PolicyError(
                Code.POLICY_DENIED,
                f"only the operator may {operation} an approval request",
                hint="Approvals come from the operator (buttress approve, or the control room).",
            )
        row = approvals.decidable(tx, database, request_id, approving=approve)
        number = rt.state.number
        rt.audit.append(
            tx,
            actor=actor,
            operation=operation,
            arguments=args,
            outcome="ok",
            version_before=number,
            version_after=number,
            proposal_id=None if str(row["proposal_id"]).startswith("rollback:") else row["proposal_id"],
        )

        # filed with its audit row: a row of the shared database in this transaction, or a file beside
        # the database once it commits (before the next writer runs)
        if approve:
            approvals.approve(database, row, approved_by=actor, tx=tx)
        else:
            approvals.refuse(database, row, refused_by=actor, reason=reason, tx=tx)

    rt.audited(operation, actor, args, act)
    with rt.engine.snapshot() as reader:
        return activity.approval_request(reader, database, request_id)


def _pinned(rt: ControlRoomContext, version: int, workflow: str) -> WorkflowSpec | None:
    """The definition a run follows (its workflow at its pinned version), or None if unknown."""
    try:
        return rt.scheduler.definition(version, workflow)
    except ButtressError:
        return None


def _data_source(rt: ControlRoomContext) -> data_pages.DataSource:
    def columns(table: str) -> list[tuple[str, str]]:
        with rt.engine.snapshot() as reader:
            found = reader.fetchall(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
                "current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                [table],
            )
        return [(str(c), str(t)) for c, t in found]

    return data_pages.DataSource(
        spec=rt.state.spec, columns=columns, query=rt._query, max_rows=rt.limits.max_rows
    )
