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
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

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
from runtime.control_room import ControlRoom
from runtime.errors import ButtressError, Code, EngineError, NotFound, PolicyError
from runtime.logic.actions import ActionRunner
from runtime.migrate import bind, deploy
from runtime.reads import Reads
from runtime.registry import OPERATOR, Kind, Progress, SpecCheck, operation
from runtime.results import (
    REFUSAL_KEY,
    ActionResult,
    AppDescription,
    DeployResult,
    DryRunReport,
    FinalizeResult,
    ProposalResult,
    QueryResult,
    RollbackResult,
    SqlCheckResult,
    VersionInfo,
)
from runtime.schema.changes import AddAction, Operation, ReplaceAction, check_action
from runtime.schema.spec import AppSpec
from runtime.shared_database import SharedDatabase
from runtime.store import catalog, fingerprint
from runtime.store.audit import AnchorFile, AnchorRow, Auditor, anchor_path
from runtime.store.engine import Engine, Settings, Tx
from runtime.workflow_operations import WorkflowOperations
from runtime.workflows.scheduler import Scheduler

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAX_REFUSAL_MESSAGE = 500
"""The longest refusal message an audit row keeps (under ``REFUSAL_KEY``)."""


VERSIONS_CHANNEL: Final = "buttress_versions"
"""Where a shared database's servers hear of each other's deploys and rollbacks."""
VERSIONS_POLL_S: Final = 2.0
"""How often a server on a shared database reads the current version when it heard nothing."""


@dataclass(frozen=True)
class InForce:
    """The operator's policy and the limits in force, replaced together (``Runtime.use_policy``)."""

    policy: Policy
    limits: Limits


class Runtime(Reads, WorkflowOperations, ControlRoom, SharedDatabase):
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
            anchor=(
                AnchorRow(engine, Path(engine.path).name)
                if engine.dialect.shared
                else AnchorFile(anchor_path(engine.path), Path(engine.path).name)
            ),
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
        self._watch: Any = None
        self._closing = threading.Event()
        self.agent_role = False
        """Agent SQL reads as the database's agent role (``provision_agent_role``)."""
        if engine.dialect.shared:  # other servers deploy too: see their versions
            shared = cast(Any, engine)
            shared.on_begin(self._refresh_current)
            self._watch = shared.watch(VERSIONS_CHANNEL, self._remote_change, poll=VERSIONS_POLL_S)
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

    @classmethod
    def open_postgres(cls, url: str, path: str | Path, **options: Any) -> Runtime:
        """Open the application in a PostgreSQL database that other servers may share (``url``: its
        connection string; ``path``: a file name in this server's project directory, where the audit
        anchor and approval requests live beside it)."""
        from runtime.boundary.secret import ensure_operator_key
        from runtime.store.postgres import PgEngine

        ensure_operator_key()
        engine = PgEngine(url, path=str(Path(path).resolve()))
        try:
            runtime = cls(cast(Any, engine), **options)
        except BaseException:
            engine.close()
            raise
        runtime.provision_agent_role()
        return runtime

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

    @property
    def filing(self) -> approvals.Filing:
        """Where approval requests and the operator's decisions are filed: beside the database file,
        or in a database several servers share (``approvals``)."""
        if self.engine.dialect.shared:
            return approvals.Table(cast(Any, self.engine))
        return approvals.Folder(approvals.folder(self.engine.path))

    @property
    def closing(self) -> threading.Event:
        """Set once ``close`` begins: the threads serving this runtime stop on it."""
        return self._closing

    def start_scheduler(self) -> None:
        """Advance runs and deliver messages from now on, on a thread of their own."""
        self.scheduler.start()

    def close(self) -> None:
        self._closing.set()
        if self._watch is not None:
            self._watch.stop()
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
        if tx.dialect.shared:
            cast(Any, self.engine).notify(tx, VERSIONS_CHANNEL, str(number))

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
            if self.engine.dialect.name == "duckdb":
                found = fingerprint.expected_and(spec, self.engine.scratch, lambda db: bind.bind_in(spec, db))
            else:
                found = bind.derive_on_postgres(spec, cast(Any, self.engine))
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
            if approvals.find_valid(tx, self.filing, proposal_id=subject, plan_hash=plan_hash):
                return None
            return approvals.open_request(
                tx,
                self.filing,
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
                tx, self.filing, proposal_id=found["id"], plan_hash=found["plan_hash"]
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
