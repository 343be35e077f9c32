"""The workflow and message operations behind the ``Runtime`` facade (which they see as
``context.WorkflowContext``): authorized, audited, each one transaction on the writer lane (or one
snapshot for reads).

Agents start, signal and cancel runs, publish, claim and acknowledge messages (by their policy's
capabilities); only the operator retries a failed run or resolves an effect whose outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runtime.boundary.policy import Acting, Capability
from runtime.errors import ButtressError, Code, NotFound, PolicyError, WorkflowError
from runtime.registry import OPERATOR
from runtime.results import (
    AckResult,
    ClaimResult,
    EffectInfo,
    MessageInfo,
    PublishResult,
    RunDetail,
    RunInfo,
)
from runtime.schema import graph
from runtime.schema.spec import TopicSpec, WorkflowSpec
from runtime.store.audit import now_iso
from runtime.store.engine import Tx
from runtime.workflows import effects, messages, store, values
from runtime.workflows.status import RETRYABLE, TERMINAL, RunStatus, StepStatus, literal
from runtime.workflows.store import RunRow
from runtime.workflows.tables import RESOLUTIONS

if TYPE_CHECKING:
    from runtime.context import WorkflowContext

MAX_LIST = 1000


def _workflow(rt: WorkflowContext, name: str) -> WorkflowSpec:
    found = rt.current[1].workflow(name)
    if found is None:
        known = ", ".join(w.name for w in rt.current[1].workflows) or "none"
        raise NotFound("workflow", name, hint=f"describe_app lists the workflows ({known}).")
    return found


def _topic(rt: WorkflowContext, name: str) -> TopicSpec:
    found = rt.current[1].topic(name)
    if found is None:
        known = ", ".join(t.name for t in rt.current[1].topics) or "none"
        raise NotFound("topic", name, hint=f"describe_app lists the topics ({known}).")
    return found


def _acting(rt: WorkflowContext, actor: str) -> Acting:
    """The context of the work a call sets running: the caller's grant as the policy says now."""
    return rt.policy.acting(actor, operator=actor == OPERATOR)


def decide(rt: WorkflowContext, actor: str, reach: graph.Reach, what: str) -> None:
    """The policy's one decision on everything a call sets in motion (``Policy.decide``)."""
    if actor != OPERATOR:
        rt.policy.decide(actor, reach, what)


def _owner(row: RunRow) -> str:
    return str(row.acting_for or row.created_by)


def _require_owner(rt: WorkflowContext, actor: str, row: RunRow, what: str) -> None:
    """Runs belong to who started them: another agent needs ``manage_runs``."""
    if actor == OPERATOR or _owner(row) == actor or rt.policy.may(actor, Capability.MANAGE_RUNS):
        return
    raise PolicyError(
        Code.POLICY_DENIED,
        f"agent {actor!r} may not {what} run {row.run_id}: it was started by {_owner(row)!r}",
        hint="A run is managed by the agent that started it; ask it, or the operator (manage_runs lets an "
        "agent manage every run).",
        details={"agent": actor, "run_id": row.run_id, "started_by": _owner(row)},
    )


def _info(rt: WorkflowContext, row: RunRow) -> RunInfo:
    try:
        workflow = rt.scheduler.definition(row.version, row.workflow)
    except ButtressError:
        workflow = None
    return store.run_info(row, workflow)


def _change(
    rt: WorkflowContext,
    operation: str,
    actor: str,
    capability: Capability,
    arguments: dict[str, Any],
    act: Any,
    *,
    what: str,
) -> Any:
    """Authorize, run ``act(tx)`` on the writer lane with an audit row, wake the scheduler after
    commit; a refusal is audited."""
    with rt.refusing(operation, actor, arguments):
        rt.authorize(actor, capability, what=what)
        with rt.engine.transaction(timeout=rt.limits.action_timeout_s, wait=rt.limits.lane_wait_s) as tx:
            result, outcome = act(tx)
            number = rt.current[0]
            rt.audit.append(
                tx,
                actor=actor,
                operation=operation,
                arguments=arguments,
                outcome=outcome,
                version_before=number,
                version_after=number,
            )
            tx.on_commit(rt.scheduler.wake)
        return result


# -------------------------------------------------------------------------------------------- runs


