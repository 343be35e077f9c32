"""``Runtime``: the public face of the embedded runtime. It knows nothing of MCP.

Each method is one typed operation that the MCP tools and the CLI project. Each takes the
``actor`` it acts for: the operator (the CLI) or an agent, whose capabilities the operator's policy
decides here, whatever path the request took (a tool, an ``app_`` tool, ``run_action``, a
resource). Each appends one audit row: changes in the same transaction as their effect, reads and
refusals shortly after (``Auditor.defer``), so a refusal never waits on a busy writer.

Every writer-lane operation has a deadline from the policy's ``[limits]`` and waits for the lane at
most ``lane_wait_s``: a stuck change is interrupted (``limit.timeout``), a blocked one answers
``engine.busy``, and both are audited.

>>> import tempfile, pathlib
>>> rt = Runtime.open(pathlib.Path(tempfile.mkdtemp()) / "app.duckdb")
>>> rt.describe().version
0
>>> rt.close()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from runtime import registry
from runtime.boundary import approvals
from runtime.boundary.policy import (
    Capability,
    Limits,
    Policy,
    check_action_access,
    check_protected,
    require,
)
from runtime.context import Current
from runtime.errors import ButtressError, Code, EngineError, NotFound, PolicyError, SqlError
from runtime.logic import invariants, summary
from runtime.logic.actions import ActionRunner
from runtime.logic.prepared import invariant_checks
from runtime.migrate import bind, deploy
from runtime.registry import OPERATOR, Kind, Progress, SpecCheck, operation
from runtime.results import (
    REFUSAL_KEY,
    AckResult,
    ActionResult,
    ActivityHead,
    AppDescription,
    ApprovalRequest,
    AuditEntry,
    AuditPage,
    ClaimResult,
    ConnectorSummary,
    DataFilter,
    DataPage,
    DeployResult,
    DryRunReport,
    EffectInfo,
    FinalizeResult,
    InvariantCheck,
    MessageInfo,
    Overview,
    PendingProposal,
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
from runtime.schema import diff as specdiff
from runtime.schema.changes import AddAction, Operation, ReplaceAction, check_action
from runtime.schema.spec import AppSpec, WorkflowSpec
from runtime.sql import sqlcheck
from runtime.store import activity, catalog, data_pages, fingerprint
from runtime.store import audit as audit_log
from runtime.store.audit import AnchorFile, Auditor, anchor_path
from runtime.store.engine import Engine, Settings, Tx
from runtime.store.values import fetch
from runtime.workflows import service as workflow_service
from runtime.workflows.scheduler import Scheduler

T = TypeVar("T")

MAX_REFUSAL_MESSAGE = 500
"""The longest refusal message an audit row keeps (under ``REFUSAL_KEY``)."""


@dataclass(frozen=True)
class InForce:
    """The operator's policy and the limits in force, replaced together (``Runtime.use_policy``)."""

    policy: Policy
    limits: Limits


