"""Propose, dry-run, deploy, rollback and finalize, orchestrated over the pure planner and the engine.

Every function here runs on the writer lane and appends exactly one audit row, in the same
transaction as its effect; a refusal is audited in its own transaction after the failed one
rolled back. A dry-run executes the stored plan and rolls back; deploy re-executes the same
plan and repeats every check inside its own transaction before COMMIT.

A plan is executed by ``execution`` and checked by ``checks``; rollback is ``rollback``'s, and its
functions stay importable from here, as do ``Progress``, ``SAMPLE`` and ``PROBE_HINTS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runtime.boundary.policy import Capability
from runtime.errors import ButtressError, Code, DeployError, NotFound, PlanError, RollbackError
from runtime.migrate import plan as planner
from runtime.migrate.checks import check_drift, run_checks
from runtime.migrate.ddl import qs
from runtime.migrate.execution import PROBE_HINTS as PROBE_HINTS  # names callers import from here
from runtime.migrate.execution import SAMPLE as SAMPLE
from runtime.migrate.execution import Progress as Progress
from runtime.migrate.execution import execute
from runtime.migrate.plan import Plan, RestoreKey, Retention
from runtime.migrate.rollback import deploy_history
from runtime.migrate.rollback import plan_rollback as plan_rollback
from runtime.migrate.rollback import preview_rollback as preview_rollback
from runtime.migrate.rollback import resolve_rollback as resolve_rollback
from runtime.migrate.rollback import rollback as rollback
from runtime.migrate.rollback import rollback_request_id as rollback_request_id
from runtime.results import DeployResult, DryRunReport, FinalizeResult, ProposalResult, StepReport
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.store import catalog
from runtime.store.engine import Session, Tx

if TYPE_CHECKING:
    from runtime.context import DeployContext


# ------------------------------------------------------------------------------------------ propose


def propose(
    rt: DeployContext,
    raw_ops: Sequence[Any],
    *,
    base_version: int | None,
    note: str | None,
    actor: str,
    redeploy: int | None = None,
) -> ProposalResult:
    """Validate and plan operations on the current version; store the proposal (immutable).

    ``redeploy``: the operations are those deployed from the current version's history up to that
    version (``redeploy_operations``); the data rollbacks retained from each of those versions is
    restored by the plan."""
    args = {
        "operations": list(raw_ops) if isinstance(raw_ops, list | tuple) else repr(raw_ops),
        "base_version": base_version,
        "note": note,
        **({"redeploy": redeploy} if redeploy is not None else {}),
    }

    def act(tx: Tx) -> ProposalResult:
        rt.authorize(actor, Capability.PROPOSE, what="propose changes")
        current, spec = catalog.current_version(tx)
        base = current if base_version is None else base_version
        if base != current:
            raise PlanError(
                Code.PLAN_STALE_BASE,
                f"base version {base} is not the current version {current}",
                hint="Call describe_app, then propose your change again on the current version.",
                details={"base_version": base, "current_version": current},
            )
        ops = changes.parse_operations(raw_ops)
        if not ops:
            raise PlanError(
                Code.PLAN_EMPTY, "a proposal needs at least one operation", hint="Pass operations: [...]."
            )
        ops = changes.explicit_operations(spec, ops)  # what is stored is what it means now
        rt.policy_check_proposal(ops, actor)
        target = changes.apply(spec, ops)
        rt.policy_check_actions(target, ops, actor)
        hashes = [target.hash()]
        if redeploy is not None:
            hashes = [str(catalog.version_row(tx, n)["hash"]) for n in _replayed(tx, current, redeploy)]
        restores = _redeploy_restores(tx, *hashes)
        target, plan = planner.plan(spec, ops, base_version=current, restores=restores, dialect=tx.dialect)
        proposal_id, seq = catalog.next_proposal_id(tx)
        catalog.insert_proposal(
            tx,
            proposal_id=proposal_id,
            seq=seq,
            base_version=current,
            operations=changes.operations_json(ops),
            target=target,
            plan=plan,
            note=note,
            actor=actor,
        )
        rt.audit.append(
            tx,
            actor=actor,
            operation="propose",
            arguments=args,
            outcome="ok",
            version_before=current,
            version_after=current,
            proposal_id=proposal_id,
        )
        return ProposalResult(
            proposal_id=proposal_id,
            base_version=current,
            target_hash=target.hash(),
            plan_hash=plan.hash(),
            steps=list(plan.steps),
            hazards=plan.all_hazards(),
            note=note,
        )

    return rt.audited("propose", actor, args, act)


def _replayed(session: Session, current: int, target: int) -> list[int]:
    """The deploys to replay from ``current`` to reach ``target``: those of ``target``'s history after the
    current one's (which must be where it starts), oldest first."""
    now, then = deploy_history(session, current), deploy_history(session, target)
    if then[: len(now)] != now:
        shared = [a for a, b in zip(now, then, strict=False) if a == b]
        ancestor = catalog.version_row(session, shared[-1])["number"] if shared else 0
        raise RollbackError(
            Code.ROLLBACK_NOT_ANCESTOR,
            f"version {target} does not extend the current version {current}: they part after version "
            f"{ancestor}",
            hint=f"Roll back to version {ancestor} first (rollback to_version={ancestor}), then redeploy "
            f"version {target}.",
            details={"current_history": now, "target_history": then, "shared": ancestor},
        )
    if len(then) == len(now):
        raise RollbackError(
            Code.ROLLBACK_NOTHING,
            f"version {current} already has the schema of version {target}",
            hint="Nothing to redeploy; list_versions shows the history.",
        )
    return then[len(now) :]