def start_workflow(
    rt: WorkflowContext, workflow: str, args: dict[str, Any], run_id: str | None, actor: str
) -> RunInfo:
    arguments = {"workflow": workflow, "args": args, "run_id": run_id}

    def act(tx: Tx) -> tuple[RunInfo, str]:
        number, current = rt.current
        spec = _workflow(rt, workflow)
        decide(rt, actor, graph.of_workflow(current, workflow), f"start workflow {workflow!r}")
        row, created = store.start_run(
            tx,
            spec,
            args,
            version=number,
            actor=actor,
            run_id=run_id,
            origin=f"agent:{actor}",
            acting=_acting(rt, actor),
        )
        return store.run_info(row, spec), "ok" if created else "replayed"

    result: RunInfo = _change(
        rt, "start_workflow", actor, Capability.RUN_WORKFLOWS, arguments, act, what="start workflows"
    )
    return result


def get_run(rt: WorkflowContext, run_id: str, actor: str) -> RunDetail:
    def read() -> RunDetail:
        with rt.engine.snapshot() as reader:
            row = store.require_run(reader, run_id)
            steps = store.steps_of(reader, run_id)
            sent = effects.list_effects(reader, state=None, run_id=run_id, limit=MAX_LIST)
        info = _info(rt, row)
        return RunDetail(**info.model_dump(), steps=steps, effects=sent)

    return rt.reading("get_run", actor, {"run_id": run_id}, read)


def list_runs(
    rt: WorkflowContext, workflow: str | None, status: str | None, limit: int, actor: str
) -> list[RunInfo]:
    def read() -> list[RunInfo]:
        with rt.engine.snapshot() as reader:
            rows = store.list_runs(reader, workflow=workflow, status=status, limit=min(limit, MAX_LIST))
        return [_info(rt, row) for row in rows]

    return rt.reading("list_runs", actor, {"workflow": workflow, "status": status, "limit": limit}, read)


def cancel_run(rt: WorkflowContext, run_id: str, reason: str | None, actor: str) -> RunInfo:
    """Stop a run: the completed steps' compensations run (newest first), then it is ``cancelled``."""
    arguments = {"run_id": run_id, "reason": reason}

    def act(tx: Tx) -> tuple[RunInfo, str]:
        row = store.require_run(tx, run_id)
        _require_owner(rt, actor, row, "cancel")
        if row.status in TERMINAL:
            raise WorkflowError(
                Code.RUN_NOT_ACTIVE,
                f"run {run_id} is already {row.status}",
                hint="Only a run that has not finished can be cancelled.",
                details={"run_id": run_id, "status": row.status.value},
            )
        unknown = [
            str(r[0])
            for r in tx.fetchall(
                "SELECT effect_id FROM _buttress.effects WHERE run_id = ? AND state = 'unknown' ORDER BY effect_id",
                [run_id],
            )
        ]
        if unknown:
            raise WorkflowError(
                Code.WORKFLOW_BLOCKED,
                f"run {run_id} waits on {len(unknown)} effect(s) whose outcome is unknown; cancelling would "
                "compensate on a guess",
                hint="The operator looks at the provider and resolves the effect (buttress effects resolve, or "
                "the control room's Effects page); then the run continues or compensates, and can be cancelled.",
                details={"run_id": run_id, "effects": unknown},
            )
        definition = rt.scheduler.definition(row.version, row.workflow)
        done = [
            s
            for s in definition.steps
            if s.name in row.outputs and f"{s.name}.compensation" not in row.outputs
        ]
        decide(
            rt,
            actor,
            graph.of_run(rt.current[1], definition, steps=(), compensations=done),
            f"cancel run {run_id}",
        )
        error = {"code": "workflow.cancelled", "message": reason or f"cancelled by {actor}"}
        compensating = row.status != RunStatus.COMPENSATING
        cursor = (row.step - 1) if compensating else row.step
        store.advance(
            tx,
            row,
            step=cursor,
            status=RunStatus.COMPENSATING,
            outputs=row.outputs,
            error=error,
            attempts=0,
        )
        updated = store.require_run(tx, run_id)
        return _info(rt, updated), "ok"

    result: RunInfo = _change(
        rt, "cancel_run", actor, Capability.RUN_WORKFLOWS, arguments, act, what="cancel runs"
    )
    return result


