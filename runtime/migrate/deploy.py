"""Propose, dry-run, deploy, rollback and finalize, orchestrated over the pure planner and the engine.

Every function here runs on the writer lane and appends exactly one audit row, in the same
transaction as its effect; a refusal is audited in its own transaction after the failed one
rolled back. A dry-run executes the stored plan and rolls back; deploy re-executes the same
plan and repeats every check inside its own transaction before COMMIT.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runtime.boundary.policy import Capability
from runtime.errors import (
    ActionError,
    ButtressError,
    Code,
    DeployError,
    NotFound,
    PlanError,
    RollbackError,
    WorkflowError,
)
from runtime.logic import fieldchecks, invariants, references
from runtime.logic.actions import invariant_checks
from runtime.migrate import bind, ddl
from runtime.migrate import plan as planner
from runtime.migrate.ddl import q, qs
from runtime.migrate.hazards import Hazard, HazardCode, hazard
from runtime.migrate.plan import Plan, Probe, RestoreKey, Retention, Step
from runtime.results import (
    Check,
    DeployResult,
    DryRunReport,
    FinalizeResult,
    Loss,
    ProposalResult,
    RollbackResult,
    StepReport,
)
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.store import catalog, fingerprint
from runtime.store.engine import Session, Tx
from runtime.store.values import records
from runtime.workflows import pinned
from runtime.workflows.tables import TERMINAL

if TYPE_CHECKING:
    from runtime.runtime import Runtime

Progress = Callable[[int, int, str], None]
SAMPLE = 5


# ------------------------------------------------------------------------------------------ propose


def propose(
    rt: Runtime,
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
        target, plan = planner.plan(spec, ops, base_version=current, restores=restores)
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
    now, then = _history(session, current), _history(session, target)
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


# ------------------------------------------------------------------------------------------ execute


def _execute(
    tx: Tx, plan: Plan, *, probes: bool, progress: Progress | None, not_lossless: bool = False
) -> list[StepReport]:
    reports = []
    total = len(plan.steps)
    for step in plan.steps:
        if progress is not None:
            progress(step.index, total, step.summary)
        started = time.perf_counter()
        losses = _run_probes(tx, step, not_lossless=not_lossless) if probes else []
        affected = 0
        for statement in step.sql:
            result = tx.execute(statement)
            if statement.startswith(("INSERT", "UPDATE")):
                row = result.fetchone()
                affected += int(row[0]) if row and isinstance(row[0], int) else 0
        reports.append(
            StepReport(
                index=step.index,
                summary=step.summary,
                strategy=step.strategy,
                statements=len(step.sql),
                rows_affected=affected,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                losses=losses,
            )
        )
    if progress is not None:
        progress(total, total, "checks")
    return reports


def _run_probes(tx: Tx, step: Step, *, not_lossless: bool) -> list[Loss]:
    losses = []
    for probe in step.probes:
        count = int(tx.scalar(f"SELECT count(*) FROM ({probe.sql}) AS probe"))
        if count == 0:
            continue
        sample = records(tx.execute(f"{probe.sql} LIMIT {SAMPLE}"))
        if probe.kind == "fail":
            raise _probe_error(step, probe, count, sample, not_lossless=not_lossless)
        losses.append(Loss(code=probe.code, message=probe.message, count=count, sample=sample))
    return losses


def _probe_error(
    step: Step, probe: Probe, count: int, sample: list[dict[str, Any]], *, not_lossless: bool
) -> ButtressError:
    details = {
        "step": step.index,
        "summary": step.summary,
        "probe": probe.code,
        "count": count,
        "rows": sample,
    }
    if not_lossless or probe.code == "rollback.not_lossless":
        return RollbackError(
            Code.ROLLBACK_NOT_LOSSLESS,
            f"the older version cannot hold current data: {count} {probe.message}",
            hint="Fix or remove the rows named in details.rows (e.g. with an action), then roll back again.",
            details=details,
        )
    return DeployError(
        Code.DEPLOY_DRY_RUN_FAILED,
        f"step {step.index} ({step.summary}) would fail: {count} {probe.message}",
        hint=PROBE_HINTS.get(
            probe.code, "Fix the data named in details.rows, or change the proposal, then dry-run again."
        ),
        details=details,
    )


PROBE_HINTS: dict[str, str] = {
    HazardCode.REQUIRED_FIELD: "Give the new field a default (existing rows get it), or add it nullable, fill it "
    "with an action, then make it NOT NULL with alter_field and a backfill.",
    HazardCode.SET_NOT_NULL: "Pass backfill in the same alter_field to fill the NULLs, or fix the rows named in "
    "details.rows first.",
    HazardCode.ADD_UNIQUE: "Remove or change the duplicates named in details.rows (with an action), then dry-run again.",
    HazardCode.ADD_CHECK: "Fix the rows named in details.rows so that they satisfy the check, or loosen the check.",
    HazardCode.LOSSY_TYPE_CHANGE: "Fix the values named in details.rows, or choose a type they all convert to.",
    HazardCode.RUNS_STRANDED: "Keep what those runs call compatible (the action, its parameters, the topic's "
    "required fields, the connector) in the same proposal, or let the runs named in details.stranded finish, or "
    "cancel them (cancel_run) first.",
    HazardCode.MESSAGES_STRANDED: "Make the new payload field nullable, keep the type, or let the messages named "
    "in details.rows be delivered first.",
}
"""What to do when a step's probe finds rows that make it fail, by the probe's code."""


def _checks(rt: Runtime, tx: Tx, plan: Plan, target: AppSpec) -> list[Check]:
    """Catalog equals the target's, every view binds, every invariant holds, no action broke."""
    checks: list[Check] = []
    problems = fingerprint.diff(rt.expected_catalog(target), fingerprint.read(tx))
    checks.append(
        Check(
            name="catalog", passed=not problems, detail="; ".join(problems[:10]) or "matches the target spec"
        )
    )
    if problems:
        raise DeployError(
            Code.DEPLOY_FAILED,
            "the catalog after the plan does not match the target spec",
            hint="This is a planner defect; report it with the proposal id.",
            details={"differences": problems},
        )
    for view in target.views:
        tx.execute(f"SELECT * FROM {q(view.name)} LIMIT 0")
    checks.append(Check(name="views", passed=True, detail=f"{len(target.views)} views bind"))
    budget = rt.limits.invariant_budget_ms
    costs: list[str] = []
    for check in invariant_checks(target):
        # Correctness: the whole invariant holds on the data the plan leaves.
        sql = f"SELECT * FROM {check.sql} AS violations LIMIT {SAMPLE}"
        started = time.perf_counter()
        try:
            rows = records(tx.execute(sql, timeout=None if check.incremental else budget / 1000))
        except ButtressError as error:
            if error.code == Code.QUERY_TIMEOUT and (time.perf_counter() - started) * 1000 >= budget:
                raise _too_slow(check.name, None, budget) from None
            if error.code in {Code.QUERY_TIMEOUT, Code.LIMIT_MEMORY}:
                raise
            raise DeployError(
                Code.DEPLOY_DRY_RUN_FAILED,
                f"invariant {check.name!r} cannot be checked on the data the plan leaves: "
                f"{error.details.get('reason') or error.message}",
                hint="The change no longer fits the invariant (a type change, say): replace it in the same "
                "proposal (drop_invariant, then add_invariant with SQL for the new types), or change the "
                "proposal.",
                details={"invariant": check.name, "reason": error.details.get("reason") or error.message},
            ) from None
        took = (time.perf_counter() - started) * 1000
        if rows:
            raise ButtressError(
                Code.INVARIANT_VIOLATED,
                f"invariant {check.name!r} is violated: {check.description}",
                hint="Fix the offending rows, or change the invariant in the proposal.",
                details={"invariant": check.name, "rows": rows},
            )
        # Cost: what every mutation it meets will pay (the check restricted to one key, or all of it).
        if check.incremental:
            took = _restricted_cost(tx, check, budget)
        if took > budget:
            raise _too_slow(check.name, took, budget)
        how = "per key" if check.incremental else "in full"
        costs.append(f"{check.name} {took:.1f} ms {how}")
    checks.append(
        Check(
            name="invariants",
            passed=True,
            detail=f"{len(target.invariants)} invariants hold"
            + (f" (a mutation pays: {', '.join(costs)}; budget {budget:g} ms each)" if costs else ""),
        )
    )
    if target.checked_by == "buttress":
        references.check_all(tx, _changed_references(plan, target))
        _check_fields(tx, plan, target)
    bound = bind.check(rt.bound(target), plan.target_version)
    checks.append(
        Check(
            name="actions",
            passed=True,
            detail=f"{len(target.actions)} actions bind against the target ({bound} statements)",
        )
    )
    in_flight = _check_runs(rt, tx, target, plan.target_version)
    named = _connectors_named(target)
    unknown = sorted(set(named) - set(rt.policy.connectors))
    if unknown:
        raise WorkflowError(
            Code.CONNECTOR_UNKNOWN,
            f"workflows call connectors the operator has not configured: {', '.join(unknown)}",
            hint="Connectors are the operator's ([connectors.<name>] in buttress.toml); ask for them, or use "
            f"a configured one ({', '.join(sorted(rt.policy.connectors)) or 'none yet'}).",
            details={"connectors": unknown, "used_by": {name: named[name] for name in unknown}},
        )
    if target.workflows or target.topics or in_flight:
        checks.append(
            Check(
                name="workflows",
                passed=True,
                detail=f"{len(target.workflows)} workflows, {len(target.topics)} topics, "
                f"{len(target.subscriptions)} subscriptions; connectors configured: {', '.join(sorted(named)) or 'none used'}; "
                f"{in_flight} runs in flight can carry on",
            )
        )
    for spec_check in rt.spec_checks:
        spec_check(target)
    if rt.spec_checks:
        checks.append(Check(name="tools", passed=True, detail=f"{len(target.actions)} action tools build"))
    return checks


