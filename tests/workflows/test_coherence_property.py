"""A property: random sequences of deploys and rollbacks, interleaved with workflow starts, signals,
publishes and consumption, never leave a run or a message the active version cannot process unless
the change's report said so.

After every change that went through (a deploy after its dry-run, or a rollback):

* every run in flight can still make progress: each action its remaining steps (and compensations)
  call exists in the active version and takes the arguments the step gives;
* every undelivered message that is not held fits its topic in the active version exactly (its
  fields, with values of the right type);
* if the change held messages back (their topic dropped), its report has ``message.held``;
* if the change took a non-null value away from an undelivered message, its report has
  ``message.converted``.

The oracle reads the spec and the message store directly; it shares no code with the planner.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.schema.spec import AppSpec, TopicSpec, WorkflowSpec
from runtime.workflows import values
from tests.conftest import examples
from tests.workflows.apps import mutation, ref

LOG = {
    "op": "add_entity",
    "entity": {
        "name": "log",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "integer"}, {"name": "extra", "type": "text", "nullable": True}],
    },
}
ACTIONS = {
    "a1": mutation("note", {"id": "integer"}, "insert or replace into log (id) values ($id)")["action"],
    "a2": mutation(
        "note", {"id": "integer", "extra": "text"}, "insert or replace into log values ($id, $extra)"
    )["action"],
}
TOPICS: dict[str, dict[str, Any] | None] = {
    "t0": None,
    "t1": {"name": "ev", "payload": [{"name": "id", "type": "integer"}], "external": True},
    "t2": {
        "name": "ev",
        "payload": [{"name": "id", "type": "integer"}, {"name": "note", "type": "text", "nullable": True}],
        "external": True,
    },
    "t3": {
        "name": "ev",
        "payload": [{"name": "id", "type": "integer"}, {"name": "note", "type": "integer", "nullable": True}],
        "external": True,
    },
    "t4": {
        "name": "ev",
        "payload": [{"name": "id", "type": "integer"}, {"name": "note", "type": "text"}],
        "external": True,
    },
}
NOTE = {"name": "write", "kind": "action", "action": "note", "args": {"id": ref("input.id")}}
WAIT = {"name": "hold", "kind": "wait", "signal": "go"}
WORKFLOWS: dict[str, dict[str, Any] | None] = {
    "w0": None,
    "w1": {"name": "wf", "params": [{"name": "id", "type": "integer"}], "steps": [WAIT, NOTE]},
    "w2": {
        "name": "wf",
        "params": [{"name": "id", "type": "integer"}],
        "steps": [{**NOTE, "name": "first"}, WAIT, NOTE],
    },
}


def operations(spec: AppSpec, topic: str, workflow: str, action: str) -> list[dict[str, Any]]:
    """The operations that take ``spec`` to the chosen variants (the action is always present)."""
    ops: list[dict[str, Any]] = []
    target_topic, target_workflow = TOPICS[topic], WORKFLOWS[workflow]
    current_action = spec.action("note")
    if current_action is None:
        ops.append({"op": "add_action", "action": ACTIONS[action]})
    elif [p.name for p in current_action.params] != [p["name"] for p in ACTIONS[action]["params"]]:
        ops.append({"op": "replace_action", "action": ACTIONS[action]})
    if spec.topic("ev") is None and target_topic is not None:
        ops.append({"op": "add_topic", "topic": target_topic})
    elif spec.topic("ev") is not None and target_topic is None:
        ops.append({"op": "drop_topic", "name": "ev"})
    elif target_topic is not None and TopicSpec.model_validate(target_topic) != spec.topic("ev"):
        ops.append({"op": "replace_topic", "topic": target_topic})
    if spec.workflow("wf") is None and target_workflow is not None:
        ops.append({"op": "add_workflow", "workflow": target_workflow})
    elif spec.workflow("wf") is not None and target_workflow is None:
        ops.append({"op": "drop_workflow", "name": "wf"})
    elif target_workflow is not None and WorkflowSpec.model_validate(target_workflow) != spec.workflow("wf"):
        ops.append({"op": "replace_workflow", "workflow": target_workflow})
    return ops


CHANGE = st.tuples(
    st.just("change"),
    st.sampled_from(sorted(TOPICS)),
    st.sampled_from(sorted(WORKFLOWS)),
    st.sampled_from(sorted(ACTIONS)),
)
PUBLISH = st.tuples(st.just("publish"), st.sampled_from(["5", "x", None]))
KINDS = ["change"] * 4 + ["publish"] * 2 + ["start", "signal", "rollback", "consume"]
STEP = st.sampled_from(KINDS).flatmap(
    lambda kind: CHANGE if kind == "change" else PUBLISH if kind == "publish" else st.just((kind,))
)


class Oracle:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def pending(self) -> dict[str, tuple[dict[str, Any], bool]]:
        """Undelivered messages: payload and whether held."""
        with self.rt.engine.snapshot() as reader:
            rows = reader.fetchall(
                "SELECT message_id, payload, held IS NOT NULL FROM _buttress.messages WHERE acked_at IS NULL"
            )
        return {str(r[0]): (json.loads(r[1]), bool(r[2])) for r in rows}

    def problems(self) -> list[str]:
        spec = self.rt.current[1]
        out: list[str] = []
        for run in self.rt.list_runs(status="active", limit=1000):
            pinned = self.rt.version_spec(run.version).workflow(run.workflow)
            assert pinned is not None
            done = {s.name for s in self.rt.get_run(run.run_id).steps if s.status == "completed"}
            out += [f"run {run.run_id}: {p}" for p in runnable(pinned, done, spec)]
        topic = spec.topic("ev")
        for message_id, (payload, held) in self.pending().items():
            if held:
                continue
            if topic is None:
                out.append(f"message {message_id} of a dropped topic is not held")
                continue
            if list(payload) != [f.name for f in topic.payload]:
                out.append(f"message {message_id} has fields {list(payload)}")
                continue
            try:
                values.check_payload(topic, payload)
            except ButtressError as error:
                out.append(f"message {message_id}: {error.message}")
        return out


def runnable(workflow: WorkflowSpec, done: set[str], spec: AppSpec) -> list[str]:
    out = []
    for step in workflow.steps:
        calls = [(step.action, step.args)] if step.name not in done and step.kind == "action" else []
        undo = step.compensated_by()
        if undo is not None and undo.action is not None:
            calls.append((undo.action, undo.args))
        for name, args in calls:
            if name is None:
                continue
            action = spec.action(name)
            if action is None:
                out.append(f"calls the missing action {name}")
            elif {p.name for p in action.params} != set(args):
                out.append(f"calls {name} with {sorted(args)}, it takes {[p.name for p in action.params]}")
    return out


@example(
    [
        ("change", "t1", "w0", "a1"),
        ("publish", "x"),
        ("change", "t2", "w1", "a1"),
        ("start",),
        ("publish", None),
        ("change", "t3", "w1", "a1"),
        ("change", "t0", "w1", "a2"),
        ("rollback",),
        ("rollback",),
    ]
)
@settings(
    max_examples=examples(20),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(STEP, min_size=6, max_size=16))
def test_no_change_strands_a_run_or_a_message_without_saying_so(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        rt = Runtime.open(Path(directory) / "p.duckdb", audit_reads=False)
        try:
            check(rt, steps)
        finally:
            rt.close()


def check(rt: Runtime, steps: list[tuple[Any, ...]]) -> None:
    oracle = Oracle(rt)
    first = rt.propose([LOG, {"op": "add_action", "action": ACTIONS["a1"]}])
    rt.dry_run(first.proposal_id)
    rt.deploy(first.proposal_id)
    counter = 0
    for step in steps:
        counter += 1
        spec = rt.current[1]
        before = oracle.pending()
        reported: set[str] | None = None
        if step[0] == "change":
            ops = operations(spec, *step[1:])
            if not ops:
                continue
            try:
                proposal = rt.propose(ops)
            except ButtressError:
                continue  # an inconsistent spec is refused at propose: nothing changed
            report = rt.dry_run(proposal.proposal_id)
            if not report.passed:
                continue
            rt.deploy(proposal.proposal_id)
            reported = {h.code for h in proposal.hazards} | {
                loss.code for s in report.steps for loss in s.losses
            }
        elif step[0] == "rollback":
            try:
                result = rt.rollback()
            except ButtressError:
                continue
            reported = {loss.code for s in result.steps for loss in s.losses}
        elif step[0] == "start" and spec.workflow("wf") is not None:
            rt.start_workflow("wf", {"id": counter}, run_id=f"r{counter}")
        elif step[0] == "signal":
            waiting = [r for r in rt.list_runs(status="active", limit=1000) if r.waiting_on == "signal:go"]
            if waiting:
                rt.signal_run(waiting[-1].run_id, "go", {})
        elif step[0] == "publish" and spec.topic("ev") is not None:
            topic = spec.topic("ev")
            assert topic is not None
            payload: dict[str, Any] = {"id": counter}
            if len(topic.payload) > 1:
                note = step[1] if topic.payload[1].type == "text" else (5 if step[1] == "5" else None)
                if note is None and not topic.payload[1].nullable:
                    note = "y"
                payload["note"] = note
            rt.publish_message("ev", payload)
        elif step[0] == "consume" and spec.topic("ev") is not None:
            claimed = rt.claim_messages("ev", consumer="c", limit=2)
            if claimed.messages:
                rt.ack_messages([claimed.messages[0].message_id], consumer="c")
        rt.scheduler.drain()
        if reported is None:
            continue
        assert oracle.problems() == [], (step, reported)
        after = oracle.pending()
        newly_held = [m for m, (_, held) in after.items() if held and not before.get(m, ({}, True))[1]]
        if newly_held:
            assert "message.held" in reported, (step, reported, newly_held)
        lost = [
            m
            for m, (payload, held) in before.items()
            if not held
            and m in after
            and any(v is not None and k not in after[m][0] for k, v in payload.items())
        ]
        if lost:
            assert "message.converted" in reported or "message.held" in reported, (step, reported, lost)
