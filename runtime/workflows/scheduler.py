"""The scheduler: in the process that owns the database, it finds the work that is due and hands it out —
the runs to advance (each to one worker at a time), the due sleeps to end, the messages to deliver.

Nothing it knows lives only in memory: every run's position, timer, attempt count and outputs are
rows, so after a crash or a restart the first pass finds every unfinished run where it stopped
(missed timers are due at once) and carries on.

How each step kind is made safe is told where it is executed, in ``steps`` (``action``, ``effect``,
``publish``, ``wait``, ``sleep``, ``compensation``; a failing step in ``failure``); how messages
reach subscriptions, in ``delivery``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import TYPE_CHECKING, Final

from runtime.errors import ButtressError, Code, WorkflowError
from runtime.schema.spec import StepKind, WorkflowSpec
from runtime.workflows import leases, store
from runtime.workflows.delivery import Delivery
from runtime.workflows.status import READY, SCHEDULABLE, RunStatus, literal, status_in
from runtime.workflows.steps import action, compensation, effect, publish, sleep, wait
from runtime.workflows.steps.runner import BATCH, Runner, Step, error_of
from runtime.workflows.store import RunRow

if TYPE_CHECKING:
    from runtime.context import SchedulerContext

logger = logging.getLogger(__name__)

STEPS: Final[Mapping[StepKind, Step]] = {
    "action": action.execute,
    "effect": effect.execute,
    "publish": publish.execute,
    "wait": wait.execute,
    "sleep": sleep.execute,
}
"""Each step kind's execution."""