def _check_runs(rt: Runtime, tx: Tx, target: AppSpec, version: int) -> int:
    """Every run in flight can carry on under ``target`` (``pinned.stranded``): its next steps and the
    compensations it may still need call what the target has, as its definition calls them. Raises
    ``workflow.stranded`` naming the runs and the steps; returns how many runs are in flight."""
    terminal = ", ".join(f"'{s}'" for s in TERMINAL)
    rows = tx.fetchall(
        "SELECT run_id, workflow, version, status, step, coalesce(json_keys(outputs), []) "
        f"FROM _buttress.runs WHERE status NOT IN ({terminal})"
    )
    if not rows:
        return 0
    specs: dict[int, AppSpec | None] = {}

    def definition(number: int, workflow: str) -> Any:
        if number not in specs:
            try:
                specs[number] = AppSpec.model_validate(catalog.version_row(tx, number)["spec"])
            except NotFound:
                specs[number] = None
        found = specs[number]
        return found.workflow(workflow) if found is not None else None

    runs = [
        {
            "run_id": r[0],
            "workflow": r[1],
            "version": r[2],
            "status": r[3],
            "step": r[4],
            "outputs": list(r[5]),
        }
        for r in rows
    ]
    found = pinned.stranded(runs, definition, target, rt.policy.connectors)
    if found:
        first = found[0]
        raise WorkflowError(
            Code.WORKFLOW_STRANDED,
            f"{first.count} run(s) of {first.workflow} (version {first.version}) in flight would be stranded at "
            f"step {first.step} under version {version}: {first.problem}"
            + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
            hint=PROBE_HINTS[HazardCode.RUNS_STRANDED],
            details={"hazard": str(HazardCode.RUNS_STRANDED), "stranded": [f.as_dict() for f in found]},
        )
    return len(runs)


