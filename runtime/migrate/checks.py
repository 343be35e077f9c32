"""The checks run inside the transaction that executed a plan, before a dry-run reports or a deploy or
rollback commits (``run_checks``): the catalog is the target's, views bind, invariants hold within
their budget, references and field checks hold on the rows the plan touched, actions bind, runs in
flight can carry on and the connectors they call are configured. And the check before any of it:
the catalog has not drifted from the active spec (``check_drift``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from runtime.errors import ActionError, ButtressError, Code, DeployError, NotFound, WorkflowError
from runtime.logic import fieldchecks, invariants, references
from runtime.logic.prepared import invariant_checks
from runtime.migrate import bind
from runtime.migrate.ddl import q
from runtime.migrate.execution import PROBE_HINTS, SAMPLE
from runtime.migrate.hazards import HazardCode, hazard
from runtime.migrate.plan import Plan
from runtime.results import Check
from runtime.schema.spec import AppSpec
from runtime.store import catalog, fingerprint
from runtime.store.engine import Tx
from runtime.store.values import records
from runtime.workflows import pinned
from runtime.workflows.status import TERMINAL, status_not_in

if TYPE_CHECKING:
    from runtime.context import CheckContext


def check_drift(rt: CheckContext, tx: Tx, spec: AppSpec) -> None:
    problems = fingerprint.diff(rt.expected_catalog(spec), fingerprint.read(tx))
    if problems:
        raise DeployError(
            Code.CATALOG_DRIFT,
            "the database schema differs from the active spec (changed outside Buttress)",
            hint="An operator must restore the schema or reconcile it; deploys are blocked until then.",
            details={"differences": problems},
        )


def run_checks(rt: CheckContext, tx: Tx, plan: Plan, target: AppSpec) -> list[Check]:
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


def _check_runs(rt: CheckContext, tx: Tx, target: AppSpec, version: int) -> int:
    """Every run in flight can carry on under ``target`` (``pinned.stranded``): its next steps and the
    compensations it may still need call what the target has, as its definition calls them. Raises
    ``workflow.stranded`` naming the runs and the steps; returns how many runs are in flight."""
    rows = tx.fetchall(
        f"SELECT run_id, workflow, version, status, step, {tx.dialect.json_keys('outputs')} "
        f"FROM _buttress.runs WHERE {status_not_in(TERMINAL)}"
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
            undo = step.compensated_by()
            for name in (step.connector if step.kind == "effect" else None, undo.connector if undo else None):
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
