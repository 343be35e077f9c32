"""A wait step: the consumed signal, or the message taken (the run's message cursor moves past it),
commits with the step's record. When nothing has come the run waits, until a signal or a message for
it wakes it, or its deadline passes (``workflow.timeout``).
"""

from __future__ import annotations

import datetime

from runtime.errors import ButtressError, Code, WorkflowError
from runtime.schema.spec import StepSpec, WaitStep, WorkflowSpec
from runtime.workflows import messages, store, values
from runtime.workflows.status import RunStatus
from runtime.workflows.steps import failure
from runtime.workflows.steps.runner import Runner, context
from runtime.workflows.store import RunRow


def execute(runner: Runner, run: RunRow, workflow: WorkflowSpec, step: StepSpec) -> bool:
    assert isinstance(step, WaitStep)
    waiting_on = f"signal:{step.signal}" if step.signal is not None else f"topic:{step.topic}"
    try:
        match = values.resolve_all(step.args, context(run))
        with runner.transaction() as tx:
            current = runner.fence(tx, run)
            if current is None:
                return False
            cursor = None
            if step.signal is not None:
                received = store.take_signal(tx, run.run_id, step.signal)
            else:
                assert step.topic is not None
                taken = messages.take_message(tx, current, step.topic, match if step.signal is None else {})
                received = None if taken is None else taken[1]
                cursor = None if taken is None else taken[0]
            if received is not None:
                runner.complete(tx, current, workflow, step, received, message_cursor=cursor)
                return True
            if current.status == RunStatus.WAITING:  # woken by its deadline, nothing arrived
                raise WorkflowError(
                    Code.WORKFLOW_TIMEOUT,
                    f"step {step.name} waited {step.timeout_s:g} s for {waiting_on} and nothing came",
                    hint="Signal the run sooner, publish the message, or give the step a longer timeout_s.",
                    details={"run_id": run.run_id, "step": step.name},
                )
            deadline = (
                None
                if step.timeout_s is None
                else store.utcnow() + datetime.timedelta(seconds=step.timeout_s)
            )
            store.advance(
                tx,
                current,
                step=current.step,
                status=RunStatus.WAITING,
                wake_at=deadline,
                attempts=current.attempts,
                waiting_on=waiting_on,
                keep_started=True,
            )
        return False
    except ButtressError as error:
        return failure.handle(runner, run, workflow, step, error)