def _restricted_cost(tx: Tx, check: invariants.Check, budget: float) -> float:
    """Milliseconds the check takes restricted to one key of the data (what one mutation pays)."""
    for table, columns in check.keys.items():
        sample = tx.fetchone(
            f"SELECT {q(columns[0])} FROM {q(table)} WHERE {q(columns[0])} IS NOT NULL LIMIT 1"
        )
        if sample is None:
            continue
        restricted = check.restricted([sample[0]])
        if restricted is None:
            break
        sql, params = restricted
        started = time.perf_counter()
        try:
            tx.execute(
                f"SELECT * FROM {sql} AS violations LIMIT {SAMPLE}", params, timeout=budget / 1000
            ).fetchall()
        except ButtressError as error:
            if error.code != Code.QUERY_TIMEOUT:
                raise
            raise _too_slow(check.name, None, budget) from None
        return (time.perf_counter() - started) * 1000
    return 0.0


def _connectors_named(spec: AppSpec) -> dict[str, list[str]]:
    """Each connector the spec's workflows call, with the steps that call it."""
    out: dict[str, list[str]] = {}
    for workflow in spec.workflows:
        for step in workflow.steps:
            for name in (step.connector, step.compensation.connector if step.compensation else None):
                if name is not None:
                    out.setdefault(name, []).append(f"{workflow.name}.{step.name}")
    return out


def _touched(plan: Plan) -> tuple[set[str], bool]:
    """The entities a step of the plan touched, and whether the plan moved every constraint (a
    ``set_checked_by``)."""
    touched = {str(step.op.get("entity", "")) for step in plan.steps} | {
        str((step.op.get("entity") or {}).get("name", ""))
        for step in plan.steps
        if isinstance(step.op.get("entity"), dict)
    }
    touched |= {
        str(step.op.get("new_name", "")) for step in plan.steps if step.op.get("op") == "rename_entity"
    }
    return touched, any(step.op.get("op") == "set_checked_by" for step in plan.steps)


def _changed_references(plan: Plan, target: AppSpec) -> list[references.Reference]:
    """The references whose rows the plan may have moved: those of entities a step touched."""
    touched, every = _touched(plan)
    return [r for r in references.references_of(target) if every or r.child in touched or r.parent in touched]


