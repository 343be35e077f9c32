"""A step that failed: retried, compensated, blocked or failed, by the error's code and its policies.

A code in the step's retry policy is tried again after a backoff; an effect with no answer after
every attempt has an unknown outcome and blocks its run for the operator. A code in the workflow's
``compensate_on`` starts the compensations of the completed steps, newest first. Anything else fails
the run, unless a completed step left something outside its own records (an effect sent, a step with
a compensation): then the run is blocked, for the operator to weigh.
"""

from __future__ import annotations

import datetime

from runtime.errors import ButtressError, Code
from runtime.schema.spec import StepSpec, WorkflowSpec
from runtime.workflows import store, values
from runtime.workflows.status import RunStatus, StepStatus
from runtime.workflows.steps.runner import Runner, error_of
from runtime.workflows.store import RunRow


def handle(
    runner: Runner,
    run: RunRow,
    workflow: WorkflowSpec,
    step: StepSpec,
    error: ButtressError,
    *,
    effect: str | None = None,
) -> bool:
    """Retry, compensate, block or fail, by the error's code and the step's policy."""
    if error.code in {Code.ENGINE_CONFLICT, Code.ENGINE_BUSY}:
        return False  # another worker moved it, or the lane is busy: look again later
    code = str(error.code)
    attempts = run.attempts + 1
    with runner.transaction() as tx:
        current = runner.fence(tx, run)
        if current is None:
            return False
        if code in step.retry.on and attempts < step.retry.attempts:
            wake = store.utcnow() + datetime.timedelta(seconds=step.retry.delay(attempts))
            store.advance(
                tx,
                current,
                step=current.step,
                status=RunStatus.RUNNING,
                wake_at=wake,
                attempts=attempts,
                error=error_of(error),
                keep_started=True,
            )
            runner.audit(
                tx, current, "workflow_step", {"step": step.name, "attempt": attempts}, "retrying", code
            )
            return False
        if code in step.retry.on and effect is not None:  # no answer after every attempt
            tx.execute(
                "UPDATE _buttress.effects SET state = 'unknown', error = ? WHERE effect_id = ? AND state = 'pending'",
                [values.canonical(error_of(error)), effect],
            )
            store.advance(
                tx,
                current,
                step=current.step,
                status=RunStatus.BLOCKED,
                attempts=attempts,
                error=error_of(error),
                keep_started=True,
            )
            runner.audit(
                tx, current, "workflow_blocked", {"step": step.name, "effect_id": effect}, "refused", code
            )
            return False
        store.record_step(
            tx,
            current,
            seq=current.step,
            name=step.name,
            kind=step.kind,
            status=StepStatus.FAILED,
            attempts=attempts,
            output=None,
            error=error_of(error),
            version=runner.rt.current[0],
        )
        if code in workflow.compensate_on:
            store.advance(
                tx,
                current,
                step=current.step - 1,
                status=RunStatus.COMPENSATING,
                error=error_of(error),
                attempts=0,
            )
            runner.audit(tx, current, "workflow_step", {"step": step.name}, "compensating", code)
            return True
        unsettled = _unsettled(current, workflow)
        if unsettled:
            # Not a business answer (a defect, a step the current version cannot run): the completed
            # effects are the operator's to weigh, never hidden behind a plain "failed".
            blocked = {
                **error_of(error),
                "step": step.name,
                "unsettled": unsettled,
                "effects": [
                    values.effect_key(current.run_id, name)
                    for name in unsettled
                    if (found := workflow.step(name)) is not None and found.kind == "effect"
                ],
            }
            store.advance(
                tx, current, step=current.step, status=RunStatus.BLOCKED, error=blocked, attempts=attempts
            )
            runner.audit(
                tx,
                current,
                "workflow_blocked",
                {"step": step.name, "unsettled": unsettled},
                "refused",
                code,
            )
            return False
        store.advance(
            tx, current, step=current.step, status=RunStatus.FAILED, error=error_of(error), attempts=attempts
        )
        runner.audit(tx, current, "workflow_step", {"step": step.name}, "failed", code)
    return False


def _unsettled(run: RunRow, workflow: WorkflowSpec) -> list[str]:
    """The completed steps of a run that left something outside its own records: an effect sent to a
    provider, or a step with a compensation to undo it."""
    outputs = run.outputs
    return [
        step.name
        for step in workflow.steps[: run.step]
        if step.name in outputs and (step.kind == "effect" or step.compensated_by() is not None)
    ]