def redeploy_operations(session: Session, target: int) -> list[dict[str, Any]]:
    """The operations that take the current version to the spec of ``target`` (a version whose
    history extends the current one's, as after a rollback): those of each deploy in between, in
    order, as they were deployed."""
    current, spec = catalog.current_version(session)
    if catalog.version_row(session, target)["hash"] == spec.hash():
        raise RollbackError(
            Code.ROLLBACK_NOTHING,
            f"version {current} already has the spec of version {target}",
            hint="Nothing to redeploy; list_versions shows the history.",
        )
    ops: list[dict[str, Any]] = []
    for number in _replayed(session, current, target):
        proposal_id = catalog.version_row(session, number)["proposal_id"]
        ops.extend(catalog.proposal(session, str(proposal_id))["operations"])
    return ops


def _redeploy_restores(tx: Tx, *hashes: str) -> dict[RestoreKey, Retention]:
    """Data rollbacks retained from versions with exactly these specs (the target's, or each version a
    redeploy replays): deploying them again restores it. A later version's retention wins."""
    out: dict[RestoreKey, Retention] = {}
    marks = ", ".join("?" for _ in hashes)
    for row in reversed(
        catalog.retentions(
            tx, f"origin = 'rollback' AND status = 'active' AND spec_hash IN ({marks})", list(hashes)
        )
    ):
        key: RestoreKey = (
            ("entity", row["entity"])
            if row["kind"] == "entity"
            else (row["kind"], row["entity"], row["field"])
        )
        out[key] = catalog.as_retention(row)
    return out


# ------------------------------------------------------------------------------------------ dry run


def _stale(prop: dict[str, Any], current: int) -> PlanError:
    return PlanError(
        Code.PLAN_STALE_BASE,
        f"proposal {prop['id']} was made on version {prop['base_version']}, but the current version is {current}",
        hint="Propose the change again on the current version (describe_app shows it).",
        details={"base_version": prop["base_version"], "current_version": current},
    )


def dry_run(
    rt: DeployContext, proposal_id: str, *, actor: str, progress: Progress | None = None
) -> DryRunReport:
    """Execute the stored plan on the real data inside a transaction, check it, roll it back, store the report."""
    args = {"proposal_id": proposal_id}
    started = time.perf_counter()
    outcome: dict[str, Any] = {}

    def run(tx: Tx) -> None:
        tx.rollback_only = True
        rt.authorize(actor, Capability.DRY_RUN, what="dry-run proposals")
        prop = catalog.proposal(tx, proposal_id)
        current, spec = catalog.current_version(tx)
        if prop["deployed_as"] is not None:
            raise DeployError(
                Code.DEPLOY_ALREADY_APPLIED,
                f"proposal {proposal_id} is already deployed as version {prop['deployed_as']}",
                hint="Nothing to do; describe_app shows the current version.",
            )
        if prop["base_version"] != current:
            raise _stale(prop, current)
        outcome.update(prop=prop, current=current)
        check_drift(rt, tx, spec)
        plan: Plan = prop["plan"]
        steps: list[StepReport] = []
        outcome["steps"] = steps
        try:
            steps.extend(execute(tx, plan, probes=True, progress=progress, lock_wait_s=rt.limits.lane_wait_s))
            outcome["checks"] = run_checks(rt, tx, plan, prop["target"])
        except ButtressError as error:
            outcome["error"] = error

    rt.audited("dry_run", actor, args, run)
    prop, plan = outcome["prop"], outcome["prop"]["plan"]
    error: ButtressError | None = outcome.get("error")
    report = DryRunReport(
        proposal_id=proposal_id,
        base_version=outcome["current"],
        plan_hash=prop["plan_hash"],
        passed=error is None,
        steps=outcome.get("steps", []),
        checks=outcome.get("checks", []),
        hazards=plan.all_hazards(),
        error=error.to_dict() if error else None,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )

    def store(tx: Tx) -> DryRunReport:
        run_id = catalog.insert_dry_run(
            tx,
            proposal_id=proposal_id,
            base_version=outcome["current"],
            plan_hash=prop["plan_hash"],
            passed=report.passed,
            report=report.model_dump(mode="json"),
        )
        rt.audit.append(
            tx,
            actor=actor,
            operation="dry_run",
            arguments=args,
            outcome="passed" if report.passed else "failed",
            error_code=str(error.code) if error else None,
            version_before=outcome["current"],
            version_after=outcome["current"],
            proposal_id=proposal_id,
        )
        return report.model_copy(update={"dry_run_id": run_id})

    return rt.audited("dry_run", actor, args, store)