def signal_run(rt: WorkflowContext, run_id: str, name: str, payload: dict[str, Any], actor: str) -> RunInfo:
    arguments = {"run_id": run_id, "signal": name, "payload": payload}

    def act(tx: Tx) -> tuple[RunInfo, str]:
        row = store.require_run(tx, run_id)
        _require_owner(rt, actor, row, "signal")
        if actor not in {OPERATOR, _owner(row)} and row.status not in TERMINAL:
            definition = rt.scheduler.definition(row.version, row.workflow)
            decide(
                rt,
                actor,
                graph.of_run(rt.current[1], definition, steps=definition.steps[row.step :], compensations=()),
                f"signal run {run_id}",
            )
        store.send_signal(tx, run_id, name, payload, actor=actor)
        return _info(rt, store.require_run(tx, run_id)), "ok"

    result: RunInfo = _change(
        rt, "signal_run", actor, Capability.RUN_WORKFLOWS, arguments, act, what="signal runs"
    )
    return result


def retry_run(rt: WorkflowContext, run_id: str, actor: str) -> RunInfo:
    """The operator's retry: a failed run tries its failed step again; a blocked run sends its
    effect again (same key)."""
    arguments = {"run_id": run_id}

    def act(tx: Tx) -> tuple[RunInfo, str]:
        row = store.require_run(tx, run_id)
        if row.status not in RETRYABLE:
            raise WorkflowError(
                Code.RUN_NOT_ACTIVE,
                f"run {run_id} is {row.status}; only a failed or blocked run is retried",
                hint="get_run shows where it stands.",
                details={"run_id": run_id, "status": row.status.value},
            )
        if row.step < 0:
            raise WorkflowError(
                Code.RUN_NOT_ACTIVE,
                f"run {run_id} failed while compensating; it cannot be retried",
                hint="Look at its failed compensations (get_run) and repair their effects by hand.",
                details={"run_id": run_id},
            )
        tx.execute(
            "UPDATE _buttress.effects SET state = 'pending', error = NULL WHERE run_id = ? AND state = 'unknown'",
            [run_id],
        )
        tx.execute(
            f"DELETE FROM _buttress.steps WHERE run_id = ? AND seq = ? AND status = {literal(StepStatus.FAILED)}",
            [run_id, row.step],
        )
        store.advance(tx, row, step=row.step, status=RunStatus.RUNNING, error=None, attempts=0)
        return _info(rt, store.require_run(tx, run_id)), "ok"

    result: RunInfo = _change(
        rt, "retry_run", actor, Capability.RESOLVE_EFFECTS, arguments, act, what="retry runs"
    )
    return result


def resolve_effect(
    rt: WorkflowContext, effect_id: str, outcome: str, response: Any, actor: str
) -> EffectInfo:
    """The operator's answer for an effect whose outcome is unknown (they checked with the provider):
    ``succeeded`` (with the provider's response) continues the run; ``rejected`` compensates it."""
    arguments = {"effect_id": effect_id, "outcome": outcome}
    if outcome not in RESOLUTIONS:
        raise WorkflowError(
            Code.ACTION_INVALID_ARGS,
            f"outcome must be 'succeeded' or 'rejected', not {outcome!r}",
            hint="Say what the provider did: succeeded (it happened) or rejected (it did not).",
        )

    def act(tx: Tx) -> tuple[EffectInfo, str]:
        effect = effects.effect_row(tx, effect_id)
        if effect is None:
            raise NotFound("effect", effect_id, hint="buttress effects lists them, the unknown ones first.")
        if effect["state"] not in {"unknown", "pending"}:
            raise WorkflowError(
                Code.RUN_NOT_ACTIVE,
                f"effect {effect_id} is {effect['state']}; only an unknown or pending one is resolved",
                hint="Its outcome is already recorded.",
                details={"effect_id": effect_id, "state": effect["state"]},
            )
        state = "resolved" if outcome == "succeeded" else "rejected"
        tx.execute(
            "UPDATE _buttress.effects SET state = ?, response = ?, settled_at = ?, error = ? WHERE effect_id = ?",
            [
                state,
                values.canonical(response if response is not None else {"resolved_by": actor}),
                now_iso(),
                values.canonical({"message": f"resolved as {outcome} by {actor}"}),
                effect_id,
            ],
        )
        run = store.require_run(tx, effect["run_id"])
        if run.status == RunStatus.BLOCKED:
            store.advance(tx, run, step=run.step, status=RunStatus.RUNNING, error=None, attempts=0)
        updated = effects.effect_row(tx, effect_id)
        assert updated is not None
        return effects.effect_info(updated), "ok"

    result: EffectInfo = _change(
        rt, "resolve_effect", actor, Capability.RESOLVE_EFFECTS, arguments, act, what="resolve effects"
    )
    return result


