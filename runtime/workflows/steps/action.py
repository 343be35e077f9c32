"""An action step: the action's writes, the step's record and the run's move to the next step commit in
one transaction, so the step runs exactly once. The move is fenced (``store.advance`` updates the run
only if it is still where it was read), so two workers can never both advance one step.
"""

from __future__ import annotations

from runtime.errors import ButtressError
from runtime.schema.spec import ActionStep, StepSpec, WorkflowSpec
from runtime.workflows import faults, store, values
from runtime.workflows.steps import failure
from runtime.workflows.steps.runner import Runner, actor, context, first_row
from runtime.workflows.store import RunRow


def execute(runner: Runner, run: RunRow, workflow: WorkflowSpec, step: StepSpec) -> bool:
    assert isinstance(step, ActionStep)
    try:
        args = values.resolve_all(step.args, context(run))
        with runner.transaction() as tx:
            current = runner.fence(tx, run)
            if current is None:
                return False
            result = runner.rt.actions.run_in(
                tx, step.action, args, actor=actor(run), acting=store.acting_of(current)
            )
            output = {**first_row(result.columns, result.rows), "rows_affected": result.rows_affected}
            more = runner.complete(tx, current, workflow, step, output)
            faults.hit("step.before_commit")
        faults.hit("step.after_commit")
        return more
    except ButtressError as error:
        return failure.handle(runner, run, workflow, step, error)