# ------------------------------------------------------------------------------------------- deploy


def require_deployable(session: Session, prop: dict[str, Any], current: int) -> None:
    """The proposal can be deployed on version ``current``: not deployed yet, made on it, and its last
    dry-run on it passed (``deploy.already_applied``, ``plan.stale_base``, ``deploy.not_dry_run``,
    ``deploy.dry_run_failed``). Checked before an approval is asked for, and again in the deploy."""
    proposal_id = prop["id"]
    if prop["deployed_as"] is not None:
        raise DeployError(
            Code.DEPLOY_ALREADY_APPLIED,
            f"proposal {proposal_id} is already deployed as version {prop['deployed_as']}",
            hint="Nothing to do; describe_app shows the current version.",
        )
    if prop["base_version"] != current:
        raise _stale(prop, current)
    ran = catalog.passed_dry_run(session, proposal_id, current, prop["plan_hash"])
    if ran is None:
        raise DeployError(
            Code.DEPLOY_NOT_DRY_RUN,
            f"proposal {proposal_id} has not been dry-run on version {current}",
            hint="Call dry_run with this proposal_id, read the report, then deploy.",
        )
    if not ran["passed"]:
        error = ran["report"].get("error") or {}
        raise DeployError(
            Code.DEPLOY_DRY_RUN_FAILED,
            f"the last dry-run of {proposal_id} failed"
            + (f" ({error.get('code')}: {error.get('message')})" if error else ""),
            hint="Read the dry-run report's error, fix the data or the proposal, and dry-run again.",
            details={"error": error or None},
        )


def deploy(
    rt: DeployContext,
    proposal_id: str,
    *,
    actor: str,
    progress: Progress | None = None,
    approval: Callable[[Tx, dict[str, Any]], None] | None = None,
) -> DeployResult:
    """Apply a proposal whose dry-run passed on the current version, re-checking everything, in one transaction."""
    args = {"proposal_id": proposal_id}
    started = time.perf_counter()

    def act(tx: Tx) -> DeployResult:
        rt.authorize(actor, Capability.DEPLOY, what="deploy")
        prop = catalog.proposal(tx, proposal_id)
        current, spec = catalog.current_version(tx)
        require_deployable(tx, prop, current)
        check_drift(rt, tx, spec)
        plan: Plan = prop["plan"]
        if approval is not None:
            approval(tx, prop)
        steps = execute(tx, plan, probes=False, progress=progress, lock_wait_s=rt.limits.lane_wait_s)
        run_checks(rt, tx, plan, prop["target"])
        version = current + 1
        for step in plan.steps:
            for retention in step.retains:
                catalog.record_retention(
                    tx, retention, version=version, step=step.index, origin="deploy", spec_hash=spec.hash()
                )
            for table in step.restores:
                catalog.consume_retention(tx, table)
        catalog.insert_version(
            tx,
            number=version,
            spec=prop["target"],
            kind="deploy",
            parent=current,
            restores=None,
            proposal_id=proposal_id,
            plan=plan,
            note=prop["note"],
            actor=actor,
        )
        rt.audit.append(
            tx,
            actor=actor,
            operation="deploy",
            arguments=args,
            outcome="ok",
            version_before=current,
            version_after=version,
            proposal_id=proposal_id,
        )
        target: AppSpec = prop["target"]
        rt.publish(tx, version, target)
        return DeployResult(
            version=version,
            previous_version=current,
            hash=target.hash(),
            proposal_id=proposal_id,
            steps=steps,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    result = rt.audited("deploy", actor, args, act)
    rt.after_version_change(result.version)
    return result


# ----------------------------------------------------------------------------------------- finalize


def finalize(rt: DeployContext, *, before_version: int, actor: str) -> FinalizeResult:
    """Discard data retained by versions older than ``before_version`` (an operator act)."""
    args = {"before_version": before_version}

    def act(tx: Tx) -> FinalizeResult:
        rt.authorize(actor, Capability.FINALIZE, what="finalize retained data")
        current, _ = catalog.current_version(tx)
        if before_version > current + 1 or before_version < 0:
            raise NotFound(
                "version",
                before_version,
                hint=f"Versions run from 0 to {current}; finalize --before N discards what versions below N "
                "retained (N at most current + 1).",
            )
        found = catalog.retentions(tx, "version < ? AND status = 'active'", [before_version])
        for row in found:
            tx.execute(f"DROP TABLE IF EXISTS {qs(row['table_name'])}")
        tx.execute(
            "UPDATE _buttress.retained SET status = 'finalized' WHERE version < ? AND status = 'active'",
            [before_version],
        )
        rt.audit.append(
            tx,
            actor=actor,
            operation="finalize",
            arguments=args,
            outcome="ok",
            version_before=current,
            version_after=current,
        )
        return FinalizeResult(
            finalized_tables=[r["table_name"] for r in found], before_version=before_version
        )

    return rt.audited("finalize", actor, args, act)
