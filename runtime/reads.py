"""The read side of the runtime: the application described, its versions and their diffs, the
proposals, the ``query`` tool's guarded read and ``check_sql``, and the audit log read, verified and
re-anchored. ``Runtime`` inherits them (``Reads`` is a mixin typed against
``runtime.context.ReadContext``); each declares itself with ``@operation``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, cast

from runtime.boundary.policy import Capability
from runtime.context import ReadContext
from runtime.errors import ButtressError, Code, PolicyError, SqlError
from runtime.logic import invariants, summary
from runtime.logic.prepared import invariant_checks
from runtime.registry import OPERATOR, Kind, operation
from runtime.results import (
    AppDescription,
    AuditEntry,
    ConnectorSummary,
    InvariantCheck,
    PendingProposal,
    ProposalSummary,
    QueryResult,
    SqlCheckResult,
    VerifyResult,
    VersionInfo,
)
from runtime.schema import diff as specdiff
from runtime.schema.spec import AppSpec
from runtime.sql import sqlcheck
from runtime.store import activity, catalog
from runtime.store import audit as audit_log
from runtime.store.values import fetch


class Reads:
    """The reads every surface offers, mixed into ``Runtime``."""

    @operation(Kind.READ, Capability.READ, audited="describe_app", tools=("describe_app",), cli=("describe",))
    def describe(self: ReadContext, *, actor: str = OPERATOR) -> AppDescription:
        """The application at its current version: spec, actions, pending proposals, drift."""
        return self.reading("describe_app", actor, {}, functools.partial(_describe, self))

    @operation(
        Kind.READ, Capability.READ, audited="list_versions", tools=("list_versions",), cli=("versions",)
    )
    def versions(self: ReadContext, *, actor: str = OPERATOR) -> list[VersionInfo]:
        """Every version, oldest first."""

        def read() -> list[VersionInfo]:
            with self.engine.snapshot() as reader:
                return [VersionInfo.model_validate(v) for v in catalog.versions(reader)]

        return self.reading("list_versions", actor, {}, read)

    @operation(Kind.READ, Capability.READ, audited="read_version")
    def version_spec(self: ReadContext, number: int, *, actor: str = OPERATOR) -> AppSpec:
        """The spec deployed as version ``number``."""

        def read() -> AppSpec:
            with self.engine.snapshot() as reader:
                return AppSpec.model_validate(catalog.version_row(reader, number)["spec"])

        return self.reading("read_version", actor, {"version": number}, read)

    @operation(Kind.READ, Capability.READ, tools=("diff_versions",), cli=("diff",))
    def diff_versions(
        self: ReadContext, from_version: int, to_version: int, *, actor: str = OPERATOR
    ) -> specdiff.SpecDiff:
        """A structural diff between the specs of two versions."""
        args = {"from_version": from_version, "to_version": to_version}

        def read() -> specdiff.SpecDiff:
            with self.engine.snapshot() as reader:
                old = AppSpec.model_validate(catalog.version_row(reader, from_version)["spec"])
                new = AppSpec.model_validate(catalog.version_row(reader, to_version)["spec"])
            return specdiff.diff(old, new, from_version, to_version)

        return self.reading("diff_versions", actor, args, read)

    @operation(Kind.READ, Capability.READ, audited="list_proposals", cli=("proposals",))
    def proposals(
        self: ReadContext, *, actor: str = OPERATOR, pending: bool = False
    ) -> list[ProposalSummary]:
        """Every stored proposal, newest first (``pending``: only those on the current version)."""

        def read() -> list[ProposalSummary]:
            number, _ = self.current
            with self.engine.snapshot() as reader:
                found = [ProposalSummary.model_validate(p) for p in catalog.proposal_list(reader, number)]
            return [p for p in found if p.status == "pending"] if pending else found

        return self.reading("list_proposals", actor, {"pending": pending}, read)

    @operation(Kind.READ, Capability.QUERY, tools=("query",), cli=("query",))
    def query(
        self: ReadContext,
        sql: str,
        params: dict[str, Any] | None = None,
        *,
        limit: int | None = None,
        actor: str = OPERATOR,
    ) -> QueryResult:
        """One read-only SELECT, allow-listed, on a snapshot, within the row, byte and time limits."""
        args = {"sql": sql, "params": sorted((params or {}).keys()), "limit": limit}
        with self.refusing("query", actor, args):
            self.authorize(actor, Capability.QUERY, what="query data")
            result = self._query(sql, params or {}, limit)
        self.record_read("query", actor, args)
        return result

    def _query(self: ReadContext, sql: str, params: dict[str, Any], limit: int | None) -> QueryResult:
        max_rows = self.limits.max_rows
        limit = max_rows if limit is None else limit
        if limit < 1 or limit > max_rows:
            raise ButtressError(
                Code.LIMIT_EXCEEDED,
                f"limit must be between 1 and {max_rows}",
                hint=f"Ask for at most {max_rows} rows and page with WHERE/OFFSET.",
            )
        state = self.state
        try:
            analysis = sqlcheck.analyze_query(sql, state.relations, max_length=self.limits.max_sql_length)
        except SqlError as error:  # a table another server's version added: catch up once
            if error.code not in (Code.SQL_UNKNOWN_TABLE, Code.SQL_UNKNOWN_COLUMN):
                raise
            self.catch_up()  # (or this server's change feed took it meanwhile)
            if self.state is state:
                raise
            analysis = sqlcheck.analyze_query(
                sql, self.state.relations, max_length=self.limits.max_sql_length
            )
        missing = [p for p in analysis.params if p not in params]
        extra = [p for p in params if p not in analysis.params]
        if missing or extra:
            raise SqlError(
                Code.SQL_PARAM,
                f"parameters do not match: missing {missing}, unexpected {extra}",
                hint="Pass exactly the $names the statement uses in params.",
                details={"missing": missing, "unexpected": extra},
            )
        deadline = time.monotonic() + self.limits.query_timeout_s

        def run() -> QueryResult:
            left = max(0.0, deadline - time.monotonic())
            as_agent: dict[str, bool] = {"agent": True} if self.agent_role else {}
            with cast(Any, self.engine).snapshot(timeout=left, single=True, **as_agent) as reader:
                result = reader.execute_agent(analysis.sql, params or None)
                columns = [d[0] for d in result.description or []]
                rows, truncated = fetch(
                    result, max_rows=limit, max_bytes=self.limits.max_result_bytes, deadline=reader.deadline
                )
                reader.unread = truncated
            # built from values the runtime just converted: validating 2,000 rows again would only copy them
            return QueryResult.model_construct(
                columns=columns, rows=rows, row_count=len(rows), truncated=truncated
            )

        return self.engine.sharing_memory(run, budget=self.limits.query_timeout_s)

    @operation(Kind.READ, Capability.READ, tools=("check_sql",))
    def check_sql(
        self: ReadContext, sql: str, *, proposal_id: str | None = None, actor: str = OPERATOR
    ) -> SqlCheckResult:
        """Analyse a statement against the current spec, or a proposal's target spec, without running it.

        A statement the guard refuses is an answer (``ok`` false), and audited as a refusal with its code.
        """
        args = {"sql": sql, "proposal_id": proposal_id}
        number, spec = self.current
        with self.refusing("check_sql", actor, args):
            self.authorize(actor, Capability.READ, what="check SQL")
            if proposal_id is not None:
                with self.engine.snapshot() as reader:
                    spec = catalog.proposal(reader, proposal_id)["target"]
            try:
                analysis = sqlcheck.analyze_statement(
                    sql, spec.relations(), allow_writes=True, max_length=self.limits.max_sql_length
                )
            except ButtressError as error:  # the guard's refusal is this read's answer, audited as one
                self.record_refusal("check_sql", actor, args, error)
                return SqlCheckResult(
                    ok=False, against_version=number, proposal_id=proposal_id, error=error.to_dict()
                )
        self.record_read("check_sql", actor, args)
        return SqlCheckResult(
            ok=True,
            kind=analysis.kind,
            reads=sorted(analysis.reads),
            writes=sorted(analysis.writes),
            params=list(analysis.params),
            output_columns=list(analysis.output_columns),
            fields_read=sorted(".".join(f) for f in analysis.columns_read),
            fields_written=sorted(".".join(f) for f in analysis.columns_written),
            against_version=number,
            proposal_id=proposal_id,
            as_invariant=invariants.explain(sql, spec) if analysis.kind == "select" else None,
        )

    @operation(Kind.READ, Capability.READ, tools=("read_audit",), cli=("audit show",))
    def read_audit(
        self: ReadContext,
        *,
        limit: int = 50,
        after_seq: int = 0,
        operation: str | None = None,
        actor: str = OPERATOR,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries, or with ``after_seq`` the first ``limit`` after it (paging)."""
        args = {"limit": limit, "after_seq": after_seq, "operation": operation}

        def read() -> list[AuditEntry]:
            with contextlib.suppress(ButtressError):  # a busy lane: read what committed; the rest follows
                self.flush_reads()
            with self.engine.snapshot() as reader:
                return audit_log.recent(
                    reader, limit=min(max(limit, 1), 1000), after_seq=after_seq, operation=operation
                )

        return self.reading("read_audit", actor, args, read)

    @operation(Kind.READ, Capability.READ, cli=("audit verify",), acts=("verify_audit",))
    def verify_audit(self: ReadContext, *, actor: str = OPERATOR) -> VerifyResult:
        """Recompute the hash chain and check it against the anchor."""

        def read() -> VerifyResult:
            self.flush_reads()
            with self.engine.snapshot() as reader:
                return audit_log.verify(reader, self.audit.anchor)

        return self.reading("verify_audit", actor, {}, read)

    @operation(Kind.CHANGE, None, cli=("audit reanchor",))
    def reanchor_audit(self: ReadContext, *, actor: str = OPERATOR) -> VerifyResult:
        """Anchor the audit chain as it is now, after the operator read why the old anchor disagreed.

        The operator only; the previous problem is kept in the audit log itself.
        """
        if actor != OPERATOR:
            raise PolicyError(Code.POLICY_DENIED, "only the operator re-anchors the audit log")
        problem = self.audit.problem
        with self.engine.snapshot() as reader:
            before = audit_log.verify(reader)
        if not before.ok:
            raise ButtressError(
                Code.AUDIT_BROKEN,
                f"the chain itself is broken ({before.problem}); it cannot be re-anchored",
                hint="Restore the database from a backup; a broken chain cannot be made whole.",
                details=before.model_dump(),
            )
        with self.engine.transaction(wait=self.limits.lane_wait_s) as tx:
            self.audit.append(
                tx,
                actor=actor,
                operation="reanchor_audit",
                arguments={"previous_problem": problem},
                outcome="ok",
                version_before=self.current[0],
                version_after=self.current[0],
            )
        with self.engine.snapshot() as reader:
            self.audit.reanchor(reader)
        return self.verify_audit(actor=actor)


def _describe(rt: ReadContext) -> AppDescription:
    number, spec = rt.current
    with rt.engine.snapshot() as reader:
        pending = catalog.pending_proposals(reader, number)
        work = activity.workflow_summary(reader) if spec.workflows or spec.topics else None
    checks = [
        InvariantCheck(name=c.name, incremental=c.incremental, reason=c.reason)
        for c in invariant_checks(spec)
    ]
    return AppDescription(
        version=number,
        hash=spec.hash(),
        spec=spec,
        actions=summary.action_summaries(spec),
        invariant_checks=checks,
        pending_proposals=[PendingProposal.model_validate(p) for p in pending],
        drift=rt.drift,
        audit_problem=rt.audit.problem,
        connectors=[
            ConnectorSummary(name=name, description=connector.description)
            for name, connector in sorted(rt.policy.connectors.items())
        ],
        work=work,
        policy=rt.policy.origin,
        policy_problem=rt.policy.origin.problem if rt.policy.origin else None,
    )
