"""The scheduler: in the process that owns the database, it advances runs and delivers messages.

Nothing it knows lives only in memory: every run's position, timer, attempt count and outputs are
rows, so after a crash or a restart the first pass finds every unfinished run where it stopped
(missed timers are due at once) and carries on.

How each step is made safe:

* **action** — the action's writes, the step's record and the run's move to the next step commit in
  one transaction: the step runs exactly once. The move is fenced (``store.advance`` updates the run
  only if it is still where it was read), so two workers can never both advance one step.
* **effect** — three transactions: the intent (request and idempotency key) is recorded; the request
  is sent with the key; the answer is recorded with the step's completion. A crash between sending
  and recording sends the same request with the same key again: a provider that honours keys answers
  with its first result, so the effect happens once. An effect with no answer after every attempt is
  ``unknown`` and its run ``blocked`` until the operator retries or resolves it.
* **publish**, **wait**, **sleep** — the message, the consumed signal or message, or the timer commit
  with the step's record.

A step failing with a code in its retry policy is tried again after a backoff; one failing with a
code in the workflow's ``compensate_on`` starts the compensations of the completed steps, newest
first, each recorded, continuing past individual failures; anything else fails the run.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from runtime.boundary.policy import Acting
from runtime.errors import ButtressError, Code, PolicyError, WorkflowError
from runtime.schema.spec import (
    AppSpec,
    Compensation,
    RetryPolicy,
    StepSpec,
    SubscriptionSpec,
    WorkflowSpec,
)
from runtime.store import catalog
from runtime.store.audit import now_iso
from runtime.store.engine import Tx
from runtime.workflows import connectors, faults, store, values

if TYPE_CHECKING:
    from runtime.runtime import Runtime

logger = logging.getLogger(__name__)

BATCH: Final = 256
COMPENSATION_RETRY: Final = RetryPolicy()


def _error(error: ButtressError) -> dict[str, Any]:
    return {"code": str(error.code), "message": error.message}


def _first_row(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return values.jsonable(dict(zip(columns, rows[0], strict=False))) if rows else {}


class Scheduler:
    """Advances runs and delivers messages on a thread of its own (``start``), or in the caller's
    thread until nothing is due (``drain``, for tests and tools)."""

    def __init__(self, rt: Runtime, *, workers: int = 4, poll_s: float = 0.2) -> None:
        self.rt = rt
        self.poll_s = poll_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="buttress-step")
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._specs: dict[int, AppSpec] = {}
        self._backoff: dict[str, float] = {}  # subscription -> monotonic time it may be tried again
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
                "AND status IN ('running', 'waiting', 'compensating')"
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
                "SELECT count(*), min(wake_at) FROM _buttress.runs WHERE status IN "
                "('running', 'waiting', 'compensating') AND ((wake_at IS NULL AND status <> 'waiting') "
                "OR wake_at <= ?)",
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

    def _pass(self, *, inline: bool) -> bool:
        """One round: due timers in bulk, each subscription's next messages, each due run's steps."""
        worked = self._wake_sleepers()
        worked = self._deliver_all() or worked
        now = time.monotonic()
        due = [r for r in self._due_runs() if self._cooldown.get(r, 0.0) <= now]
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
        for future in futures:
            future.result()
        return worked

    def _due_runs(self) -> list[str]:
        now = store.utcnow()
        with self.rt.engine.snapshot() as reader:
            rows = reader.fetchall(
                "SELECT run_id FROM _buttress.runs WHERE (status IN ('running', 'compensating') "
                "AND (wake_at IS NULL OR wake_at <= ?)) OR (status = 'waiting' AND wake_at <= ? "
                "AND waiting_on NOT LIKE 'sleep:%') ORDER BY coalesce(wake_at, TIMESTAMP '1970-01-01'), "
                "created_at LIMIT ?",
                [now, now, BATCH],
            )
        return [str(r[0]) for r in rows]

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

    def advance(self, run_id: str) -> bool:
        """Run the run's next piece of work; True if there may be more right away."""
        with self.rt.engine.snapshot() as reader:
            run = store.run_row(reader, run_id)
        if run is None or run["status"] not in {"running", "waiting", "compensating"}:
            return False
        now = store.utcnow()
        wake = run["wake_at"]
        if wake is not None and wake > now:
            return False
        workflow = self.definition(run["version"], run["workflow"])
        self._check_history(run, workflow)
        if run["status"] == "compensating":
            return self._compensate(run, workflow)
        if run["step"] >= len(workflow.steps):
            return False
        step = workflow.steps[run["step"]]
        kind = step.kind
        if kind == "action":
            return self._action_step(run, workflow, step)
        if kind == "effect":
            return self._effect_step(run, workflow, step)
        if kind == "publish":
            return self._publish_step(run, workflow, step)
        if kind == "wait":
            return self._wait_step(run, workflow, step)
        return self._sleep_step(run, workflow, step)

    def _fail_run(self, run_id: str, error: ButtressError) -> None:
        """End a run that cannot go on (its history disagrees with its definition), loudly."""
        with self._transaction() as tx:
            run = store.run_row(tx, run_id)
            if run is None or run["status"] not in {"running", "waiting", "compensating"}:
                return
            store.advance(
                tx, run, step=run["step"], status="failed", error=_error(error), attempts=run["attempts"]
            )
            self._audit(tx, run, "workflow_step", {"step": run["step"]}, "failed", str(error.code))

    def _check_history(self, run: dict[str, Any], workflow: WorkflowSpec) -> None:
        """Completed steps must be the definition's first steps, in order: a run never silently
        follows a definition whose history does not match what it already did."""
        names = [s.name for s in workflow.steps]
        done = sorted(name for name in run["outputs"] if not name.endswith(".compensation"))
        forward = run["status"] != "compensating"
        if set(done) != set(names[: len(done)]) or (forward and len(done) != run["step"]):
            raise WorkflowError(
                Code.RUN_HISTORY_MISMATCH,
                f"run {run['run_id']}: its recorded steps {done} are not the first steps of "
                f"{workflow.name} version {run['version']} ({names})",
                hint="Cancel the run; it cannot continue on a definition that disagrees with its history.",
                details={"run_id": run["run_id"], "recorded": done, "definition": names},
            )

    def _context(self, run: dict[str, Any]) -> dict[str, Any]:
        return {"input": run["args"], "steps": run["outputs"], "run": {"id": run["run_id"]}}

    def _actor(self, run: dict[str, Any]) -> str:
        """Who a run's work is audited as: the agent it runs for, through the run."""
        via = f"workflow:{run['run_id']}"
        acting = store.acting_of(run)
        return acting.actor(via) if acting is not None else via

    def _transaction(self) -> Any:
        limits = self.rt.limits
        return self.rt.engine.transaction(timeout=limits.action_timeout_s, wait=limits.lane_wait_s)

    def _fence(self, tx: Tx, run: dict[str, Any]) -> dict[str, Any] | None:
        """The run as it is now in ``tx``, if it is still where ``run`` saw it."""
        current = store.run_row(tx, run["run_id"])
        if current is None or any(current[k] != run[k] for k in ("status", "step", "attempts")):
            return None
        return current

    def _complete(
        self, tx: Tx, run: dict[str, Any], workflow: WorkflowSpec, step: StepSpec, output: Any, **extra: Any
    ) -> bool:
        """Record the step and move the run to the next one (or to completed), with an audit row; True
        if the run has a next step."""
        store.record_step(
            tx,
            run,
            seq=run["step"],
            name=step.name,
            kind=step.kind,
            status="completed",
            attempts=run["attempts"] + 1,
            output=output,
            error=None,
            version=self.rt.current[0],
            first=True,
        )
        outputs = {**run["outputs"], step.name: output}
        following = run["step"] + 1
        status = "completed" if following >= len(workflow.steps) else "running"
        store.advance(tx, run, step=following, status=status, outputs=outputs, **extra)
        self._audit(tx, run, "workflow_step", {"step": step.name, "kind": step.kind, "run_status": status})
        return status == "running"

    def _audit(
        self,
        tx: Tx,
        run: dict[str, Any],
        operation: str,
        arguments: dict[str, Any],
        outcome: str = "ok",
        error_code: str | None = None,
    ) -> None:
        number = self.rt.current[0]
        self.rt.audit.append(
            tx,
            actor=self._actor(run),
            operation=operation,
            arguments={"run_id": run["run_id"], "workflow": run["workflow"], **arguments},
            outcome=outcome,
            error_code=error_code,
            version_before=number,
            version_after=number,
        )

    # ---------------------------------------------------------------------------------- steps

    def _action_step(self, run: dict[str, Any], workflow: WorkflowSpec, step: StepSpec) -> bool:
        assert step.action is not None
        try:
            args = values.resolve_all(step.args, self._context(run))
            with self._transaction() as tx:
                current = self._fence(tx, run)
                if current is None:
                    return False
                result = self.rt._actions.run_in(
                    tx, step.action, args, actor=self._actor(run), acting=store.acting_of(current)
                )
                output = {**_first_row(result.columns, result.rows), "rows_affected": result.rows_affected}
                more = self._complete(tx, current, workflow, step, output)
                faults.hit("step.before_commit")
            faults.hit("step.after_commit")
            return more
        except ButtressError as error:
            return self._failed(run, workflow, step, error)

    def _publish_step(self, run: dict[str, Any], workflow: WorkflowSpec, step: StepSpec) -> bool:
        """Publish on the topic as the current version has it (``pinned``): a field the run's definition
        produces that the topic no longer has is retained, not sent; a topic the current version lacks
        holds the message back until it returns."""
        assert step.topic is not None
        try:
            payload = values.resolve_all(step.args, self._context(run))
            with self._transaction() as tx:
                current = self._fence(tx, run)
                if current is None:
                    return False
                number, spec = self.rt.current
                topic = spec.topic(step.topic)
                held, extra = None, {}
                if topic is None:
                    topic = workflow_topic(self, run, step.topic)
                    held = f"topic {step.topic} is not in version {number}"
                else:
                    extra = {k: v for k, v in payload.items() if topic.field(k) is None}
                    payload = {k: v for k, v in payload.items() if k not in extra}
                published = store.publish(
                    tx,
                    topic,
                    payload,
                    version=number,
                    actor=self._actor(run),
                    message_id=values.derived_id("m", run["run_id"], step.name),
                    held=held,
                    acting=store.acting_of(current),
                )
                output: dict[str, Any] = {"message_id": published.message_id, "seq": published.seq}
                if extra and not published.replayed:
                    output["converted"] = {
                        "dropped": sorted(extra),
                        "retained": store.retain_payload(tx, topic.name, published.seq, extra),
                        "version": number,
                    }
                if held is not None:
                    output["held"] = held
                self._complete(tx, current, workflow, step, output)
            faults.hit("step.after_commit")
            self.wake()
            return True
        except ButtressError as error:
            return self._failed(run, workflow, step, error)

    def _wait_step(self, run: dict[str, Any], workflow: WorkflowSpec, step: StepSpec) -> bool:
        waiting_on = f"signal:{step.signal}" if step.signal is not None else f"topic:{step.topic}"
        try:
            match = values.resolve_all(step.args, self._context(run))
            with self._transaction() as tx:
                current = self._fence(tx, run)
                if current is None:
                    return False
                cursor = None
                if step.signal is not None:
                    received = store.take_signal(tx, run["run_id"], step.signal)
                else:
                    assert step.topic is not None
                    taken = store.take_message(tx, current, step.topic, match if step.signal is None else {})
                    received = None if taken is None else taken[1]
                    cursor = None if taken is None else taken[0]
                if received is not None:
                    self._complete(tx, current, workflow, step, received, message_cursor=cursor)
                    return True
                if current["status"] == "waiting":  # woken by its deadline, nothing arrived
                    raise WorkflowError(
                        Code.WORKFLOW_TIMEOUT,
                        f"step {step.name} waited {step.timeout_s:g} s for {waiting_on} and nothing came",
                        hint="Signal the run sooner, publish the message, or give the step a longer timeout_s.",
                        details={"run_id": run["run_id"], "step": step.name},
                    )
                deadline = (
                    None
                    if step.timeout_s is None
                    else store.utcnow() + datetime.timedelta(seconds=step.timeout_s)
                )
                store.advance(
                    tx,
                    current,
                    step=current["step"],
                    status="waiting",
                    wake_at=deadline,
                    attempts=current["attempts"],
                    waiting_on=waiting_on,
                    keep_started=True,
                )
            return False
        except ButtressError as error:
            return self._failed(run, workflow, step, error)

    def _sleep_step(self, run: dict[str, Any], workflow: WorkflowSpec, step: StepSpec) -> bool:
        if step.seconds is not None:
            until = store.utcnow() + datetime.timedelta(seconds=step.seconds)
        else:
            raw = values.resolve(step.until, self._context(run))
            try:
                parsed = datetime.datetime.fromisoformat(str(raw))
            except ValueError:
                return self._failed(
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
        with self._transaction() as tx:
            current = self._fence(tx, run)
            if current is None:
                return False
            store.advance(
                tx,
                current,
                step=current["step"],
                status="waiting",
                wake_at=until,
                attempts=current["attempts"],
                waiting_on=f"sleep:{step.name}",
                keep_started=True,
            )
        return False

    def _wake_sleepers(self) -> bool:
        """Every sleep that is due, completed in one transaction (a restart after a long stop wakes
        thousands at once): their step records, their moves and their audit rows."""
        now = store.utcnow()
        with self.rt.engine.snapshot() as reader:
            rows = reader.fetchall(
                "SELECT run_id FROM _buttress.runs WHERE status = 'waiting' AND waiting_on LIKE 'sleep:%' "
                "AND wake_at <= ? LIMIT 20000",
                [now],
            )
        if not rows:
            return False
        due = [str(r[0]) for r in rows]
        with self._transaction() as tx:
            runs = store.sleeping_runs(tx, due, now)
            finished = []
            for run in runs:
                workflow = self.definition(run["version"], run["workflow"])
                step = workflow.steps[run["step"]]
                following = run["step"] + 1
                finished.append((run, step.name, following, following >= len(workflow.steps)))
            store.finish_sleeps(tx, finished, version=self.rt.current[0])
            number = self.rt.current[0]
            self.rt.audit.append_many(
                tx,
                [
                    {
                        "actor": self._actor(run),
                        "operation": "workflow_step",
                        "arguments": {
                            "run_id": run["run_id"],
                            "workflow": run["workflow"],
                            "step": name,
                            "kind": "sleep",
                            "run_status": "completed" if last else "running",
                        },
                        "outcome": "ok",
                        "version_before": number,
                        "version_after": number,
                    }
                    for run, name, _, last in finished
                ],
            )
        return bool(finished)

    # -------------------------------------------------------------------------------- effects

    def _effect_step(self, run: dict[str, Any], workflow: WorkflowSpec, step: StepSpec) -> bool:
        assert step.connector is not None
        try:
            request = values.resolve_all(step.args, self._context(run))
            answer = self._effect(run, step.name, step.connector, request)
            if answer is None:
                return False
            outcome, body, error = answer
            if outcome == "succeeded":
                with self._transaction() as tx:
                    current = self._fence(tx, run)
                    if current is None:
                        return False
                    self._complete(tx, current, workflow, step, body)
                faults.hit("step.after_commit")
                return True
            assert error is not None
            raise error
        except ButtressError as error:
            return self._failed(
                run, workflow, step, error, effect=values.effect_key(run["run_id"], step.name)
            )

    def _effect(
        self, run: dict[str, Any], name: str, connector_name: str, request: Any
    ) -> tuple[str, Any, ButtressError | None] | None:
        """Record the intent, send, record the answer. Returns the outcome, the response body and the
        error to handle, or None when the run moved on meanwhile."""
        acting = store.acting_of(run)
        if acting is not None and not acting.allows("connectors", connector_name):
            raise PolicyError(
                Code.POLICY_DENIED,
                f"agent {acting.agent!r} may not send effects through connector {connector_name!r}",
                hint="This is the operator's decision (buttress.toml: connectors = [...]).",
                details={"agent": acting.agent, "connector": connector_name},
            )
        connector = connectors.require(self.rt.policy.connectors, connector_name)
        key = values.effect_key(run["run_id"], name)
        digest = values.digest(request)
        with self._transaction() as tx:
            if self._fence(tx, run) is None:
                return None
            effect = store.effect_row(tx, key)
            if effect is None:
                tx.execute(
                    "INSERT INTO _buttress.effects VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, NULL, NULL, NULL, ?, ?, "
                    "NULL, NULL, NULL)",
                    [
                        key,
                        run["run_id"],
                        name,
                        connector_name,
                        values.canonical(request),
                        digest,
                        self.rt.current[0],
                        now_iso(),
                    ],
                )
                effect = store.effect_row(tx, key)
                assert effect is not None
            elif effect["request_hash"] != digest:
                raise WorkflowError(
                    Code.EFFECT_KEY_REUSED,
                    f"effect {key} was recorded with another request; the run's inputs changed under it",
                    hint="Cancel the run; an effect's request never changes between attempts.",
                    details={"effect_id": key},
                )
            if effect["state"] in {"succeeded", "resolved"}:
                return "succeeded", effect["response"], None
            if effect["state"] == "rejected":
                return "rejected", effect["response"], _rejected(connector_name, effect)
            if effect["state"] == "unknown":
                return None
            tx.execute(
                "UPDATE _buttress.effects SET attempts = attempts + 1, sent_at = ? WHERE effect_id = ?",
                [now_iso(), key],
            )
            self._audit(tx, run, "effect_send", {"effect_id": key, "connector": connector_name, "step": name})
        faults.hit("effect.before_send")
        answer = connectors.send(connector_name, connector, request, key)
        faults.hit("effect.after_send")
        with self._transaction() as tx:
            state = "pending" if answer.outcome == "unavailable" else answer.outcome
            tx.execute(
                "UPDATE _buttress.effects SET state = ?, response = ?, status_code = ?, error = ?, "
                "settled_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END WHERE effect_id = ? AND state = 'pending'",
                [
                    state,
                    None if answer.body is None else values.canonical(answer.body),
                    answer.status_code,
                    None if answer.error is None else values.canonical({"message": answer.error}),
                    state,
                    now_iso(),
                    key,
                ],
            )
            self._audit(
                tx,
                run,
                "effect_answer",
                {
                    "effect_id": key,
                    "connector": connector_name,
                    "state": state,
                    "status_code": answer.status_code,
                },
                outcome="ok" if answer.outcome == "succeeded" else "refused",
            )
        if answer.outcome == "succeeded":
            return "succeeded", answer.body, None
        if answer.outcome == "rejected":
            return (
                "rejected",
                answer.body,
                WorkflowError(
                    Code.EFFECT_REJECTED,
                    f"connector {connector_name} refused the request (HTTP {answer.status_code})",
                    hint="A final answer from the provider: the run compensates, or fails if nothing compensates.",
                    details={"effect_id": key, "status_code": answer.status_code, "response": answer.body},
                ),
            )
        return (
            "unavailable",
            answer.body,
            WorkflowError(
                Code.EFFECT_UNAVAILABLE,
                (
                    f"connector {connector_name} answered HTTP {answer.status_code}, which may be retried"
                    if answer.status_code is not None
                    else f"connector {connector_name} did not answer: {answer.error}"
                ),
                hint="It is retried with the same idempotency key; after the last attempt its outcome is unknown.",
                details={"effect_id": key, "status_code": answer.status_code},
            ),
        )

    # -------------------------------------------------------------------------------- failure

    def _failed(
        self,
        run: dict[str, Any],
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
        attempts = run["attempts"] + 1
        with self._transaction() as tx:
            current = self._fence(tx, run)
            if current is None:
                return False
            if code in step.retry.on and attempts < step.retry.attempts:
                wake = store.utcnow() + datetime.timedelta(seconds=step.retry.delay(attempts))
                store.advance(
                    tx,
                    current,
                    step=current["step"],
                    status="running",
                    wake_at=wake,
                    attempts=attempts,
                    error=_error(error),
                    keep_started=True,
                )
                self._audit(
                    tx, current, "workflow_step", {"step": step.name, "attempt": attempts}, "retrying", code
                )
                return False
            if code in step.retry.on and effect is not None:  # no answer after every attempt
                tx.execute(
                    "UPDATE _buttress.effects SET state = 'unknown', error = ? WHERE effect_id = ? AND state = 'pending'",
                    [values.canonical(_error(error)), effect],
                )
                store.advance(
                    tx,
                    current,
                    step=current["step"],
                    status="blocked",
                    attempts=attempts,
                    error=_error(error),
                    keep_started=True,
                )
                self._audit(
                    tx, current, "workflow_blocked", {"step": step.name, "effect_id": effect}, "refused", code
                )
                return False
            store.record_step(
                tx,
                current,
                seq=current["step"],
                name=step.name,
                kind=step.kind,
                status="failed",
                attempts=attempts,
                output=None,
                error=_error(error),
                version=self.rt.current[0],
            )
            if code in workflow.compensate_on:
                store.advance(
                    tx,
                    current,
                    step=current["step"] - 1,
                    status="compensating",
                    error=_error(error),
                    attempts=0,
                )
                self._audit(tx, current, "workflow_step", {"step": step.name}, "compensating", code)
                return True
            unsettled = _unsettled(current, workflow)
            if unsettled:
                # Not a business answer (a defect, a step the current version cannot run): the completed
                # effects are the operator's to weigh, never hidden behind a plain "failed".
                blocked = {
                    **_error(error),
                    "step": step.name,
                    "unsettled": unsettled,
                    "effects": [
                        values.effect_key(current["run_id"], name)
                        for name in unsettled
                        if (found := workflow.step(name)) is not None and found.kind == "effect"
                    ],
                }
                store.advance(
                    tx, current, step=current["step"], status="blocked", error=blocked, attempts=attempts
                )
                self._audit(
                    tx,
                    current,
                    "workflow_blocked",
                    {"step": step.name, "unsettled": unsettled},
                    "refused",
                    code,
                )
                return False
            store.advance(
                tx, current, step=current["step"], status="failed", error=_error(error), attempts=attempts
            )
            self._audit(tx, current, "workflow_step", {"step": step.name}, "failed", code)
        return False

    # --------------------------------------------------------------------------- compensation

    def _compensate(self, run: dict[str, Any], workflow: WorkflowSpec) -> bool:
        """Undo the completed step at the cursor (``run.step``), then move the cursor down; below the
        first step, end the run: compensated (or cancelled, when a cancel started it)."""
        index = run["step"]
        if index < 0:
            with self._transaction() as tx:
                current = self._fence(tx, run)
                if current is None:
                    return False
                cancelled = (run["error"] or {}).get("code") == "workflow.cancelled"
                failures = int(
                    tx.scalar(
                        "SELECT count(*) FROM _buttress.steps WHERE run_id = ? AND kind = 'compensation' "
                        "AND status = 'failed'",
                        [run["run_id"]],
                    )
                )
                status = "cancelled" if cancelled else ("failed" if failures else "compensated")
                store.advance(tx, current, step=-1, status=status, error=run["error"])
                self._audit(
                    tx, current, "workflow_finished", {"status": status, "failed_compensations": failures}
                )
            return False
        step = workflow.steps[index]
        done = step.name in run["outputs"]
        if step.compensation is None or not done:
            with self._transaction() as tx:
                current = self._fence(tx, run)
                if current is None:
                    return False
                store.advance(tx, current, step=index - 1, status="compensating", error=run["error"])
            return True
        compensation = step.compensation
        seq = len(workflow.steps) + (len(workflow.steps) - 1 - index)
        name = f"{step.name}.compensation"
        try:
            output = self._run_compensation(run, name, compensation)
            if output is None:
                return False
            status, error = "completed", None
        except ButtressError as failure:
            if failure.code in {Code.ENGINE_CONFLICT, Code.ENGINE_BUSY}:
                return False
            if (
                str(failure.code) in COMPENSATION_RETRY.on
                and run["attempts"] + 1 < COMPENSATION_RETRY.attempts
            ):
                with self._transaction() as tx:
                    current = self._fence(tx, run)
                    if current is None:
                        return False
                    wake = store.utcnow() + datetime.timedelta(
                        seconds=COMPENSATION_RETRY.delay(run["attempts"] + 1)
                    )
                    store.advance(
                        tx,
                        current,
                        step=index,
                        status="compensating",
                        error=run["error"],
                        attempts=run["attempts"] + 1,
                        wake_at=wake,
                        keep_started=True,
                    )
                return False
            output, status, error = None, "failed", _error(failure)
        with self._transaction() as tx:
            current = self._fence(tx, run)
            if current is None:
                return False
            if status == "failed":  # an action's writes rolled back: record the failure, carry on
                self._record_compensation(tx, current, seq, name, status, None, error)
                store.advance(tx, current, step=index - 1, status="compensating", error=run["error"])
            else:
                self._finish_compensation(tx, current, seq, name, output, index)
        return True

    def _record_compensation(
        self,
        tx: Tx,
        run: dict[str, Any],
        seq: int,
        name: str,
        status: str,
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
            attempts=run["attempts"] + 1,
            output=output,
            error=error,
            version=self.rt.current[0],
        )
        self._audit(
            tx,
            run,
            "workflow_compensation",
            {"step": name},
            "ok" if status == "completed" else "refused",
            None if error is None else error.get("code"),
        )

    def _finish_compensation(
        self, tx: Tx, run: dict[str, Any], seq: int, name: str, output: Any, index: int
    ) -> None:
        self._record_compensation(tx, run, seq, name, "completed", output, None)
        outputs = {**run["outputs"], name: output}
        store.advance(tx, run, step=index - 1, status="compensating", outputs=outputs, error=run["error"])

    def _run_compensation(self, run: dict[str, Any], name: str, compensation: Compensation) -> Any:
        """An action compensation commits with its record (returned as None after committing it
        itself); an effect compensation goes through the effect phases and returns its response."""
        context = self._context(run)
        args = values.resolve_all(compensation.args, context)
        if compensation.action is not None:
            index = run["step"]
            workflow = self.definition(run["version"], run["workflow"])
            seq = len(workflow.steps) + (len(workflow.steps) - 1 - index)
            with self._transaction() as tx:
                current = self._fence(tx, run)
                if current is None:
                    return None
                result = self.rt._actions.run_in(
                    tx, compensation.action, args, actor=self._actor(run), acting=store.acting_of(current)
                )
                output = {**_first_row(result.columns, result.rows), "rows_affected": result.rows_affected}
                self._finish_compensation(tx, current, seq, name, output, index)
            return None
        assert compensation.connector is not None
        answer = self._effect(run, name, compensation.connector, args)
        if answer is None:
            return None
        outcome, body, error = answer
        if outcome == "succeeded":
            return body if body is not None else {}
        assert error is not None
        raise error

    # ------------------------------------------------------------------------------ delivery

    def _deliver_all(self) -> bool:
        spec = self.rt.current[1]
        worked = False
        for subscription in spec.subscriptions:
            if self._backoff.get(subscription.name, 0.0) > time.monotonic():
                continue
            for _ in range(BATCH):
                if not self._deliver(subscription):
                    break
                worked = True
        return worked

    def _deliver(self, subscription: SubscriptionSpec) -> bool:
        """Hand the subscription its next message: a run started, or an action called, in the same
        transaction as the subscription's cursor (exactly once in effect)."""
        with self.rt.engine.snapshot() as reader:
            cursor = reader.fetchone(
                "SELECT last_seq FROM _buttress.cursors WHERE subscription = ? AND active",
                [subscription.name],
            )
            if cursor is None:
                return False
            row = reader.fetchone(
                "SELECT seq, message_id, payload, acting_for, grant_json, depth FROM _buttress.messages "
                "WHERE topic = ? AND seq > ? AND held IS NULL ORDER BY seq LIMIT 1",
                [subscription.topic, cursor[0]],
            )
        if row is None:
            return False
        seq, message_id, payload = int(row[0]), str(row[1]), store.parse_json(row[2])
        found = store.acting_of({"acting_for": row[3], "grant_json": row[4], "depth": row[5]}) or Acting(
            agent="operator", depth=int(row[5] or 0), max_depth=self.rt.limits.max_chain_depth
        )  # a message from before grants were recorded: the operator's, and still bounded
        acting = found.deeper()  # this delivery is one hop down the chain
        args = values.resolve_all(subscription.args, {"message": payload})
        number, spec = self.rt.current
        via = f"subscription:{subscription.name}"
        actor = acting.actor(via)
        try:
            with self._transaction() as tx:
                if not store.move_cursor(tx, subscription.name, int(cursor[0]), seq):
                    return False
                depth = acting.depth if acting is not None else 1
                limit = self.rt.limits.max_chain_depth
                if subscription.max_depth is not None:
                    limit = min(limit, subscription.max_depth)
                if depth > limit:
                    raise store.chain_error(
                        (acting or Acting(agent="operator")).model_copy(
                            update={"max_depth": limit, "depth": depth}
                        ),
                        f"deliver to subscription {subscription.name}",
                    )
                if subscription.workflow is not None:
                    workflow = spec.workflow(subscription.workflow)
                    assert workflow is not None
                    store.start_run(
                        tx,
                        workflow,
                        args,
                        version=number,
                        actor=actor,
                        run_id=values.derived_id(subscription.name, message_id),
                        origin=f"message:{message_id}",
                        acting=acting,
                    )
                else:
                    assert subscription.action is not None
                    self.rt._actions.run_in(tx, subscription.action, args, actor=actor, acting=acting)
                self.rt.audit.append(
                    tx,
                    actor=actor,
                    operation="deliver",
                    outcome="ok",
                    version_before=number,
                    version_after=number,
                    arguments={"subscription": subscription.name, "message_id": message_id, "seq": seq},
                )
            faults.hit("delivery.after_commit")
            self._backoff.pop(subscription.name, None)
            return True
        except ButtressError as error:
            if str(error.code) in RetryPolicy().on or error.code == Code.LIMIT_RATE:
                self._backoff[subscription.name] = time.monotonic() + 1.0
                return False
            with self._transaction() as tx:  # a final answer: dead-letter it and move on
                if not store.move_cursor(tx, subscription.name, int(cursor[0]), seq):
                    return False
                tx.execute(
                    "INSERT INTO _buttress.dead_letters VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [subscription.name, seq, values.canonical(_error(error)), number, now_iso()],
                )
                self.rt.audit.append(
                    tx,
                    actor=actor,
                    operation="deliver",
                    outcome="refused",
                    error_code=str(error.code),
                    version_before=number,
                    version_after=number,
                    arguments={"subscription": subscription.name, "message_id": message_id, "seq": seq},
                )
            return True


def _unsettled(run: dict[str, Any], workflow: WorkflowSpec) -> list[str]:
    """The completed steps of a run that left something outside its own records: an effect sent to a
    provider, or a step with a compensation to undo it."""
    outputs = run["outputs"]
    return [
        step.name
        for step in workflow.steps[: run["step"]]
        if step.name in outputs and (step.kind == "effect" or step.compensation is not None)
    ]


def _rejected(connector: str, effect: dict[str, Any]) -> WorkflowError:
    return WorkflowError(
        Code.EFFECT_REJECTED,
        f"connector {connector} refused the request (HTTP {effect['status_code']})",
        hint="A final answer from the provider: the run compensates, or fails if nothing compensates.",
        details={
            "effect_id": effect["effect_id"],
            "status_code": effect["status_code"],
            "response": effect["response"],
        },
    )


def workflow_topic(scheduler: Scheduler, run: dict[str, Any], name: str) -> Any:
    """The topic as the run's own version defines it, when the current version no longer has it."""
    spec = scheduler._specs.get(run["version"])
    topic = spec.topic(name) if spec is not None else None
    if topic is None:
        raise WorkflowError(
            Code.RUN_HISTORY_MISMATCH,
            f"topic {name!r} exists neither now nor in version {run['version']}",
            hint="Cancel the run, or add the topic back.",
        )
    return topic
