"""A publish step: the message commits with the step's record, so it is published exactly once (its id
is derived from the run and the step: a replay finds it).

It publishes on the topic as the current version has it (``pinned``): a field the run's definition
produces that the topic no longer has is retained, not sent; a topic the current version lacks holds
the message back until it returns.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import ButtressError
from runtime.schema.spec import PublishStep, StepSpec, WorkflowSpec
from runtime.workflows import faults, messages, store, values
from runtime.workflows.steps import failure
from runtime.workflows.steps.runner import Runner, actor, context
from runtime.workflows.store import RunRow


def execute(runner: Runner, run: RunRow, workflow: WorkflowSpec, step: StepSpec) -> bool:
    assert isinstance(step, PublishStep)
    try:
        payload = values.resolve_all(step.args, context(run))
        with runner.transaction() as tx:
            current = runner.fence(tx, run)
            if current is None:
                return False
            number, spec = runner.rt.current
            topic = spec.topic(step.topic)
            held, extra = None, {}
            if topic is None:
                topic = runner.pinned_topic(run, step.topic)
                held = f"topic {step.topic} is not in version {number}"
            else:
                extra = {k: v for k, v in payload.items() if topic.field(k) is None}
                payload = {k: v for k, v in payload.items() if k not in extra}
            published = messages.publish(
                tx,
                topic,
                payload,
                version=number,
                actor=actor(run),
                message_id=values.derived_id("m", run.run_id, step.name),
                held=held,
                acting=store.acting_of(current),
            )
            output: dict[str, Any] = {"message_id": published.message_id, "seq": published.seq}
            if extra and not published.replayed:
                output["converted"] = {
                    "dropped": sorted(extra),
                    "retained": messages.retain_payload(tx, topic.name, published.seq, extra),
                    "version": number,
                }
            if held is not None:
                output["held"] = held
            runner.complete(tx, current, workflow, step, output)
        faults.hit("step.after_commit")
        runner.wake()
        return True
    except ButtressError as error:
        return failure.handle(runner, run, workflow, step, error)