class Runtime:
    """One application in one DuckDB file, owned by this process."""

    def __init__(
        self,
        engine: Engine,
        *,
        audit_reads: bool = True,
        audit_operator_reads: bool = False,
        limits: Limits | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.engine = engine
        policy = policy or Policy()
        self._in_force = InForce(policy, limits or policy.limits)
        self.audit = Auditor(
            engine,
            anchor=AnchorFile(anchor_path(engine.path), Path(engine.path).name),
            lane_wait=self.limits.lane_wait_s,
        )
        self.audit_reads = audit_reads
        self.audit_operator_reads = audit_operator_reads
        self.spec_checks: list[SpecCheck] = []
        """Checks a target spec must pass at dry-run and deploy besides the runtime's own (the MCP
        server adds one: every action's tool can be built)."""
        self._expected: dict[str, tuple[fingerprint.Fingerprint, bind.Bound]] = {}
        """Derived from a spec alone, under its hash: the catalog it builds and its statements bound."""
        self._listeners: list[Callable[[int], None]] = []
        self.actions = ActionRunner(self)
        self.scheduler = Scheduler(self)
        """Advances workflow runs and delivers messages; ``start_scheduler`` runs it on its own thread
        (``buttress serve`` does, in the process that owns the database)."""
        with engine.transaction() as tx:
            catalog.install(tx)
            number, spec = catalog.current_version(tx)
        self._current = Current.of(number, spec)
        with engine.snapshot() as reader:
            self.audit.check_anchor(reader)
        self.drift = self.check_drift()

    @classmethod
    def open(cls, path: str | Path, **options: Any) -> Runtime:
        """Open (or create) the database file and install the system schema.

        Memory, spilling and threads come from ``limits`` (else the policy's limits); DuckDB spills
        into ``.buttress/spill`` beside the database. The audit anchor is signed with the operator
        secret, created on first use.
        """
        policy: Policy = options.get("policy") or Policy()
        limits: Limits = options.get("limits") or policy.limits
        settings = Settings(
            memory_limit_mb=limits.memory_limit_mb,
            spill_directory=str(Path(path).resolve().parent / ".buttress" / "spill"),
            max_spill_mb=limits.max_spill_mb,
            threads=limits.threads,
        )
        from runtime.boundary.secret import ensure_operator_key

        ensure_operator_key()
        engine = Engine(path, settings=settings)
        try:
            return cls(engine, **options)
        except BaseException:
            engine.close()  # a database refused at open (a newer schema, a broken file) is let go
            raise

    @property
    def policy(self) -> Policy:
        """The operator's policy in force (each operation reads it once it starts)."""
        return self._in_force.policy

    @property
    def limits(self) -> Limits:
        return self._in_force.limits

    def use_policy(self, policy: Policy, *, digest: str, error: ButtressError | None = None) -> None:
        """Put a policy read again from the operator's file in force for the operations that start from
        now (one swap; nothing is changed in place), and audit the reload as the operator's: ``ok``, or
        ``refused`` with the error when the file was refused and ``policy`` is the old one kept."""
        self._in_force = InForce(policy, policy.limits)
        origin = policy.origin
        arguments: dict[str, Any] = {"file": origin.file if origin else None, "digest": digest}
        if error is not None:
            arguments["problem"] = error.message
        elif origin is not None and origin.restart_needed:
            arguments["restart_needed"] = list(origin.restart_needed)
        self.audit.defer(
            actor=OPERATOR,
            operation="policy_reload",
            arguments=arguments,
            outcome="ok" if error is None else "refused",
            error_code=str(error.code) if error is not None else None,
            version=self.current[0],
        )

    def start_scheduler(self) -> None:
        """Advance runs and deliver messages from now on, on a thread of their own."""
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()
        self.audit.close()
        self.engine.close()

    # ------------------------------------------------------------------------------------ state

    @property
    def current(self) -> tuple[int, AppSpec]:
        """The committed version and its spec (what the next writer will see)."""
        state = self._current
        return state.number, state.spec

    @property
    def state(self) -> Current:
        return self._current

    def publish(self, tx: Tx, number: int, spec: AppSpec) -> None:
        """Make ``number`` current the moment ``tx`` commits, before the writer lane is released: the
        next writer (a mutation waiting behind a deploy) already runs against it."""
        state = Current.of(number, spec)

        def apply() -> None:
            self._current = state

        tx.on_commit(apply, in_lane=True)

    def expected_catalog(self, spec: AppSpec) -> fingerprint.Fingerprint:
        """The catalog ``spec`` builds from nothing (derived in a scratch database, cached by its hash)."""
        return self._derive(spec)[0]

    def bound(self, spec: AppSpec) -> bind.Bound:
        """Every action statement of ``spec`` bound by DuckDB against its schema (cached by its hash)."""
        return self._derive(spec)[1]

    def _derive(self, spec: AppSpec) -> tuple[fingerprint.Fingerprint, bind.Bound]:
        key = spec.hash()
        found = self._expected.get(key)
        if found is None:
            found = fingerprint.expected_and(spec, self.engine.scratch, lambda db: bind.bind_in(spec, db))
            self._expected[key] = found
        return found

    def check_drift(self) -> list[str]:
        """Differences between the live catalog and the active spec (empty when none)."""
        _, spec = self.current
        with self.engine.snapshot() as reader:
            return fingerprint.diff(self.expected_catalog(spec), fingerprint.read(reader))

    def on_version_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(version)`` after every deploy and rollback (e.g. to announce tools)."""
        self._listeners.append(listener)

    def after_version_change(self, version: int) -> None:
        self.drift = self.check_drift()
        for listener in list(self._listeners):
            listener(version)

    # ----------------------------------------------------------------------------------- policy

    def authorize(self, actor: str, capability: Capability, *, what: str) -> None:
        """The policy's one decision for a request: the operator may do anything; an agent only what
        its role grants (``policy.denied`` otherwise)."""
        if actor != OPERATOR:
            require(self.policy, actor, capability, what=what)

    def authorize_action(self, actor: str, action: str) -> None:
        """May ``actor`` run ``action`` (its role runs actions, and ``actions = [...]`` names it)?"""
        if actor == OPERATOR:
            return
        require(self.policy, actor, Capability.RUN_ACTIONS, what="run actions")
        if not self.policy.may_run_action(actor, action):
            raise PolicyError(
                Code.POLICY_DENIED,
                f"agent {actor!r} may not run action {action!r}",
                hint="This is the operator's decision (buttress.toml: actions = [...]); ask them rather than "
                "retrying.",
                details={"agent": actor, "action": action},
            )

    def policy_check_proposal(self, ops: Sequence[Operation], actor: str = OPERATOR) -> None:
        """The operator policy's word on an agent's proposal: protected entities and fields, proposal size."""
        if actor != OPERATOR:
            _, spec = self.current
            check_protected(self.policy, spec, ops)
        if len(ops) > self.limits.max_operations:
            raise ButtressError(
                Code.LIMIT_EXCEEDED,
                f"a proposal may hold at most {self.limits.max_operations} operations",
                hint="Split the change into several proposals.",
                details={"operations": len(ops)},
            )

    def policy_check_actions(self, target: AppSpec, ops: Sequence[Operation], actor: str = OPERATOR) -> None:
        """Actions an agent adds or replaces may not write protected entities; no topic feeds more
        subscriptions, and no action emits more, than ``[limits] max_fanout`` (for anyone)."""
        fanout = self.limits.max_fanout
        wide = [
            (f"topic {topic.name}", count)
            for topic in target.topics
            if (count := sum(1 for s in target.subscriptions if s.topic == topic.name)) > fanout
        ] + [(f"action {a.name}", len(a.emits)) for a in target.actions if len(a.emits) > fanout]
        if wide:
            what, count = wide[0]
            raise ButtressError(
                Code.LIMIT_EXCEEDED,
                f"{what} would fan out to {count} subscriptions or emits; the limit is {fanout}",
                hint="Fewer subscriptions on one topic (or emits in one action): chain them, or ask the operator "
                "to raise max_fanout under [limits].",
                details={"fanout": dict(wide), "limit": fanout},
            )
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

    # ---------------------------------------------------------------------------------- auditing

    def audited(
        self,
        operation: str,
        actor: str,
        arguments: dict[str, Any],
        act: Callable[[Tx], T],
        *,
        timeout: float | None = None,
    ) -> T:
        """Run ``act`` in one writer transaction with the change deadline; a failure is audited as a
        refusal (``refusing``) after the transaction rolled back."""
        with (
            self.refusing(operation, actor, arguments),
            self.engine.transaction(
                timeout=timeout or self.limits.change_timeout_s, wait=self.limits.lane_wait_s
            ) as tx,
        ):
            return act(tx)

    @contextlib.contextmanager
    def refusing(self, operation: str, actor: str, arguments: dict[str, Any]) -> Iterator[None]:
        """The one place a failed call becomes a refusal row: a ``ButtressError`` raised inside is
        audited and raised again; any other exception is audited and raised as ``engine.error``
        (``EngineError``, its type in ``details.kind``) from the original. Whatever ran inside must
        not have committed: a change's transaction ends inside this block."""
        try:
            yield
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

    def record_refusal(
        self, operation: str, actor: str, arguments: dict[str, Any], error: ButtressError
    ) -> None:
        """Audit a refused call, with the error's message beside its arguments (``REFUSAL_KEY``). It
        changed nothing, so its row is group-committed shortly after and the caller never waits for
        the writer lane."""
        number, _ = self.current
        proposal_id = arguments.get("proposal_id")
        self.audit.defer(
            actor=actor,
            operation=operation,
            arguments={**arguments, REFUSAL_KEY: error.message[:MAX_REFUSAL_MESSAGE]},
            outcome="refused",
            error_code=str(error.code),
            version=number,
            proposal_id=proposal_id if isinstance(proposal_id, str) else None,
        )

    def record_read(self, operation: str, actor: str, arguments: dict[str, Any]) -> None:
        """Audit a successful read (group-committed shortly after, and before any audit is read).

        The operator's reads are audited when the runtime serves a project (``buttress`` opens it with
        ``audit_operator_reads``); a library user's own reads are not."""
        if not self.audit_reads or (actor == OPERATOR and not self.audit_operator_reads):
            return
        number, _ = self.current
        self.audit.defer(actor=actor, operation=operation, arguments=arguments, outcome="ok", version=number)

    def flush_reads(self) -> None:
        """Write the queued read and refusal rows now (waiting at most ``lane_wait_s``)."""
        self.audit.flush(wait=self.limits.lane_wait_s)

    def reading(self, operation: str, actor: str, arguments: dict[str, Any], call: Callable[[], T]) -> T:
        """A read: authorized, run, audited (a failure as a refusal, through ``refusing``)."""
        with self.refusing(operation, actor, arguments):
            self.authorize(actor, Capability.READ, what=operation.replace("_", " "))
            result = self.engine.sharing_memory(call, budget=self.limits.query_timeout_s)
        self.record_read(operation, actor, arguments)
        return result

    # --------------------------------------------------------------------------------- the read side

    @operation(Kind.READ, Capability.READ, audited="describe_app", tools=("describe_app",), cli=("describe",))
    def describe(self, *, actor: str = OPERATOR) -> AppDescription:
        """The application at its current version: spec, actions, pending proposals, drift."""
        return self.reading("describe_app", actor, {}, self._describe)

    def _describe(self) -> AppDescription:
        number, spec = self.current
        with self.engine.snapshot() as reader:
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
            drift=self.drift,
            audit_problem=self.audit.problem,
            connectors=[
                ConnectorSummary(name=name, description=connector.description)
                for name, connector in sorted(self.policy.connectors.items())
            ],
            work=work,
            policy=self.policy.origin,
            policy_problem=self.policy.origin.problem if self.policy.origin else None,
        )

    @operation(
        Kind.READ, Capability.READ, audited="list_versions", tools=("list_versions",), cli=("versions",)
    )
    def versions(self, *, actor: str = OPERATOR) -> list[VersionInfo]:
        """Every version, oldest first."""

        def read() -> list[VersionInfo]:
            with self.engine.snapshot() as reader:
                return [VersionInfo.model_validate(v) for v in catalog.versions(reader)]

        return self.reading("list_versions", actor, {}, read)

    @operation(Kind.READ, Capability.READ, audited="read_version")
    def version_spec(self, number: int, *, actor: str = OPERATOR) -> AppSpec:
        """The spec deployed as version ``number``."""

        def read() -> AppSpec:
            with self.engine.snapshot() as reader:
                return AppSpec.model_validate(catalog.version_row(reader, number)["spec"])

        return self.reading("read_version", actor, {"version": number}, read)

    @operation(Kind.READ, Capability.READ, tools=("diff_versions",), cli=("diff",))
    def diff_versions(
        self, from_version: int, to_version: int, *, actor: str = OPERATOR
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
    def proposals(self, *, actor: str = OPERATOR, pending: bool = False) -> list[ProposalSummary]:
        """Every stored proposal, newest first (``pending``: only those on the current version)."""

        def read() -> list[ProposalSummary]:
            number, _ = self.current
            with self.engine.snapshot() as reader:
                found = [ProposalSummary.model_validate(p) for p in catalog.proposal_list(reader, number)]
            return [p for p in found if p.status == "pending"] if pending else found

        return self.reading("list_proposals", actor, {"pending": pending}, read)

    @operation(Kind.READ, Capability.QUERY, tools=("query",), cli=("query",))
    def query(
        self,
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

    def _query(self, sql: str, params: dict[str, Any], limit: int | None) -> QueryResult:
        max_rows = self.limits.max_rows
        limit = max_rows if limit is None else limit
        if limit < 1 or limit > max_rows:
            raise ButtressError(
                Code.LIMIT_EXCEEDED,
                f"limit must be between 1 and {max_rows}",
                hint=f"Ask for at most {max_rows} rows and page with WHERE/OFFSET.",
            )
        analysis = sqlcheck.analyze_query(sql, self._current.relations, max_length=self.limits.max_sql_length)
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
            with self.engine.snapshot(timeout=max(0.0, deadline - time.monotonic()), single=True) as reader:
                result = reader.execute(analysis.sql, params or None)
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
    def check_sql(self, sql: str, *, proposal_id: str | None = None, actor: str = OPERATOR) -> SqlCheckResult:
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
        self, *, limit: int = 50, after_seq: int = 0, operation: str | None = None, actor: str = OPERATOR
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
    def verify_audit(self, *, actor: str = OPERATOR) -> VerifyResult:
        """Recompute the hash chain and check it against the anchor."""

        def read() -> VerifyResult:
            self.flush_reads()
            with self.engine.snapshot() as reader:
                return audit_log.verify(reader, self.audit.anchor)

        return self.reading("verify_audit", actor, {}, read)

    @operation(Kind.CHANGE, None, cli=("audit reanchor",))
    def reanchor_audit(self, *, actor: str = OPERATOR) -> VerifyResult:
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

    # ------------------------------------------------------------------------------- the change side

    @operation(Kind.CHANGE, Capability.PROPOSE, tools=("propose_change", "define_entity"), cli=("propose",))
    def propose(
        self,
        operations: Sequence[Any],
        *,
        base_version: int | None = None,
        note: str | None = None,
        actor: str = OPERATOR,
    ) -> ProposalResult:
        """Validate and plan operations on the current version; store the proposal."""
        return deploy.propose(self, operations, base_version=base_version, note=note, actor=actor)

    @operation(Kind.CHANGE, Capability.PROPOSE, tools=("redeploy",), cli=("redeploy",))
    def redeploy(self, version: int, *, note: str | None = None, actor: str = OPERATOR) -> ProposalResult:
        """Roll forward: a proposal taking the current version to the spec of ``version`` (one whose
        history extends the current one, as after a rollback), made of the operations deployed in
        between and restoring the data rollbacks retained from them. Dry-run and deploy it like any."""
        args = {"version": version}
        with self.refusing("redeploy", actor, args):
            self.authorize(actor, Capability.PROPOSE, what="propose changes")
            with self.engine.snapshot() as reader:
                operations = deploy.redeploy_operations(reader, version)
        return deploy.propose(
            self,
            operations,
            base_version=None,
            note=note or f"redeploy version {version}",
            actor=actor,
            redeploy=version,
        )

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        with self.engine.snapshot() as reader:
            return catalog.proposal(reader, proposal_id)

    @operation(Kind.CHANGE, Capability.DRY_RUN, tools=("dry_run",), cli=("dry-run",), progress=True)
    def dry_run(
        self, proposal_id: str, *, actor: str = OPERATOR, progress: Progress | None = None
    ) -> DryRunReport:
        """Execute a proposal's plan on the real data, check it, roll it back; store the report."""
        return deploy.dry_run(self, proposal_id, actor=actor, progress=progress)

    @operation(
        Kind.DESTRUCTIVE,
        Capability.DEPLOY,
        also=(Capability.DEPLOY_HAZARDOUS,),
        tools=("deploy",),
        cli=("deploy",),
        progress=True,
    )
    def deploy(
        self,
        proposal_id: str,
        *,
        actor: str = OPERATOR,
        progress: Progress | None = None,
    ) -> DeployResult:
        """Deploy a dry-run proposal. For an agent (anyone but the operator), hazards at the policy's
        severity need an operator approval bound to this plan (``deploy.needs_approval`` otherwise)."""
        args = {"proposal_id": proposal_id}
        if actor == OPERATOR:
            return deploy.deploy(self, proposal_id, actor=actor, progress=progress)
        with self.refusing("deploy", actor, args):
            self.authorize(actor, Capability.DEPLOY, what="deploy")
            with self.engine.snapshot() as reader:
                prop = catalog.proposal(reader, proposal_id)
                # what cannot deploy is refused for that reason before any human is asked about it
                deploy.require_deployable(reader, prop, catalog.current_version(reader)[0])
            planned = prop["plan"].all_hazards()
            if any(h.severity == "high" for h in planned) and not self.policy.may(
                actor, Capability.DEPLOY_HAZARDOUS
            ):
                raise PolicyError(
                    Code.POLICY_DENIED,
                    f"agent {actor!r} may not deploy plans with high hazards",
                    hint="Ask the operator to deploy it, or to grant deploy_hazardous.",
                    details={"hazards": [str(h.code) for h in planned if h.severity == "high"]},
                )
            hazards = self.policy.needs_approval(planned)
            if hazards:
                request = self._approval_request(proposal_id, prop["plan_hash"], hazards, actor)
                if request is not None:
                    raise approvals.needs_approval_error(request, hazards)
        gate = self._approval_gate(hazards) if hazards else None
        return deploy.deploy(self, proposal_id, actor=actor, progress=progress, approval=gate)

    @operation(
        Kind.DESTRUCTIVE,
        Capability.ROLLBACK,
        also=(Capability.DEPLOY_HAZARDOUS,),
        tools=("rollback",),
        cli=("rollback",),
        progress=True,
    )
    def rollback(
        self,
        *,
        to_version: int | None = None,
        actor: str = OPERATOR,
        progress: Progress | None = None,
    ) -> RollbackResult:
        """Roll back to the previous (or a named) version, losslessly.

        For an agent (anyone but the operator), a rollback that would drop data present now (an
        entity holding rows, a field holding values) at the policy's severity needs an operator
        approval bound to its plan, like a hazardous deploy.
        """
        if actor == OPERATOR:
            return deploy.rollback(self, to_version=to_version, actor=actor, progress=progress)
        args = {"to_version": to_version}
        with self.refusing("rollback", actor, args):
            self.authorize(actor, Capability.ROLLBACK, what="roll back")
            with self.engine.snapshot() as reader:
                current, target, plan, at_risk = deploy.preview_rollback(reader, to_version)
            hazards = self.policy.needs_approval(at_risk)
            if hazards:
                request_id = deploy.rollback_request_id(current, target)
                request = self._approval_request(request_id, plan.hash(), hazards, actor)
                if request is not None:
                    raise approvals.needs_approval_error(request, hazards, what="rollback")
        gate = self._approval_gate(hazards) if hazards else None
        return deploy.rollback(self, to_version=to_version, actor=actor, progress=progress, approval=gate)

    def _approval_request(
        self, subject: str, plan_hash: str, hazards: list[Any], actor: str
    ) -> dict[str, Any] | None:
        """None when an approval for exactly this plan is on file; else the pending request (new or open)."""
        with self.engine.transaction(wait=self.limits.lane_wait_s) as tx:
            if approvals.find_valid(tx, self.engine.path, proposal_id=subject, plan_hash=plan_hash):
                return None
            return approvals.open_request(
                tx,
                self.engine.path,
                proposal_id=subject,
                plan_hash=plan_hash,
                hazards=hazards,
                actor=actor,
                ttl_minutes=self.policy.approvals.ttl_minutes,
            )

    def _approval_gate(self, hazards: list[Any]) -> Callable[[Tx, dict[str, Any]], None]:
        """Inside the change's own transaction: the approval must match the plan about to run."""

        def gate(tx: Tx, found: dict[str, Any]) -> None:
            request_id = approvals.find_valid(
                tx, self.engine.path, proposal_id=found["id"], plan_hash=found["plan_hash"]
            )
            if request_id is None:
                raise approvals.needs_approval_error({"id": "pending", "expires_at": ""}, hazards)
            approvals.consume(tx, request_id)

        return gate

    @operation(Kind.DESTRUCTIVE, Capability.FINALIZE, cli=("finalize",))
    def finalize(self, *, before_version: int, actor: str = OPERATOR) -> FinalizeResult:
        """Discard data retained by versions older than ``before_version`` (irreversible)."""
        return deploy.finalize(self, before_version=before_version, actor=actor)

    # ------------------------------------------------------------------------------ application logic

    @operation(Kind.CHANGE, Capability.RUN_ACTIONS, tools=("run_action",), cli=("run",))
    def run_action(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        actor: str = OPERATOR,
    ) -> ActionResult:
        """Run a deployed action: validated arguments, serialized writes, invariants, idempotency."""
        result = self.actions.run(name, args, idempotency_key=idempotency_key, actor=actor)
        if self.current[1].topics or self.current[1].workflows:
            self.scheduler.wake()  # its emits may have made work
        return result

    # ------------------------------------------------------------------------ workflows, messages

    @operation(Kind.CHANGE, Capability.RUN_WORKFLOWS, tools=("start_workflow",), cli=("runs start",))
    def start_workflow(
        self,
        workflow: str,
        args: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        actor: str = OPERATOR,
    ) -> RunInfo:
        """Start a run of a deployed workflow; ``run_id`` makes it idempotent (the same id returns it)."""
        return workflow_service.start_workflow(self, workflow, args or {}, run_id, actor)

    @operation(Kind.READ, Capability.READ, tools=("get_run",), cli=("runs show",))
    def get_run(self, run_id: str, *, actor: str = OPERATOR) -> RunDetail:
        """A run with every recorded step (output or error, attempts, version) and its effects."""
        return workflow_service.get_run(self, run_id, actor)

    @operation(Kind.READ, Capability.READ, tools=("list_runs",), cli=("runs list",))
    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        actor: str = OPERATOR,
    ) -> list[RunInfo]:
        """Runs, newest first (``status="active"``: those not finished)."""
        return workflow_service.list_runs(self, workflow, status, limit, actor)

    @operation(
        Kind.DESTRUCTIVE,
        Capability.RUN_WORKFLOWS,
        also=(Capability.MANAGE_RUNS,),
        tools=("cancel_run",),
        cli=("runs cancel",),
        acts=("cancel_run", "bulk_runs"),
    )
    def cancel_run(self, run_id: str, *, reason: str | None = None, actor: str = OPERATOR) -> RunInfo:
        """Cancel a run: its completed steps are compensated, newest first, then it is cancelled."""
        return workflow_service.cancel_run(self, run_id, reason, actor)

    @operation(
        Kind.CHANGE,
        Capability.RUN_WORKFLOWS,
        also=(Capability.MANAGE_RUNS,),
        tools=("signal_run",),
        cli=("runs signal",),
        acts=("signal_run",),
    )
    def signal_run(
        self, run_id: str, name: str, payload: dict[str, Any] | None = None, *, actor: str = OPERATOR
    ) -> RunInfo:
        """Send a run a signal (a wait step consumes it)."""
        return workflow_service.signal_run(self, run_id, name, payload or {}, actor)

    @operation(Kind.CHANGE, Capability.RESOLVE_EFFECTS, cli=("runs retry",), acts=("retry_run", "bulk_runs"))
    def retry_run(self, run_id: str, *, actor: str = OPERATOR) -> RunInfo:
        """Retry a failed or blocked run at its step (the operator's decision)."""
        return workflow_service.retry_run(self, run_id, actor)

    @operation(Kind.CHANGE, Capability.RESOLVE_EFFECTS, cli=("effects resolve",), acts=("resolve_effect",))
    def resolve_effect(
        self, effect_id: str, outcome: str, *, response: Any = None, actor: str = OPERATOR
    ) -> EffectInfo:
        """Record what an effect with an unknown outcome did (the operator checked with the provider)."""
        return workflow_service.resolve_effect(self, effect_id, outcome, response, actor)

    @operation(Kind.READ, Capability.READ, cli=("effects list",))
    def list_effects(
        self, *, state: str | None = None, run_id: str | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> list[EffectInfo]:
        """Effects, the unknown ones first, then those in flight."""
        return workflow_service.list_effects(self, state, run_id, limit, actor)

    @operation(Kind.CHANGE, Capability.PUBLISH, audited="publish", tools=("publish",))
    def publish_message(
        self, topic: str, payload: dict[str, Any], *, message_id: str | None = None, actor: str = OPERATOR
    ) -> PublishResult:
        """Publish a message; ``message_id`` deduplicates (the same id returns the first message)."""
        return workflow_service.publish_message(self, topic, payload, message_id, actor)

    @operation(Kind.CHANGE, Capability.CONSUME, tools=("claim_messages",))
    def claim_messages(
        self,
        topic: str,
        *,
        consumer: str | None = None,
        limit: int = 10,
        lease_s: float = 30.0,
        actor: str = OPERATOR,
    ) -> ClaimResult:
        """Lease messages of an external topic to a consumer (redelivered if not acknowledged in time)."""
        return workflow_service.claim_messages(self, topic, consumer, limit, lease_s, actor)

    @operation(Kind.CHANGE, Capability.CONSUME, tools=("ack_messages",))
    def ack_messages(
        self, message_ids: Sequence[str], *, consumer: str | None = None, actor: str = OPERATOR
    ) -> AckResult:
        """Acknowledge messages the consumer holds."""
        return workflow_service.ack_messages(self, message_ids, consumer, actor)

    @operation(Kind.READ, Capability.READ, tools=("list_messages",), cli=("messages",))
    def list_messages(
        self, *, topic: str | None = None, undelivered: bool = False, limit: int = 100, actor: str = OPERATOR
    ) -> list[MessageInfo]:
        """Messages, newest first (``undelivered``: those some consumer has yet to receive, and held ones)."""
        return workflow_service.list_messages(self, topic, undelivered, limit, actor)

    # ------------------------------------------------------------------------------ control room
    # The reads and the operator's acts behind ``buttress ui``. Each page is one audited read.

    @operation(Kind.READ, Capability.READ)
    def overview(self, *, actor: str = OPERATOR) -> Overview:
        """The application at a glance: the current version, how many of each part its spec holds,
        pending proposals (with their dry-run and approval state) and approvals, drift and audit
        status, the agents' latest calls and the work done on their behalf, and their counts over time."""

        def read() -> Overview:
            state = self._current
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
                    pending_proposals=activity.pending_proposals(
                        reader, self.engine.path, current=state.number
                    ),
                    pending_approvals=activity.open_requests(reader, self.engine.path),
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
    def workflow_summary(self, *, actor: str = OPERATOR) -> WorkflowSummary:
        """Runs by state, effects whose outcome is unknown and messages not yet delivered, counted."""

        def read() -> WorkflowSummary:
            with self.engine.snapshot() as reader:
                return activity.workflow_summary(reader)

        return self.reading("workflow_summary", actor, {}, read)

    @operation(Kind.READ, Capability.READ)
    def version_page(
        self, *, before: int | None = None, limit: int = 100, actor: str = OPERATOR
    ) -> VersionPage:
        """Versions newest first, a page at a time (``before``: the number to continue below)."""

        def read() -> VersionPage:
            with self.engine.snapshot() as reader:
                return activity.version_page(reader, before=before, limit=limit)

        return self.reading("version_page", actor, {"before": before, "limit": limit}, read)

    @operation(Kind.READ, Capability.READ, audited="diff_versions")
    def compare_versions(
        self, from_version: int, to_version: int, *, actor: str = OPERATOR
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
        self,
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
                    self.engine.path,
                    current=self._current.number,
                    status=status,
                    before_seq=before_seq,
                    limit=limit,
                )

        return self.reading("proposal_page", actor, args, read)

    @operation(Kind.READ, Capability.READ, audited="read_proposal")
    def proposal_detail(self, proposal_id: str, *, actor: str = OPERATOR) -> ProposalDetail:
        """A proposal in full: operations, the plan's steps (SQL, strategy, hazards), its latest
        dry-run report (values lost, sample rows) and its approval requests."""

        def read() -> ProposalDetail:
            with self.engine.snapshot() as reader:
                return activity.proposal_detail(
                    reader, self.engine.path, proposal_id, current=self._current.number
                )

        return self.reading("read_proposal", actor, {"proposal_id": proposal_id}, read)

    @operation(Kind.READ, Capability.READ, audited="list_approvals", cli=("approve",))
    def approval_requests(self, *, limit: int = 100, actor: str = OPERATOR) -> list[ApprovalRequest]:
        """Approval requests: every open one, then the latest decided, with hazards and the losses
        the last dry-run of each plan found."""

        def read() -> list[ApprovalRequest]:
            with self.engine.snapshot() as reader:
                return activity.approval_requests(reader, self.engine.path, limit=limit)

        return self.reading("list_approvals", actor, {"limit": limit}, read)

    @operation(Kind.CHANGE, None, audited="approve", cli=("approve",), acts=("approve",))
    def approve_request(self, request_id: str, *, actor: str = OPERATOR) -> ApprovalRequest:
        """Approve an agent's pending request as ``buttress approve`` does (``approvals.approve``: signed
        with the operator secret, bound to the plan, single use, until it expires), and audit it."""
        return self._decide(request_id, approve=True, reason="", actor=actor)

    @operation(Kind.CHANGE, None, audited="refuse", acts=("refuse",))
    def refuse_request(self, request_id: str, *, reason: str = "", actor: str = OPERATOR) -> ApprovalRequest:
        """Refuse an agent's request (``approvals.refuse``): the agent's retry of that plan is answered
        with ``policy.denied`` and the reason; an approval not yet used is revoked. Audited."""
        return self._decide(request_id, approve=False, reason=reason, actor=actor)

    def _decide(self, request_id: str, *, approve: bool, reason: str, actor: str) -> ApprovalRequest:
        operation = "approve" if approve else "refuse"
        args: dict[str, Any] = {"request_id": request_id, **({} if approve else {"reason": reason})}
        database = self.engine.path

        def act(tx: Tx) -> None:
            if actor != OPERATOR:
                raise PolicyError(
                    Code.POLICY_DENIED,
                    f"only the operator may {operation} an approval request",
                    hint="Approvals come from the operator (buttress approve, or the control room).",
                )
            row = approvals.decidable(tx, database, request_id, approving=approve)
            number = self._current.number
            self.audit.append(
                tx,
                actor=actor,
                operation=operation,
                arguments=args,
                outcome="ok",
                version_before=number,
                version_after=number,
                proposal_id=None if str(row["proposal_id"]).startswith("rollback:") else row["proposal_id"],
            )

            def file() -> None:  # once the audit row has committed, before the next writer runs
                if approve:
                    approvals.approve(database, row, approved_by=actor)
                else:
                    approvals.refuse(database, row, refused_by=actor, reason=reason)

            tx.on_commit(file, in_lane=True)

        self.audited(operation, actor, args, act)
        with self.engine.snapshot() as reader:
            return activity.approval_request(reader, database, request_id)

    @operation(Kind.READ, Capability.READ)
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
    def activity_head(self, *, actor: str = OPERATOR) -> ActivityHead:
        """The current version, the newest agent audit entry and the open approval requests: what a
        watcher polls to know that something happened.

        Authorized like any read but not audited: it is polled every few seconds, and a row per poll
        would itself be new activity (refusals are audited)."""
        with self.refusing("activity_head", actor, {}):
            self.authorize(actor, Capability.READ, what="watch activity")
        with self.engine.snapshot() as reader:
            return ActivityHead(
                version=self._current.number,
                agent_seq=activity.agent_head(reader, operator=OPERATOR),
                pending_approvals=activity.open_requests(reader, self.engine.path),
                unknown_effects=activity.unknown_effects(reader),
            )

    @operation(Kind.READ, Capability.READ, polled=True)
    def run_changes(self, since: str | None = None, *, actor: str = OPERATOR) -> RunChanges:
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

    def _pinned(self, version: int, workflow: str) -> WorkflowSpec | None:
        """The definition a run follows (its workflow at its pinned version), or None if unknown."""
        try:
            return self.scheduler.definition(version, workflow)
        except ButtressError:
            return None

    @operation(Kind.READ, Capability.READ)
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
                    reader, self._pinned, wanted, before=cursor, limit=limit, failures=failures
                )

        return self.reading("search_runs", actor, args, read)

    @operation(Kind.READ, Capability.READ)
    def run_history(self, run_id: str, *, actor: str = OPERATOR) -> RunHistory:
        """A run's whole history: every step of the definition it follows (completed, failed, current,
        to come) with its attempts, errors and times, its compensations, signals and effects, and
        every audited event on it, the operator's retries, cancels and resolutions included."""

        def read() -> RunHistory:
            with self.engine.snapshot() as reader:
                return activity.run_history(reader, self._pinned, run_id)

        return self.reading("run_history", actor, {"run_id": run_id}, read)

    # The Data page: statements written by runtime.store.browse from names checked against the
    # current spec, with values bound as parameters, run through ``_query`` (the query tool's guard
    # and limits) by runtime.store.data_pages, one audit row per page.

    def _data_source(self) -> data_pages.DataSource:
        def columns(table: str) -> list[tuple[str, str]]:
            with self.engine.snapshot() as reader:
                found = reader.fetchall(
                    "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
                    "current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                    [table],
                )
            return [(str(c), str(t)) for c, t in found]

        return data_pages.DataSource(
            spec=self._current.spec, columns=columns, query=self._query, max_rows=self.limits.max_rows
        )

    @operation(Kind.READ, Capability.READ)
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
                self._data_source(),
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
    def read_row(self, table: str, key: Mapping[str, str], *, actor: str = OPERATOR) -> RowDetail:
        """One row of an entity by its primary key (each key column's value as text), with the rows
        its reference fields point to and the rows of other entities pointing to it (counted, the first
        few shown). Through the query guard and limits; one audited read."""
        wanted = {str(k): str(v) for k, v in key.items()}

        return self.reading(
            "read_row",
            actor,
            {"table": table, "key": wanted},
            lambda: data_pages.read_row(self._data_source(), table, wanted),
        )

    @operation(Kind.READ, Capability.READ)
    def export_data(
        self,
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
                self._data_source(), table, wanted, sort=sort, descending=descending
            ),
        )


__all__ = [
    "ActionResult",
    "AppDescription",
    "Current",
    "Limits",
    "NotFound",
    "QueryResult",
    "Runtime",
    "SqlCheckResult",
    "VersionInfo",
]


OPERATIONS: Final[Mapping[str, registry.Operation]] = registry.collect(Runtime)
"""Every operation the runtime serves, by name, as its ``@operation`` declares it (``runtime.registry``)."""
