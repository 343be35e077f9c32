"""An effect step: a request to an external provider, made safe in three transactions. The intent (the
request and its idempotency key) is recorded; the request is sent with the key; the answer is recorded
with the step's completion. A crash between sending and recording sends the same request with the
same key again: a provider that honours keys answers with its first result, so the effect happens
once. An effect with no answer after every attempt is ``unknown`` and its run ``blocked`` until the
operator retries or resolves it (``failure``).

``send`` is also how an effect compensation reaches its provider.
"""

from __future__ import annotations

from typing import Any, Final

from runtime.errors import ButtressError, Code, PolicyError, WorkflowError
from runtime.schema.spec import EffectStep, StepSpec, WorkflowSpec
from runtime.store.audit import now_iso
from runtime.workflows import connectors, effects, faults, store, values
from runtime.workflows.steps import failure
from runtime.workflows.steps.runner import Runner, context
from runtime.workflows.store import RunRow

SLACK_S: Final = 1.0
"""Added to a connector's timeout in the lease an effect's request holds: closing the connection that
timed out, and the step around the request."""


def execute(runner: Runner, run: RunRow, workflow: WorkflowSpec, step: StepSpec) -> bool:
    assert isinstance(step, EffectStep)
    try:
        request = values.resolve_all(step.args, context(run))
        answer = send(runner, run, step.name, step.connector, request)
        if answer is None:
            return False
        outcome, body, error = answer
        if outcome == "succeeded":
            with runner.transaction() as tx:
                current = runner.fence(tx, run)
                if current is None:
                    return False
                runner.complete(tx, current, workflow, step, body)
            faults.hit("step.after_commit")
            return True
        assert error is not None
        raise error
    except ButtressError as error:
        return failure.handle(
            runner, run, workflow, step, error, effect=values.effect_key(run.run_id, step.name)
        )


def send(
    runner: Runner, run: RunRow, name: str, connector_name: str, request: Any
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
    connector = connectors.require(runner.rt.policy.connectors, connector_name)
    key = values.effect_key(run.run_id, name)
    digest = values.digest(request)
    with runner.transaction() as tx:
        if runner.fence(tx, run) is None:
            return None
        effect = effects.effect_row(tx, key)
        if effect is None:
            tx.execute(
                "INSERT INTO _buttress.effects VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, NULL, NULL, NULL, ?, ?, "
                "NULL, NULL, NULL)",
                [
                    key,
                    run.run_id,
                    name,
                    connector_name,
                    values.canonical(request),
                    digest,
                    runner.rt.current[0],
                    now_iso(),
                ],
            )
            effect = effects.effect_row(tx, key)
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
        holding = runner.hold(tx, run, connector.timeout_s + SLACK_S)
        if holding is None:  # another server took the run over: it sends, not this one
            return None
        tx.execute(
            "UPDATE _buttress.effects SET attempts = attempts + 1, sent_at = ? WHERE effect_id = ?",
            [now_iso(), key],
        )
        runner.audit(tx, run, "effect_send", {"effect_id": key, "connector": connector_name, "step": name})
    faults.hit("effect.before_send")
    if not holding.fresh():  # stalled past the lease since renewing it: another server may have the run
        return None
    answer = connectors.send(connector_name, connector, request, key)
    faults.hit("effect.after_send")
    with runner.transaction() as tx:
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
        runner.audit(
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
