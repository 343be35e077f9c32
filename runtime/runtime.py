"""``Runtime``: the public face of the embedded runtime. It knows nothing of MCP.

Each method is one typed operation that the MCP tools and the CLI project; each appends one
audit row (refusals included) on the writer lane.

>>> import tempfile, pathlib
>>> rt = Runtime.open(pathlib.Path(tempfile.mkdtemp()) / "app.duckdb")
>>> rt.describe().version
0
>>> rt.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from runtime.boundary import approvals
from runtime.boundary.policy import Capability, Limits, Policy, check_action_access, check_protected
from runtime.errors import ButtressError, Code, EngineError, NotFound, PolicyError, SqlError
from runtime.logic.actions import ActionResult, ActionRunner
from runtime.migrate import deploy
from runtime.migrate.deploy import Progress, RollbackResult
from runtime.schema import diff as specdiff
from runtime.schema.changes import AddAction, Operation, ReplaceAction, check_action
from runtime.schema.spec import AppSpec
from runtime.sql import sqlcheck
from runtime.store import audit as audit_log
from runtime.store import catalog, fingerprint
from runtime.store.audit import AuditEntry, AuditLog, VerifyResult
from runtime.store.engine import Engine, Settings, Tx
from runtime.store.values import plain

T = TypeVar("T")

OPERATOR = "operator"
READ_AUDIT_DELAY = 0.05  # the identity of the CLI; the policy restricts agents, not the operator


class VersionInfo(BaseModel):
    number: int
    hash: str
    kind: str
    parent: int | None = None
    restores: int | None = None
    proposal_id: str | None = None
    note: str | None = None
    deployed_at: str
    deployed_by: str


class AppDescription(BaseModel):
    version: int
    hash: str
    spec: AppSpec
    actions: list[dict[str, Any]]
    pending_proposals: list[dict[str, Any]]
    drift: list[str]


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool


class SqlCheckResult(BaseModel):
    ok: bool
    kind: str | None = None
    reads: list[str] = []
    writes: list[str] = []
    params: list[str] = []
    output_columns: list[str] = []
    against_version: int
    proposal_id: str | None = None
    error: dict[str, Any] | None = None


class Runtime:
    """One application in one DuckDB file, owned by this process."""

    def __init__(
        self,
        engine: Engine,
        *,
        audit_reads: bool = True,
        limits: Limits | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.engine = engine
        self.audit = AuditLog()
        self.audit_reads = audit_reads
        self.policy = policy or Policy()
        self.limits = limits or self.policy.limits
        self._expected: dict[str, fingerprint.Fingerprint] = {}
        self._listeners: list[Callable[[int], None]] = []
        self._state_lock = threading.Lock()
        self._actions = ActionRunner(self)
        self._reads: list[tuple[str, str, dict[str, Any], int]] = []
        self._reads_lock = threading.Lock()
        self._flusher: threading.Timer | None = None
        with engine.transaction() as tx:
            catalog.install(tx)
            self._refresh(tx)
        self.drift = self.check_drift()

    @classmethod
    def open(cls, path: str | Path, **options: Any) -> Runtime:
        """Open (or create) the database file and install the system schema.

        Memory, spilling and threads come from ``limits`` (else the policy's limits); DuckDB spills
        into ``.buttress/spill`` beside the database.
        """
        policy: Policy = options.get("policy") or Policy()
        limits: Limits = options.get("limits") or policy.limits
        settings = Settings(
            memory_limit_mb=limits.memory_limit_mb,
            spill_directory=str(Path(path).resolve().parent / ".buttress" / "spill"),
            max_spill_mb=limits.max_spill_mb,
            threads=limits.threads,
        )
        return cls(Engine(path, settings=settings), **options)

    def close(self) -> None:
        timer = self._flusher
        if timer is not None:
            timer.cancel()
        self.flush_reads()
        self.engine.close()

    # -------------------------------------------------------------------------------- internals

    def _refresh(self, tx: Tx | None = None) -> None:
        if tx is None:
            with self.engine.snapshot() as cursor:
                number, spec = catalog.current_version(cursor)
        else:
            number, spec = catalog.current_version(tx)
        with self._state_lock:
            self._current = (number, spec, spec.relations())

    @property
    def current(self) -> tuple[int, AppSpec]:
        number, spec, _ = self._current
        return number, spec

    def expected_catalog(self, spec: AppSpec) -> fingerprint.Fingerprint:
        key = spec.hash()
        if key not in self._expected:
            self._expected[key] = fingerprint.expected(spec, self.engine.scratch)
        return self._expected[key]

    def check_drift(self) -> list[str]:
        """Differences between the live catalog and the active spec (empty when none)."""
        _, spec = self.current
        with self.engine.snapshot() as cursor:
            return fingerprint.diff(self.expected_catalog(spec), fingerprint.read(cursor))

    def on_version_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(version)`` after every deploy and rollback (e.g. to announce tools)."""
        self._listeners.append(listener)

    def after_version_change(self, version: int) -> None:
        self._refresh()
        self.drift = self.check_drift()
        for listener in list(self._listeners):
            listener(version)

    def policy_check_proposal(self, ops: Sequence[Operation], actor: str = OPERATOR) -> None:
        """The operator policy's word on an agent's proposal: protected entities and fields, proposal size."""
        if actor != OPERATOR:
            check_protected(self.policy, ops)
        if len(ops) > self.limits.max_operations:
            raise ButtressError(
                Code.LIMIT_EXCEEDED,
                f"a proposal may hold at most {self.limits.max_operations} operations",
                hint="Split the change into several proposals.",
                details={"operations": len(ops)},
            )

    def policy_check_actions(self, target: AppSpec, ops: Sequence[Operation], actor: str = OPERATOR) -> None:
        """Actions an agent adds or replaces may not write protected entities."""
        if actor == OPERATOR:
            return
        relations = target.relations()
        entities = frozenset(e.name for e in target.entities)
        for op in ops:
            if isinstance(op, AddAction | ReplaceAction):
                found = check_action(op.action, relations, entities)
                reads = frozenset().union(*(a.reads for a in found))
                writes = frozenset().union(*(a.writes for a in found))
                check_action_access(self.policy, reads, writes, op.action.name)

    def audited(self, operation: str, actor: str, arguments: dict[str, Any], act: Callable[[Tx], T]) -> T:
        """Run ``act`` in one writer transaction; audit a refusal in its own transaction."""
        try:
            with self.engine.transaction() as tx:
                return act(tx)
        except ButtressError as error:
            self.record_refusal(operation, actor, arguments, error)
            raise
        except Exception as error:
            wrapped = EngineError(
                Code.ENGINE_ERROR,
                f"internal error during {operation}",
                hint="Nothing was committed. Report this with the audit sequence number.",
                details={"kind": type(error).__name__},
            )
            self.record_refusal(operation, actor, arguments, wrapped)
            raise wrapped from error

    def run_refusable(
        self, operation: str, actor: str, arguments: dict[str, Any], act: Callable[[Tx], None]
    ) -> None:
        self.audited(operation, actor, arguments, act)

    def record_refusal(
        self, operation: str, actor: str, arguments: dict[str, Any], error: ButtressError
    ) -> None:
        number, _ = self.current
        with self.engine.transaction() as tx:
            self.audit.append(
                tx,
                actor=actor,
                operation=operation,
                arguments=arguments,
                outcome="refused",
                error_code=str(error.code),
                version_before=number,
                version_after=number,
                proposal_id=arguments.get("proposal_id")
                if isinstance(arguments.get("proposal_id"), str)
                else None,
            )

    def record_read(self, operation: str, actor: str, arguments: dict[str, Any]) -> None:
        """Audit a successful read. Reads change nothing, so their rows are group-committed shortly
        after (at most ``READ_AUDIT_DELAY`` seconds later, and always before any audit is read)."""
        if not self.audit_reads or actor == OPERATOR:
            return  # the operator's own reads (CLI) are not agent actions; its changes are audited
        number, _ = self.current
        with self._reads_lock:
            self._reads.append((operation, actor, arguments, number))
            if self._flusher is None:
                self._flusher = threading.Timer(READ_AUDIT_DELAY, self.flush_reads)
                self._flusher.daemon = True
                self._flusher.start()

    def flush_reads(self) -> None:
        """Write buffered read audit rows in one writer transaction."""
        with self._reads_lock:
            pending, self._reads, self._flusher = self._reads, [], None
        if not pending:
            return
        with self.engine.transaction() as tx:
            for operation, actor, arguments, number in pending:
                self.audit.append(
                    tx,
                    actor=actor,
                    operation=operation,
                    arguments=arguments,
                    outcome="ok",
                    version_before=number,
                    version_after=number,
                )

    # --------------------------------------------------------------------------------- the read side

    def describe(self, *, actor: str = OPERATOR) -> AppDescription:
        self.record_read("describe_app", actor, {})
        number, spec = self.current
        with self.engine.snapshot() as cursor:
            pending = catalog.pending_proposals(cursor, number)
        relations = spec.relations()
        actions = []
        for action in spec.actions:
            reads: set[str] = set()
            writes: set[str] = set()
            for statement in action.statements:
                try:
                    analysis = sqlcheck.analyze_statement(
                        statement, relations, allow_writes=action.kind == "mutation"
                    )
                except ButtressError:
                    continue
                reads |= analysis.reads
                writes |= analysis.writes
            actions.append(
                {
                    "name": action.name,
                    "kind": action.kind,
                    "description": action.description,
                    "params": [p.model_dump() for p in action.params],
                    "reads": sorted(reads),
                    "writes": sorted(writes),
                    "tool": f"app_{action.name}",
                }
            )
        return AppDescription(
            version=number,
            hash=spec.hash(),
            spec=spec,
            actions=actions,
            pending_proposals=pending,
            drift=self.drift,
        )

    def versions(self, *, actor: str = OPERATOR) -> list[VersionInfo]:
        self.record_read("list_versions", actor, {})
        with self.engine.snapshot() as cursor:
            return [VersionInfo.model_validate(v) for v in catalog.versions(cursor)]

    def version_spec(self, number: int) -> AppSpec:
        with self.engine.snapshot() as cursor:
            return AppSpec.model_validate(catalog.version_row(cursor, number)["spec"])

    def diff_versions(
        self, from_version: int, to_version: int, *, actor: str = OPERATOR
    ) -> specdiff.SpecDiff:
        args = {"from_version": from_version, "to_version": to_version}
        try:
            result = specdiff.diff(
                self.version_spec(from_version), self.version_spec(to_version), from_version, to_version
            )
        except ButtressError as error:
            self.record_refusal("diff_versions", actor, args, error)
            raise
        self.record_read("diff_versions", actor, args)
        return result

    def query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        *,
        limit: int | None = None,
        actor: str = "operator",
    ) -> QueryResult:
        """One read-only SELECT, allow-listed, on a snapshot, with a row limit and a time limit."""
        args = {"sql": sql[:2000], "params": sorted((params or {}).keys()), "limit": limit}
        try:
            result = self._query(sql, params or {}, limit)
        except ButtressError as error:
            self.record_refusal("query", actor, args, error)
            raise
        self.record_read("query", actor, args)
        return result

    def _query(self, sql: str, params: dict[str, Any], limit: int | None) -> QueryResult:
        max_rows = self.limits.max_rows
        limit = max_rows if limit is None else limit
        if limit < 1 or limit > max_rows:
            raise ButtressError(
                Code.LIMIT_EXCEEDED,
                f"limit must be between 1 and {max_rows}",
                hint=f"Ask for at most {max_rows} rows and page with WHERE/OFFSET.",
            )
        _, _, relations = self._current
        analysis = sqlcheck.analyze_query(sql, relations, max_length=self.limits.max_sql_length)
        missing = [p for p in analysis.params if p not in params]
        extra = [p for p in params if p not in analysis.params]
        if missing or extra:
            raise SqlError(
                Code.SQL_PARAM,
                f"parameters do not match: missing {missing}, unexpected {extra}",
                hint="Pass exactly the $names the statement uses in params.",
                details={"missing": missing, "unexpected": extra},
            )
        with self.engine.snapshot(timeout=self.limits.query_timeout_s, single=True) as cursor:
            try:
                result = cursor.execute(analysis.sql, params) if params else cursor.execute(analysis.sql)
                columns = [d[0] for d in result.description or []]
                rows = result.fetchmany(limit + 1)
            except Exception as error:
                import duckdb

                from runtime.store.engine import translate

                if isinstance(error, duckdb.Error):
                    raise translate(error) from None
                raise
        truncated = len(rows) > limit
        rows = rows[:limit]
        return QueryResult(
            columns=columns,
            rows=[[plain(v) for v in row] for row in rows],
            row_count=len(rows),
            truncated=truncated,
        )

    def check_sql(
        self, sql: str, *, proposal_id: str | None = None, actor: str = "operator"
    ) -> SqlCheckResult:
        """Analyse a statement against the current spec, or a proposal's target spec, without running it."""
        number, spec = self.current
        if proposal_id is not None:
            with self.engine.snapshot() as cursor:
                spec = catalog.proposal(cursor, proposal_id)["target"]
        relations = spec.relations()
        try:
            analysis = sqlcheck.analyze_statement(sql, relations, allow_writes=True)
        except ButtressError as error:
            return SqlCheckResult(
                ok=False, against_version=number, proposal_id=proposal_id, error=error.to_dict()
            )
        self.record_read("check_sql", actor, {"sql": sql[:2000], "proposal_id": proposal_id})
        return SqlCheckResult(
            ok=True,
            kind=analysis.kind,
            reads=sorted(analysis.reads),
            writes=sorted(analysis.writes),
            params=list(analysis.params),
            output_columns=list(analysis.output_columns),
            against_version=number,
            proposal_id=proposal_id,
        )

    def read_audit(
        self, *, limit: int = 50, after_seq: int = 0, operation: str | None = None, actor: str = OPERATOR
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries, or with ``after_seq`` the first ``limit`` after it (paging)."""
        self.flush_reads()
        with self.engine.snapshot() as cursor:
            entries = audit_log.recent(
                cursor, limit=min(max(limit, 1), 1000), after_seq=after_seq, operation=operation
            )
        self.record_read(
            "read_audit", actor, {"limit": limit, "after_seq": after_seq, "operation": operation}
        )
        return entries

    def verify_audit(self, *, actor: str = OPERATOR) -> VerifyResult:
        self.flush_reads()
        with self.engine.snapshot() as cursor:
            result = audit_log.verify(cursor)
        self.record_read("verify_audit", actor, {})
        return result

    # ------------------------------------------------------------------------------- the change side

    def propose(
        self,
        operations: Sequence[Any],
        *,
        base_version: int | None = None,
        note: str | None = None,
        actor: str = "operator",
    ) -> deploy.ProposalResult:
        return deploy.propose(self, operations, base_version=base_version, note=note, actor=actor)

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        with self.engine.snapshot() as cursor:
            return catalog.proposal(cursor, proposal_id)

    def dry_run(
        self, proposal_id: str, *, actor: str = "operator", progress: deploy.Progress | None = None
    ) -> deploy.DryRunReport:
        return deploy.dry_run(self, proposal_id, actor=actor, progress=progress)

    def deploy(
        self,
        proposal_id: str,
        *,
        actor: str = "operator",
        progress: deploy.Progress | None = None,
        require_approval: bool = False,
    ) -> deploy.DeployResult:
        """Deploy a dry-run proposal. With ``require_approval`` (agents), hazards at the policy's severity
        need an operator approval bound to this plan (``deploy.needs_approval`` otherwise)."""
        if not require_approval:
            return deploy.deploy(self, proposal_id, actor=actor, progress=progress)
        try:
            with self.engine.snapshot() as cursor:
                prop = catalog.proposal(cursor, proposal_id)
        except ButtressError as error:
            self.record_refusal("deploy", actor, {"proposal_id": proposal_id}, error)
            raise
        planned = prop["plan"].all_hazards()
        if any(h.severity == "high" for h in planned) and not self.policy.may(
            actor, Capability.DEPLOY_HAZARDOUS
        ):
            denied = PolicyError(
                Code.POLICY_DENIED,
                f"agent {actor!r} may not deploy plans with high hazards",
                hint="Ask the operator to deploy it, or to grant deploy_hazardous.",
                details={"hazards": [str(h.code) for h in planned if h.severity == "high"]},
            )
            self.record_refusal("deploy", actor, {"proposal_id": proposal_id}, denied)
            raise denied
        hazards = self.policy.needs_approval(planned)
        if not hazards:
            return deploy.deploy(self, proposal_id, actor=actor, progress=progress)

        def gate(tx: Tx, found: dict[str, Any]) -> None:
            request_id = approvals.find_valid(
                tx, self.engine.path, proposal_id=found["id"], plan_hash=found["plan_hash"]
            )
            if request_id is None:
                raise approvals.needs_approval_error({"id": "pending", "expires_at": ""}, hazards)
            approvals.consume(tx, request_id)

        with self.engine.transaction() as tx:
            approved = approvals.find_valid(
                tx, self.engine.path, proposal_id=proposal_id, plan_hash=prop["plan_hash"]
            )
            request = (
                None
                if approved
                else approvals.open_request(
                    tx,
                    self.engine.path,
                    proposal_id=proposal_id,
                    plan_hash=prop["plan_hash"],
                    hazards=hazards,
                    actor=actor,
                    ttl_minutes=self.policy.approvals.ttl_minutes,
                )
            )
        if request is not None:
            waiting = approvals.needs_approval_error(request, hazards)
            self.record_refusal("deploy", actor, {"proposal_id": proposal_id}, waiting)
            raise waiting
        return deploy.deploy(self, proposal_id, actor=actor, progress=progress, approval=gate)

    def rollback(
        self,
        *,
        to_version: int | None = None,
        actor: str = "operator",
        progress: Progress | None = None,
    ) -> RollbackResult:
        return deploy.rollback(self, to_version=to_version, actor=actor, progress=progress)

    def finalize(self, *, before_version: int, actor: str = "operator") -> dict[str, Any]:
        return deploy.finalize(self, before_version=before_version, actor=actor)

    # ------------------------------------------------------------------------------ application logic

    def run_action(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str = "operator",
    ) -> ActionResult:
        """Run a deployed action: validated arguments, serialized writes, invariants, idempotency."""
        return self._actions.run(name, args, idempotency_key=idempotency_key, actor=actor)


__all__ = [
    "ActionResult",
    "AppDescription",
    "Limits",
    "NotFound",
    "QueryResult",
    "Runtime",
    "SqlCheckResult",
    "VersionInfo",
    "plain",
]