class Scheduler:
    """Advances runs and delivers messages on a thread of its own (``start``), or in the caller's
    thread until nothing is due (``drain``, for tests and tools)."""

    def __init__(self, rt: SchedulerContext, *, workers: int = 4, poll_s: float = 0.2) -> None:
        self.rt = rt
        self.poll_s = poll_s
        self.runner = Runner(rt, wake=self.wake)
        self.delivery = Delivery(self.runner)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="buttress-step")
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cooldown: dict[str, float] = {}  # run -> monotonic time after an unexpected error

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="buttress-scheduler", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Something became due (a run started, a message published, a signal sent)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def drain(self, timeout: float = 30.0) -> None:
        """Work in this thread until nothing is due now (runs waiting on the future stay waiting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pass(inline=True):
                return
        raise TimeoutError("the scheduler still had work after the timeout")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self._pass(inline=False)
            except Exception:
                logger.exception("scheduler pass failed; retrying")
                worked = False
            if not worked:
                self._wake.wait(self._idle_wait())
                self._wake.clear()

    def _idle_wait(self) -> float:
        with contextlib.suppress(ButtressError), self.rt.engine.snapshot() as reader:
            due = reader.scalar(
                "SELECT min(wake_at) FROM _buttress.runs WHERE wake_at IS NOT NULL "
                f"AND {status_in(SCHEDULABLE)}"
            )
            if isinstance(due, datetime.datetime):
                return max(0.0, min(self.poll_s, (due - store.utcnow()).total_seconds()))
        return self.poll_s

    def due_within(self, seconds: float) -> str | None:
        """Why the process running this scheduler must keep running for the next ``seconds``: runs that
        can advance now, or whose timer (a sleep, a wait's timeout, a retry's backoff) falls within that
        time, and messages an active subscription has yet to receive; None when nothing is due. Runs
        waiting on a signal or a message with no timeout are not: whoever sends it wakes an owner."""
        horizon = store.utcnow() + datetime.timedelta(seconds=seconds)
        with self.rt.engine.snapshot() as reader:
            runs, first = reader.fetchone(
                f"SELECT count(*), min(wake_at) FROM _buttress.runs WHERE {status_in(SCHEDULABLE)} "
                f"AND ((wake_at IS NULL AND status <> {literal(RunStatus.WAITING)}) OR wake_at <= ?)",
                [horizon],
            ) or (0, None)
            messages = reader.scalar(
                "SELECT count(*) FROM _buttress.messages AS m JOIN _buttress.cursors AS c "
                "ON c.topic = m.topic AND c.active AND m.seq > c.last_seq WHERE m.held IS NULL"
            )
        reasons = []
        if runs:
            timer = f", the next timer at {first.isoformat(timespec='seconds')}" if first else ""
            reasons.append(f"{runs} run{'s' if runs != 1 else ''} to advance{timer}")
        if messages:
            reasons.append(f"{messages} message{'s' if messages != 1 else ''} to deliver")
        return "; ".join(reasons) or None

    # ------------------------------------------------------------------------ handing out work

    def _pass(self, *, inline: bool) -> bool:
        """One round: due timers in bulk, each subscription's next messages, each due run's steps."""
        worked = sleep.wake_due(self.runner)
        worked = self.delivery.deliver_all() or worked
        now = time.monotonic()
        due = [r for r in self._due_runs() if self._cooldown.get(r, 0.0) <= now]
        with self._busy_lock:
            due = [r for r in due if r not in self._busy]
        due = self._claim(due)
        futures: list[Future[None]] = []
        for run_id in due:
            with self._busy_lock:
                if run_id in self._busy:
                    continue
                self._busy.add(run_id)
            worked = True
            if inline:
                self._advance_guarded(run_id)
            else:
                futures.append(self._pool.submit(self._advance_guarded, run_id))
        # wait for this pass's steps, but not past a poll: a run whose step waits on a provider must
        # not hold up the next pass (the runs it claims, another server's runs whose leases ran out);
        # runs still stepping stay busy and are not handed out again meanwhile
        wait_for(futures, timeout=self.poll_s)
        return worked

    def _due_runs(self) -> list[str]:
        now = store.utcnow()
        owner = self.runner.lease_owner
        with self.rt.engine.snapshot() as reader:
            held = "" if owner is None else f"AND {leases.free(reader.dialect.utc_now)} "
            rows = reader.fetchall(
                f"SELECT run_id FROM _buttress.runs WHERE (({status_in(READY)} "
                f"AND (wake_at IS NULL OR wake_at <= ?)) OR (status = {literal(RunStatus.WAITING)} "
                f"AND wake_at <= ? AND waiting_on NOT LIKE 'sleep:%')) {held}"
                "ORDER BY coalesce(wake_at, TIMESTAMP '1970-01-01'), created_at LIMIT ?",
                [now, now, *([] if owner is None else [owner]), BATCH],
            )
        return [str(r[0]) for r in rows]

    def _claim(self, due: list[str]) -> list[str]:
        """On a shared database: the leases of the due runs this server could take (``leases``), in one
        writer transaction; the runs taken. Runs nobody else may advance need none."""
        owner = self.runner.lease_owner
        if owner is None or not due:
            return due
        try:
            with self.runner.transaction() as tx:
                return leases.claim(tx, due, owner=owner, seconds=self.rt.limits.run_lease_s)
        except ButtressError as error:
            if error.code not in {Code.ENGINE_CONFLICT, Code.ENGINE_BUSY}:
                raise
            return []

    def _advance_guarded(self, run_id: str) -> None:
        try:
            for _ in range(64):  # a run's consecutive steps, without going back to the queue
                if not self.advance(run_id):
                    break
        except ButtressError as error:
            if error.code == Code.RUN_HISTORY_MISMATCH:
                self._fail_run(run_id, error)
            elif error.code not in {Code.ENGINE_CONFLICT, Code.ENGINE_BUSY}:
                logger.warning("run %s: %s", run_id, error.message)
                self._cooldown[run_id] = time.monotonic() + 1.0
        except Exception:
            logger.exception("run %s could not advance", run_id)
            self._cooldown[run_id] = time.monotonic() + 1.0
        finally:
            with self._busy_lock:
                self._busy.discard(run_id)

    # ---------------------------------------------------------------------------------- runs

    def definition(self, version: int, workflow: str) -> WorkflowSpec:
        """The workflow as ``version`` defined it (``Runner.definition``)."""
        return self.runner.definition(version, workflow)

    def advance(self, run_id: str) -> bool:
        """Run the run's next piece of work; True if there may be more right away."""
        with self.rt.engine.snapshot() as reader:
            run = store.run_row(reader, run_id)
        if run is None or run.status not in SCHEDULABLE:
            return False
        now = store.utcnow()
        wake = run.wake_at
        if wake is not None and wake > now:
            return False
        workflow = self.definition(run.version, run.workflow)
        _check_history(run, workflow)
        if run.status == RunStatus.COMPENSATING:
            return compensation.compensate(self.runner, run, workflow)
        if run.step >= len(workflow.steps):
            return False
        step = workflow.steps[run.step]
        return STEPS[step.kind](self.runner, run, workflow, step)

    def _fail_run(self, run_id: str, error: ButtressError) -> None:
        """End a run that cannot go on (its history disagrees with its definition), loudly."""
        with self.runner.transaction() as tx:
            run = store.run_row(tx, run_id)
            if run is None or run.status not in SCHEDULABLE:
                return
            store.advance(
                tx, run, step=run.step, status=RunStatus.FAILED, error=error_of(error), attempts=run.attempts
            )
            self.runner.audit(tx, run, "workflow_step", {"step": run.step}, "failed", str(error.code))


def _check_history(run: RunRow, workflow: WorkflowSpec) -> None:
    """Completed steps must be the definition's first steps, in order: a run never silently follows a
    definition whose history does not match what it already did."""
    names = [s.name for s in workflow.steps]
    done = sorted(name for name in run.outputs if not name.endswith(".compensation"))
    forward = run.status != RunStatus.COMPENSATING
    if set(done) != set(names[: len(done)]) or (forward and len(done) != run.step):
        raise WorkflowError(
            Code.RUN_HISTORY_MISMATCH,
            f"run {run.run_id}: its recorded steps {done} are not the first steps of "
            f"{workflow.name} version {run.version} ({names})",
            hint="Cancel the run; it cannot continue on a definition that disagrees with its history.",
            details={"run_id": run.run_id, "recorded": done, "definition": names},
        )