def list_effects(
    rt: WorkflowContext, state: str | None, run_id: str | None, limit: int, actor: str
) -> list[EffectInfo]:
    def read() -> list[EffectInfo]:
        with rt.engine.snapshot() as reader:
            return effects.list_effects(reader, state=state, run_id=run_id, limit=min(limit, MAX_LIST))

    return rt.reading("list_effects", actor, {"state": state, "run_id": run_id}, read)


# ---------------------------------------------------------------------------------------- messages


def publish_message(
    rt: WorkflowContext, topic: str, payload: dict[str, Any], message_id: str | None, actor: str
) -> PublishResult:
    arguments = {"topic": topic, "payload": payload, "message_id": message_id}

    def act(tx: Tx) -> tuple[PublishResult, str]:
        number, current = rt.current
        spec = _topic(rt, topic)
        decide(rt, actor, graph.of_topic(current, topic), f"publish on topic {topic!r}")
        published = messages.publish(
            tx, spec, payload, version=number, actor=actor, message_id=message_id, acting=_acting(rt, actor)
        )
        return published, "replayed" if published.replayed else "ok"

    result: PublishResult = _change(
        rt, "publish", actor, Capability.PUBLISH, arguments, act, what="publish messages"
    )
    return result


def claim_messages(
    rt: WorkflowContext, topic: str, consumer: str | None, limit: int, lease_s: float, actor: str
) -> ClaimResult:
    who = consumer or actor
    arguments = {"topic": topic, "consumer": who, "limit": limit, "lease_s": lease_s}

    def act(tx: Tx) -> tuple[ClaimResult, str]:
        spec = _topic(rt, topic)
        if not spec.external:
            raise WorkflowError(
                Code.MESSAGE_NOT_EXTERNAL,
                f"topic {topic} is delivered to its subscriptions only; nothing outside claims its messages",
                hint="Read its messages with list_messages (nothing is claimed), or ask for the topic to be "
                "declared with external = true (replace_topic).",
                details={"topic": topic},
            )
        claimed, until = messages.claim(tx, spec, who, limit=max(1, min(limit, 100)), lease_s=lease_s)
        return ClaimResult(
            consumer=who, messages=claimed, lease_until=until.isoformat() if claimed else None
        ), "ok"

    result: ClaimResult = _change(
        rt, "claim_messages", actor, Capability.CONSUME, arguments, act, what="consume messages"
    )
    return result


def ack_messages(
    rt: WorkflowContext, message_ids: Sequence[str], consumer: str | None, actor: str
) -> AckResult:
    who = consumer or actor
    arguments = {"consumer": who, "message_ids": list(message_ids)}

    def act(tx: Tx) -> tuple[AckResult, str]:
        return AckResult(acked=messages.ack(tx, who, message_ids)), "ok"

    result: AckResult = _change(
        rt, "ack_messages", actor, Capability.CONSUME, arguments, act, what="consume messages"
    )
    return result


def list_messages(
    rt: WorkflowContext, topic: str | None, undelivered: bool, limit: int, actor: str
) -> list[MessageInfo]:
    def read() -> list[MessageInfo]:
        with rt.engine.snapshot() as reader:
            found = messages.list_messages(
                reader, topic=topic, undelivered=undelivered, limit=min(limit, MAX_LIST)
            )
        if topic is not None and not found:
            _topic(rt, topic)  # a topic dropped keeps its held messages: unknown only when none is left
        return found

    return rt.reading("list_messages", actor, {"topic": topic, "undelivered": undelivered}, read)