def _check_fields(tx: Tx, plan: Plan, target: AppSpec) -> None:
    """Every row of the entities the plan touched satisfies the field checks the runtime enforces
    (the rows a backfill, a type change or a new field's default wrote; a new check's old rows)."""
    touched, every = _touched(plan)
    for entity, checks in fieldchecks.of(target).items():
        if not every and entity not in touched:
            continue
        for check in checks:
            rows = records(tx.execute(fieldchecks.violations_sql(target, entity, check, SAMPLE)))
            if rows:
                raise DeployError(
                    Code.DEPLOY_DRY_RUN_FAILED,
                    f"rows of {entity} would break the check of {check.field} ({check.check})",
                    hint="Fix the rows named in details.rows (a backfill, an update action), or change the "
                    "check in the proposal, then dry-run again.",
                    details={"entity": entity, "field": check.field, "check": check.check, "rows": rows},
                )


def _too_slow(name: str, took: float | None, budget: float) -> ActionError:
    measured = f"{took:.0f} ms" if took is not None else f"more than {budget:g} ms (interrupted)"
    found = hazard(
        HazardCode.INVARIANT_TOO_SLOW,
        f"invariant {name} takes {measured} to check on the current data; the budget is {budget:g} ms",
        f"invariant:{name}",
    )
    return ActionError(
        Code.INVARIANT_TOO_SLOW,
        f"invariant {name!r} takes {measured} to check; every mutation it meets would pay that "
        f"(budget: {budget:g} ms per invariant)",
        hint="Rewrite it so its check touches few rows (filter on keys, avoid scanning whole tables), or "
        "ask the operator to raise invariant_budget_ms.",
        details={"invariant": name, "measured_ms": took, "budget_ms": budget, "hazard": found.model_dump()},
    )


def _check_drift(rt: Runtime, tx: Tx, spec: AppSpec) -> None:
    problems = fingerprint.diff(rt.expected_catalog(spec), fingerprint.read(tx))
    if problems:
        raise DeployError(
            Code.CATALOG_DRIFT,
            "the database schema differs from the active spec (changed outside Buttress)",
            hint="An operator must restore the schema or reconcile it; deploys are blocked until then.",
            details={"differences": problems},
        )


def _stale(prop: dict[str, Any], current: int) -> PlanError:
    return PlanError(
        Code.PLAN_STALE_BASE,
        f"proposal {prop['id']} was made on version {prop['base_version']}, but the current version is {current}",
        hint="Propose the change again on the current version (describe_app shows it).",
        details={"base_version": prop["base_version"], "current_version": current},
    )


# ------------------------------------------------------------------------------------------ dry run


def dry_run(rt: Runtime, proposal_id: str, *, actor: str, progress: Progress | None = None) -> DryRunReport:
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
        _check_drift(rt, tx, spec)
        plan: Plan = prop["plan"]
        steps: list[StepReport] = []
        outcome["steps"] = steps
        try:
            steps.extend(_execute(tx, plan, probes=True, progress=progress))
            outcome["checks"] = _checks(rt, tx, plan, prop["target"])
        except ButtressError as error:
            outcome["error"] = error

    rt.run_refusable("dry_run", actor, args, run)
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


# -------------------------------------------------------------------------------------------- deploy


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
    rt: Runtime,
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
        _check_drift(rt, tx, spec)
        plan: Plan = prop["plan"]
        if approval is not None:
            approval(tx, prop)
        steps = _execute(tx, plan, probes=False, progress=progress)
        _checks(rt, tx, plan, prop["target"])
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


# ------------------------------------------------------------------------------------------ rollback


def _history(tx: Session, number: int) -> list[int]:
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
    history = _history(tx, number)
    if not history:
        return None
    parent = catalog.version_row(tx, history[-1])["parent"]
    return None if parent is None else int(parent)


def plan_rollback(tx: Session, current: int, target_version: int) -> tuple[AppSpec, Plan, dict[int, str]]:
    """The reverse of every deploy between ``target_version`` and ``current``, using their retained data.

    Also returns, per step, the hash of the deployed version whose reversal the step belongs to:
    data a step retains is filed under it, so deploying that version again restores the data.
    """
    history, target_history = _history(tx, current), _history(tx, target_version)
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
    if _history(session, current) == _history(session, target_version):
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
    rt: Runtime,
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
        _check_drift(rt, tx, spec)
        target, plan, owners = plan_rollback(tx, current, target_version)
        if approval is not None:
            approval(tx, {"id": rollback_request_id(current, target_version), "plan_hash": plan.hash()})
        steps = _execute(tx, plan, probes=True, progress=progress, not_lossless=True)
        _checks(rt, tx, plan, target)
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


# ------------------------------------------------------------------------------------------ finalize


def finalize(rt: Runtime, *, before_version: int, actor: str) -> FinalizeResult:
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
