"""Going back: a compensating run undoes its completed steps, newest first, one at a time at its cursor
(``run.step``), each recorded; a compensation that fails is recorded and the run carries on past it.
Below the first step the run ends: ``compensated`` (``failed`` if a compensation failed), or
``cancelled`` when a cancel started it.

An action compensation commits with its record, as an action step does; an effect compensation goes
through the effect's phases (``effect.send``) and is retried under ``COMPENSATION_RETRY``.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from runtime.errors import ButtressError, Code
from runtime.schema.spec import Compensation, RetryPolicy, WorkflowSpec
from runtime.store.engine import Tx
from runtime.workflows import store, values
from runtime.workflows.status import RunStatus, StepStatus, literal
from runtime.workflows.steps import effect
from runtime.workflows.steps.runner import Runner, actor, context, error_of, first_row
from runtime.workflows.store import RunRow

COMPENSATION_RETRY: Final = RetryPolicy()


def compensate(runner: Runner, run: RunRow, workflow: WorkflowSpec) -> bool:
    """Undo the completed step at the cursor (``run.step``), then move the cursor down; below the
    first step, end the run: compensated (or cancelled, when a cancel started it)."""
    index = run.step
    if index < 0:
        with runner.transaction() as tx:
            current = runner.fence(tx, run)
            if current is None:
                return False
            cancelled = (run.error or {}).get("code") == "workflow.cancelled"
            failures = int(
                tx.scalar(
                    "SELECT count(*) FROM _buttress.steps WHERE run_id = ? AND kind = 'compensation' "
                    f"AND status = {literal(StepStatus.FAILED)}",
                    [run.run_id],
                )
            )
            status = (
                RunStatus.CANCELLED
                if cancelled
                else (RunStatus.FAILED if failures else RunStatus.COMPENSATED)
            )
            store.advance(tx, current, step=-1, status=status, error=run.error)
            runner.audit(
                tx,
                current,
                "workflow_finished",
                {"status": status.value, "failed_compensations": failures},
            )
        return False
    step = workflow.steps[index]
    done = step.name in run.outputs
    compensation = step.compensated_by()
    if compensation is None or not done:
        with runner.transaction() as tx:
            current = runner.fence(tx, run)
            if current is None:
                return False
            store.advance(tx, current, step=index - 1, status=RunStatus.COMPENSATING, error=run.error)
        return True
    seq = len(workflow.steps) + (len(workflow.steps) - 1 - index)
    name = f"{step.name}.compensation"
    try:
        output = _run(runner, run, name, compensation)
        if output is None:
            return False
        recorded, error = StepStatus.COMPLETED, None
    except ButtressError as failure:
        if failure.code in {Code.ENGINE_CONFLICT, Code.ENGINE_BUSY}:
            return False
        if str(failure.code) in COMPENSATION_RETRY.on and run.attempts + 1 < COMPENSATION_RETRY.attempts:
            with runner.transaction() as tx:
                current = runner.fence(tx, run)
                if current is None:
                    return False
                wake = store.utcnow() + datetime.timedelta(seconds=COMPENSATION_RETRY.delay(run.attempts + 1))
                store.advance(
                    tx,
                    current,
                    step=index,
                    status=RunStatus.COMPENSATING,
                    error=run.error,
                    attempts=run.attempts + 1,
                    wake_at=wake,
                    keep_started=True,
                )
            return False
        output, recorded, error = None, StepStatus.FAILED, error_of(failure)
    with runner.transaction() as tx:
        current = runner.fence(tx, run)
        if current is None:
            return False
        if recorded == StepStatus.FAILED:  # an action's writes rolled back: record the failure, carry on
            _record(runner, tx, current, seq, name, recorded, None, error)
            store.advance(tx, current, step=index - 1, status=RunStatus.COMPENSATING, error=run.error)
        else:
            _finish(runner, tx, current, seq, name, output, index)
    return True


def _record(
    runner: Runner,
    tx: Tx,
    run: RunRow,
    seq: int,
    name: str,
    status: StepStatus,
    output: Any,
    error: dict[str, Any] | None,
) -> None:
    store.record_step(
        tx,
        run,
        seq=seq,
        name=name,
        kind="compensation",
        status=status,
        attempts=run.attempts + 1,
        output=output,
        error=error,
        version=runner.rt.current[0],
    )
    runner.audit(
        tx,
        run,
        "workflow_compensation",
        {"step": name},
        "ok" if status == StepStatus.COMPLETED else "refused",
        None if error is None else error.get("code"),
    )


def _finish(runner: Runner, tx: Tx, run: RunRow, seq: int, name: str, output: Any, index: int) -> None:
    _record(runner, tx, run, seq, name, StepStatus.COMPLETED, output, None)
    outputs = {**run.outputs, name: output}
    store.advance(tx, run, step=index - 1, status=RunStatus.COMPENSATING, outputs=outputs, error=run.error)


def _run(runner: Runner, run: RunRow, name: str, compensation: Compensation) -> Any:
    """An action compensation commits with its record (returned as None after committing it
    itself); an effect compensation goes through the effect phases and returns its response."""
    args = values.resolve_all(compensation.args, context(run))
    if compensation.action is not None:
        index = run.step
        workflow = runner.definition(run.version, run.workflow)
        seq = len(workflow.steps) + (len(workflow.steps) - 1 - index)
        with runner.transaction() as tx:
            current = runner.fence(tx, run)
            if current is None:
                return None
            result = runner.rt.actions.run_in(
                tx, compensation.action, args, actor=actor(run), acting=store.acting_of(current)
            )
            output = {**first_row(result.columns, result.rows), "rows_affected": result.rows_affected}
            _finish(runner, tx, current, seq, name, output, index)
        return None
    assert compensation.connector is not None
    answer = effect.send(runner, run, name, compensation.connector, args)
    if answer is None:
        return None
    outcome, body, error = answer
    if outcome == "succeeded":
        return body if body is not None else {}
    assert error is not None
    raise error
