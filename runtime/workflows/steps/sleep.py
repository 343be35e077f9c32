"""A sleep step and the timers that end sleeps: the run records its wake-up time and waits; when the time
comes, the step's record and the run's move commit together (a missed timer is due at once).

Due sleeps are not taken one run at a time: ``wake_due`` completes them all in one transaction (a
restart after a long stop wakes thousands at once).
"""

from __future__ import annotations

import datetime

from runtime.errors import Code, WorkflowError
from runtime.schema.spec import SleepStep, StepSpec, WorkflowSpec
from runtime.workflows import store, values
from runtime.workflows.status import RunStatus, literal
from runtime.workflows.steps import failure
from runtime.workflows.steps.runner import Runner, actor, context
from runtime.workflows.store import RunRow

DUE_AT_ONCE = 20000
"""The most due sleeps one pass completes."""


def execute(runner: Runner, run: RunRow, workflow: WorkflowSpec, step: StepSpec) -> bool:
    assert isinstance(step, SleepStep)
    if step.seconds is not None:
        until = store.utcnow() + datetime.timedelta(seconds=step.seconds)
    else:
        raw = values.resolve(step.until, context(run))
        try:
            parsed = datetime.datetime.fromisoformat(str(raw))
        except ValueError:
            return failure.handle(
                runner,
                run,
                workflow,
                step,
                WorkflowError(
                    Code.ACTION_INVALID_ARGS,
                    f"step {step.name} sleeps until {raw!r}, which is not a time",
                    hint="Give until an ISO 8601 time.",
                ),
            )
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(datetime.UTC).replace(tzinfo=None)
        until = parsed
    with runner.transaction() as tx:
        current = runner.fence(tx, run)
        if current is None:
            return False
        store.advance(
            tx,
            current,
            step=current.step,
            status=RunStatus.WAITING,
            wake_at=until,
            attempts=current.attempts,
            waiting_on=f"sleep:{step.name}",
            keep_started=True,
        )
    return False


def wake_due(runner: Runner) -> bool:
    """Every sleep that is due, completed in one transaction: their step records, their moves and their
    audit rows. True if there were any."""
    now = store.utcnow()
    with runner.rt.engine.snapshot() as reader:
        rows = reader.fetchall(
            f"SELECT run_id FROM _buttress.runs WHERE status = {literal(RunStatus.WAITING)} "
            f"AND waiting_on LIKE 'sleep:%' AND wake_at <= ? LIMIT {DUE_AT_ONCE}",
            [now],
        )
    if not rows:
        return False
    due = [str(r[0]) for r in rows]
    with runner.transaction() as tx:
        runs = store.sleeping_runs(tx, due, now)
        finished = []
        for run in runs:
            workflow = runner.definition(run.version, run.workflow)
            step = workflow.steps[run.step]
            following = run.step + 1
            finished.append((run, step.name, following, following >= len(workflow.steps)))
        store.finish_sleeps(tx, finished, version=runner.rt.current[0])
        number = runner.rt.current[0]
        runner.rt.audit.append_many(
            tx,
            [
                {
                    "actor": actor(run),
                    "operation": "workflow_step",
                    "arguments": {
                        "run_id": run.run_id,
                        "workflow": run.workflow,
                        "step": name,
                        "kind": "sleep",
                        "run_status": (RunStatus.COMPLETED if last else RunStatus.RUNNING).value,
                    },
                    "outcome": "ok",
                    "version_before": number,
                    "version_after": number,
                }
                for run, name, _, last in finished
            ],
        )
    return bool(finished)
