"""Executing a plan's steps inside the caller's transaction: each step's probes first (rows it would
lose are reported, rows that make it fail refuse it with a hint), then its SQL, timed and counted.

A dry-run, a deploy and a rollback all execute their plan through ``execute``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runtime.errors import ButtressError, Code, DeployError, RollbackError
from runtime.migrate.hazards import HazardCode
from runtime.migrate.plan import Plan, Probe, Step
from runtime.results import Loss, StepReport
from runtime.store.engine import Tx
from runtime.store.values import records

Progress = Callable[[int, int, str], None]
SAMPLE = 5


def execute(
    tx: Tx,
    plan: Plan,
    *,
    probes: bool,
    progress: Progress | None,
    not_lossless: bool = False,
    lock_wait_s: float | None = None,
) -> list[StepReport]:
    """Execute ``plan``'s steps in ``tx``, each after its probes (``probes``), and report each step.

    ``not_lossless``: a failing probe says the rollback cannot be lossless (``rollback.not_lossless``)
    rather than that the step would fail. ``lock_wait_s``: on PostgreSQL, the longest a statement waits
    for a table's lock (a long read on another server holds one; ``engine.busy`` after that): queued
    behind such a read, the change would make every later reader of the table wait too."""
    if lock_wait_s is not None and tx.dialect.name == "postgres":
        tx.execute(f"SET LOCAL lock_timeout = {max(1, int(lock_wait_s * 1000))}")
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
