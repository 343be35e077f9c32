"""Rollback: the reverse of every deploy back to an earlier version, planned from their stored plans
with the data they retained, previewed for the data it would destroy, and applied in one transaction
(refused if it cannot be lossless).

``deploy_history`` (the deploys that make up a version) is also what a redeploy replays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.boundary.policy import Capability
from runtime.errors import ButtressError, Code, NotFound, RollbackError
from runtime.migrate import ddl
from runtime.migrate import plan as planner
from runtime.migrate.checks import check_drift, run_checks
from runtime.migrate.execution import Progress, execute
from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Plan, RestoreKey, Retention, Step
from runtime.results import RollbackResult
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.store import catalog
from runtime.store.engine import Session, Tx

if TYPE_CHECKING:
    from runtime.context import RollbackContext


def deploy_history(tx: Session, number: int) -> list[int]:
    """The deploy versions whose plans, applied from version 0, produce version ``number``.

    One read of the lineage columns (no spec or plan is parsed): a rollback's cost does not grow
    with the length of the history.
    """
    lineage = tx.memo.get("lineage")
    if lineage is None:
        lineage = {
            int(n): (str(kind), parent, restores)
            for n, kind, parent, restores in tx.fetchall(
                "SELECT number, kind, parent, restores FROM _buttress.versions"
            )
        }
        tx.memo["lineage"] = lineage
    if number not in lineage:
        raise NotFound("version", number, hint="list_versions shows the history.")
    chain: list[int] = []
    while number != 0:
        kind, parent, restores = lineage[number]
        if kind == "rollback":
            number = int(restores)
        else:
            chain.append(number)
            number = int(parent)
    return list(reversed(chain))


def _predecessor(tx: Session, number: int) -> int | None:
    history = deploy_history(tx, number)
    if not history:
        return None
    parent = catalog.version_row(tx, history[-1])["parent"]
    return None if parent is None else int(parent)


def plan_rollback(tx: Session, current: int, target_version: int) -> tuple[AppSpec, Plan, dict[int, str]]:
    """The reverse of every deploy between ``target_version`` and ``current``, using their retained data.

    Also returns, per step, the hash of the deployed version whose reversal the step belongs to:
    data a step retains is filed under it, so deploying that version again restores the data.
    """
    history, target_history = deploy_history(tx, current), deploy_history(tx, target_version)
    if history[: len(target_history)] != target_history:
        raise RollbackError(
            Code.ROLLBACK_NOT_ANCESTOR,
            f"version {target_version} is not an ancestor of the current version {current}",
            hint="Roll back to a version in the current history (list_versions); to go forward to a version "
            "you rolled back from, use redeploy (it proposes the change, restoring retained data).",
            details={"history": history, "target_history": target_history},
        )
    _, spec = catalog.current_version(tx)
    base_hash = spec.hash()
    steps: list[Step] = []
    owners: dict[int, str] = {}
    # An index dropped earlier in this transaction still holds its columns: every table indexed at
    # any point of the rollback is planned as frozen.
    frozen = {e.name for e in spec.entities if ddl.indexes_of(spec, e)}
    for number in reversed(history[len(target_history) :]):
        row = catalog.version_row(tx, number)
        forward = Plan.model_validate(row["plan"])
        restores: dict[RestoreKey, Retention] = {}
        for found in catalog.retentions(tx, "version = ? AND origin = 'deploy'", [number]):
            if found["status"] == "finalized":
                raise RollbackError(
                    Code.ROLLBACK_FINALIZED,
                    f"the data retained by version {number} was finalized; it cannot be rolled back losslessly",
                    hint="Propose a forward change instead.",
                    details={"version": number},
                )
            if found["status"] != "active":
                continue
            key: RestoreKey = (
                ("entity", found["entity"])
                if found["kind"] == "entity"
                else (found["kind"], found["entity"], found["field"])
            )
            restores[key] = catalog.as_retention(found)
        reverse_ops = changes.parse_operations(
            [op for step in reversed(forward.steps) for op in step.reverse], agent=False
        )
        frozen |= {e.name for e in spec.entities if ddl.indexes_of(spec, e)}
        _, part = planner.plan(
            spec,
            reverse_ops,
            base_version=current,
            restores=restores,
            step_offset=len(steps),
            frozen=frozenset(frozen),
            dialect=tx.dialect,
        )
        steps.extend(part.steps)
        owners.update({step.index: str(row["hash"]) for step in part.steps})
        # The reversed spec equals the parent's up to ordering; continue from the stored one, exactly.
        spec = AppSpec.model_validate(catalog.version_row(tx, row["parent"])["spec"])
    plan = Plan(
        base_version=current,
        target_version=current + 1,
        base_hash=base_hash,
        target_hash=spec.hash(),
        steps=tuple(steps),
    )
    return spec, plan, owners


def resolve_rollback(session: Session, current: int, to_version: int | None) -> int:
    """The version a rollback from ``current`` goes to (the previous one by default), or why not."""
    target_version = _predecessor(session, current) if to_version is None else to_version
    if target_version == current:
        raise RollbackError(
            Code.ROLLBACK_NOTHING,
            f"version {current} is already the current version",
            hint="Pass an earlier version from list_versions, or omit to_version for the previous one.",
            details={"current_version": current},
        )
    if target_version is None:
        raise RollbackError(
            Code.ROLLBACK_NOTHING,
            f"version {current} has nothing before it to roll back to",
            hint="list_versions shows the history.",
        )
    if target_version > current or target_version < 0:
        raise RollbackError(
            Code.ROLLBACK_NOT_ANCESTOR,
            f"version {target_version} does not precede {current}",
            hint="Pick an earlier version from list_versions.",
        )
    catalog.version_row(session, target_version)
    if deploy_history(session, current) == deploy_history(session, target_version):
        raise RollbackError(
            Code.ROLLBACK_NOTHING,
            f"version {current} already has the schema of version {target_version}",
            hint="Nothing to roll back; list_versions shows the history.",
        )
    return target_version


def rollback_request_id(current: int, target: int) -> str:
    """The name approvals give a rollback (it has no proposal): bound to its versions and plan hash."""
    return f"rollback:{current}:{target}"


def preview_rollback(session: Session, to_version: int | None) -> tuple[int, int, Plan, list[Hazard]]:
    """The rollback's plan, computed on a snapshot, and the hazards that would destroy data present now
    (a dropped entity or field that holds values; the rows counted by the steps' loss probes)."""
    current, _ = catalog.current_version(session)
    target = resolve_rollback(session, current, to_version)
    _, plan, _ = plan_rollback(session, current, target)
    at_risk: list[Hazard] = []
    for step in plan.steps:
        destructive = [h for h in step.hazards if h.severity == "high"]
        if not destructive:
            continue
        losses = 0
        for probe in step.probes:
            try:
                losses += int(session.scalar(f"SELECT count(*) FROM ({probe.sql}) AS probe"))
            except ButtressError:
                losses += 1  # a probe over a table an earlier step creates: assume data is at stake
        if losses or not step.probes:
            at_risk.extend(destructive)
    return current, target, plan, at_risk


def rollback(
    rt: RollbackContext,
    *,
    to_version: int | None,
    actor: str,
    progress: Progress | None = None,
    approval: Callable[[Tx, dict[str, Any]], None] | None = None,
) -> RollbackResult:
    """Plan the reverse, dry-run it and apply it in one transaction; refuse if it cannot be lossless."""
    args = {"to_version": to_version}
    started = time.perf_counter()

    def act(tx: Tx) -> RollbackResult:
        rt.authorize(actor, Capability.ROLLBACK, what="roll back")
        current, spec = catalog.current_version(tx)
        target_version = resolve_rollback(tx, current, to_version)
        check_drift(rt, tx, spec)
        target, plan, owners = plan_rollback(tx, current, target_version)
        if approval is not None:
            approval(tx, {"id": rollback_request_id(current, target_version), "plan_hash": plan.hash()})
        steps = execute(
            tx, plan, probes=True, progress=progress, not_lossless=True, lock_wait_s=rt.limits.lane_wait_s
        )
        run_checks(rt, tx, plan, target)
        version = current + 1
        for step in plan.steps:
            for retention in step.retains:
                catalog.record_retention(
                    tx,
                    retention,
                    version=version,
                    step=step.index,
                    origin="rollback",
                    spec_hash=owners.get(step.index, plan.base_hash),
                )
            for table in step.restores:
                catalog.consume_retention(tx, table)
        catalog.insert_version(
            tx,
            number=version,
            spec=target,
            kind="rollback",
            parent=current,
            restores=target_version,
            proposal_id=None,
            plan=plan,
            note=None,
            actor=actor,
        )
        rt.audit.append(
            tx,
            actor=actor,
            operation="rollback",
            arguments=args,
            outcome="ok",
            version_before=current,
            version_after=version,
        )
        rt.publish(tx, version, target)
        return RollbackResult(
            version=version,
            previous_version=current,
            restored_version=target_version,
            hash=target.hash(),
            steps=steps,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    result = rt.audited("rollback", actor, args, act)
    rt.after_version_change(result.version)
    return result
