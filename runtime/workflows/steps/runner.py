"""What every step kind shares: the definitions runs follow, the writer transaction, the fence that
keeps two workers from moving one run, completing a step, and the audit row of a run's work.

A step reads its run, does its work, then moves the run only if it is still where it was read
(``fence``; ``store.advance`` refuses otherwise), so a run taken by two workers moves once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

from runtime.errors import ButtressError, Code, WorkflowError
from runtime.schema.spec import AppSpec, StepSpec, TopicSpec, WorkflowSpec
from runtime.store import catalog
from runtime.store.engine import Tx
from runtime.workflows import leases, store, values
from runtime.workflows.status import RunStatus, StepStatus
from runtime.workflows.store import RunRow

if TYPE_CHECKING:
    from runtime.context import StepContext

BATCH: Final = 256
"""How many due runs one pass takes, and how many messages one subscription gets in a pass."""


class Runner:
    """The runtime as the steps of runs see it; ``wake`` tells the scheduler something became due."""

    def __init__(self, rt: StepContext, wake: Callable[[], None]) -> None:
        self.rt = rt
        self.wake = wake
        self._specs: dict[int, AppSpec] = {}
        self.lease_owner = leases.server_identity() if rt.engine.dialect.shared else None
        """This server's name in the leases of the runs it advances; None on a database this process
        owns, where runs need no lease."""

    def definition(self, version: int, workflow: str) -> WorkflowSpec:
        """The workflow as ``version`` defined it (``workflow.history_mismatch`` when it did not)."""
        spec = self._specs.get(version)
        if spec is None:
            with self.rt.engine.snapshot() as reader:
                spec = AppSpec.model_validate(catalog.version_row(reader, version)["spec"])
            self._specs[version] = spec
        found = spec.workflow(workflow)
        if found is None:
            raise WorkflowError(
                Code.RUN_HISTORY_MISMATCH,
                f"version {version} defines no workflow {workflow!r}",
                hint="The run's recorded version does not match its workflow; cancel it.",
                details={"version": version, "workflow": workflow},
            )
        return found

    def pinned_topic(self, run: RunRow, name: str) -> TopicSpec:
        """The topic as the run's own version defines it, when the current version no longer has it."""
        spec = self._specs.get(run.version)
        topic = spec.topic(name) if spec is not None else None
        if topic is None:
            raise WorkflowError(
                Code.RUN_HISTORY_MISMATCH,
                f"topic {name!r} exists neither now nor in version {run.version}",
                hint="Cancel the run, or add the topic back.",
            )
        return topic

    def transaction(self) -> AbstractContextManager[Tx]:
        limits = self.rt.limits
        return self.rt.engine.transaction(timeout=limits.action_timeout_s, wait=limits.lane_wait_s)

    def hold(self, tx: Tx, run: RunRow, request_s: float) -> leases.Holding | None:
        """Before a request leaves for a provider: renew this server's lease of ``run`` for the
        request's ``request_s`` plus the lease (``leases.hold``); None when another server took the run
        over. On a database this process owns, always held."""
        if self.lease_owner is None:
            return leases.Holding(float("inf"))
        seconds = self.rt.limits.run_lease_s
        return leases.hold(tx, run, owner=self.lease_owner, seconds=seconds, request_s=request_s)

    def fence(self, tx: Tx, run: RunRow) -> RunRow | None:
        """The run as it is now in ``tx``, if it is still where ``run`` saw it."""
        current = store.run_row(tx, run.run_id)
        if current is None or (current.status, current.step, current.attempts, current.lease_epoch) != (
            run.status,
            run.step,
            run.attempts,
            run.lease_epoch,
        ):
            return None
        return current

    def complete(
        self, tx: Tx, run: RunRow, workflow: WorkflowSpec, step: StepSpec, output: Any, **extra: Any
    ) -> bool:
        """Record the step and move the run to the next one (or to completed), with an audit row; True
        if the run has a next step."""
        store.record_step(
            tx,
            run,
            seq=run.step,
            name=step.name,
            kind=step.kind,
            status=StepStatus.COMPLETED,
            attempts=run.attempts + 1,
            output=output,
            error=None,
            version=self.rt.current[0],
            first=True,
        )
        outputs = {**run.outputs, step.name: output}
        following = run.step + 1
        status = RunStatus.COMPLETED if following >= len(workflow.steps) else RunStatus.RUNNING
        store.advance(tx, run, step=following, status=status, outputs=outputs, **extra)
        self.audit(
            tx, run, "workflow_step", {"step": step.name, "kind": step.kind, "run_status": status.value}
        )
        return status == RunStatus.RUNNING

    def audit(
        self,
        tx: Tx,
        run: RunRow,
        operation: str,
        arguments: dict[str, Any],
        outcome: str = "ok",
        error_code: str | None = None,
    ) -> None:
        number = self.rt.current[0]
        self.rt.audit.append(
            tx,
            actor=actor(run),
            operation=operation,
            arguments={"run_id": run.run_id, "workflow": run.workflow, **arguments},
            outcome=outcome,
            error_code=error_code,
            version_before=number,
            version_after=number,
        )


Step = Callable[[Runner, RunRow, WorkflowSpec, StepSpec], bool]
"""A step kind's ``execute``: take the run's step; True if the run may go on right away."""


def actor(run: RunRow) -> str:
    """Who a run's work is audited as: the agent it runs for, through the run."""
    via = f"workflow:{run.run_id}"
    acting = store.acting_of(run)
    return acting.actor(via) if acting is not None else via


def context(run: RunRow) -> dict[str, Any]:
    """What a step's arguments are resolved against: the run's input, its steps' outputs, its id."""
    return {"input": run.args, "steps": run.outputs, "run": {"id": run.run_id}}


def error_of(error: ButtressError) -> dict[str, Any]:
    """An error as a run or a step records it."""
    return {"code": str(error.code), "message": error.message}


def first_row(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """An action's first row as the output of the step that called it ({} when it returned none)."""
    return values.jsonable(dict(zip(columns, rows[0], strict=False))) if rows else {}
