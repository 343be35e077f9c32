"""A workflow's steps, one of each kind: their canonical JSON, the spec's hash and the order of every
step's keys as stored are pinned (written before steps became one model per kind), and so are the
errors a malformed step gets."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from runtime.errors import ButtressError
from runtime.schema.operations import parse_operations
from runtime.schema.spec import AppSpec, WorkflowSpec

SPEC: dict[str, Any] = {
    "topics": [{"name": "paid", "payload": [{"name": "ref", "type": "integer"}], "key": "ref"}],
    "workflows": [
        {
            "name": "ship",
            "params": [{"name": "ref", "type": "integer"}],
            "steps": [
                {
                    "name": "reserve",
                    "kind": "action",
                    "action": "reserve",
                    "args": {"ref": {"from": "input.ref"}},
                    "compensation": {"action": "release", "args": {"ref": {"from": "input.ref"}}},
                },
                {
                    "name": "charge",
                    "kind": "effect",
                    "connector": "bank",
                    "args": {"amount": 10},
                    "retry": {"attempts": 3, "on": ["effect.unavailable"]},
                    "compensation": {"connector": "bank", "args": {"refund": {"from": "steps.charge.id"}}},
                },
                {
                    "name": "announce",
                    "kind": "publish",
                    "topic": "paid",
                    "args": {"ref": {"from": "input.ref"}},
                },
                {"name": "approval", "kind": "wait", "signal": "approved", "timeout_s": 3600},
                {"name": "receipt", "kind": "wait", "topic": "paid", "args": {"ref": {"from": "input.ref"}}},
                {"name": "pause", "kind": "sleep", "seconds": 1.5},
                {"name": "later", "kind": "sleep", "until": "2030-01-01T00:00:00Z", "description": "d"},
            ],
        }
    ],
}

CANONICAL = (
    '{"actions":[],"entities":[],"invariants":[],"topics":[{"description":"","external":false,"key":"'
    'ref","name":"paid","payload":[{"description":"","name":"ref","nullable":false,"type":"integer"}]'
    '}],"views":[],"workflows":[{"compensate_on":["effect.rejected","invariant.violated","action.cons'
    'traint_violated","workflow.timeout"],"description":"","name":"ship","params":[{"description":"",'
    '"name":"ref","nullable":false,"type":"integer"}],"steps":[{"action":"reserve","args":{"ref":{"fr'
    'om":"input.ref"}},"compensation":{"action":"release","args":{"ref":{"from":"input.ref"}},"connec'
    'tor":null},"connector":null,"description":"","kind":"action","name":"reserve","retry":{"attempts'
    '":5,"backoff_s":0.5,"factor":2.0,"max_backoff_s":60.0,"on":["effect.unavailable","engine.busy","'
    'engine.conflict","limit.timeout"]},"seconds":null,"signal":null,"timeout_s":null,"topic":null,"u'
    'ntil":null},{"action":null,"args":{"amount":10},"compensation":{"action":null,"args":{"refund":{'
    '"from":"steps.charge.id"}},"connector":"bank"},"connector":"bank","description":"","kind":"effec'
    't","name":"charge","retry":{"attempts":3,"backoff_s":0.5,"factor":2.0,"max_backoff_s":60.0,"on":'
    '["effect.unavailable"]},"seconds":null,"signal":null,"timeout_s":null,"topic":null,"until":null}'
    ',{"action":null,"args":{"ref":{"from":"input.ref"}},"compensation":null,"connector":null,"descri'
    'ption":"","kind":"publish","name":"announce","retry":{"attempts":5,"backoff_s":0.5,"factor":2.0,'
    '"max_backoff_s":60.0,"on":["effect.unavailable","engine.busy","engine.conflict","limit.timeout"]'
    '},"seconds":null,"signal":null,"timeout_s":null,"topic":"paid","until":null},{"action":null,"arg'
    's":{},"compensation":null,"connector":null,"description":"","kind":"wait","name":"approval","ret'
    'ry":{"attempts":5,"backoff_s":0.5,"factor":2.0,"max_backoff_s":60.0,"on":["effect.unavailable","'
    'engine.busy","engine.conflict","limit.timeout"]},"seconds":null,"signal":"approved","timeout_s":'
    '3600.0,"topic":null,"until":null},{"action":null,"args":{"ref":{"from":"input.ref"}},"compensati'
    'on":null,"connector":null,"description":"","kind":"wait","name":"receipt","retry":{"attempts":5,'
    '"backoff_s":0.5,"factor":2.0,"max_backoff_s":60.0,"on":["effect.unavailable","engine.busy","engi'
    'ne.conflict","limit.timeout"]},"seconds":null,"signal":null,"timeout_s":null,"topic":"paid","unt'
    'il":null},{"action":null,"args":{},"compensation":null,"connector":null,"description":"","kind":'
    '"sleep","name":"pause","retry":{"attempts":5,"backoff_s":0.5,"factor":2.0,"max_backoff_s":60.0,"'
    'on":["effect.unavailable","engine.busy","engine.conflict","limit.timeout"]},"seconds":1.5,"signa'
    'l":null,"timeout_s":null,"topic":null,"until":null},{"action":null,"args":{},"compensation":null'
    ',"connector":null,"description":"d","kind":"sleep","name":"later","retry":{"attempts":5,"backoff'
    '_s":0.5,"factor":2.0,"max_backoff_s":60.0,"on":["effect.unavailable","engine.busy","engine.confl'
    'ict","limit.timeout"]},"seconds":null,"signal":null,"timeout_s":null,"topic":null,"until":"2030-'
    '01-01T00:00:00Z"}]}]}'
)
HASH = "9b583ac873e8da7f764ad95ddd6fd79dedbcd9fe6bc5f5b9098bcb267b2432cd"

KEYS = [
    "name",
    "kind",
    "description",
    "action",
    "connector",
    "topic",
    "signal",
    "args",
    "timeout_s",
    "seconds",
    "until",
    "retry",
    "compensation",
]
"""Every step's keys, in the order ``model_dump`` gives them (the same for every kind)."""

BAD: dict[str, dict[str, Any]] = {
    "action without action": {"name": "s", "kind": "action"},
    "effect without connector": {"name": "s", "kind": "effect"},
    "publish without topic": {"name": "s", "kind": "publish"},
    "publish with action": {"name": "s", "kind": "publish", "topic": "paid", "action": "x"},
    "wait with neither": {"name": "s", "kind": "wait"},
    "wait with both": {"name": "s", "kind": "wait", "topic": "paid", "signal": "go"},
    "timeout on action": {"name": "s", "kind": "action", "action": "a", "timeout_s": 3},
    "sleep with neither": {"name": "s", "kind": "sleep"},
    "seconds on wait": {"name": "s", "kind": "wait", "signal": "go", "seconds": 3},
    "compensation on publish": {
        "name": "s",
        "kind": "publish",
        "topic": "paid",
        "compensation": {"action": "a"},
    },
    "unknown kind": {"name": "s", "kind": "jump"},
    "no kind": {"name": "s"},
}

PROBLEMS = {
    "action without action": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a action step names its action",
    },
    "effect without connector": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a effect step names its connector",
    },
    "publish without topic": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a publish step names its topic",
    },
    "publish with action": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a publish step has no action",
    },
    "wait with neither": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a wait step waits for exactly one of: signal, topic",
    },
    "wait with both": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a wait step waits for exactly one of: signal, topic",
    },
    "timeout on action": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "only a wait step has timeout_s",
    },
    "sleep with neither": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "a sleep step gives exactly one of: seconds, until",
    },
    "seconds on wait": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "only a sleep step has seconds or until",
    },
    "compensation on publish": {
        "path": "operations[0].add_workflow.workflow.steps[0]",
        "problem": "only action and effect steps have a compensation",
    },
    "unknown kind": {
        "path": "operations[0].add_workflow.workflow.steps[0].kind",
        "problem": "Input should be 'action', 'effect', 'publish', 'wait' or 'sleep'",
    },
    "no kind": {"path": "operations[0].add_workflow.workflow.steps[0].kind", "problem": "Field required"},
}
"""The first problem each malformed step is reported with (path and message)."""


def test_a_step_of_every_kind_keeps_its_canonical_json_and_hash() -> None:
    spec = AppSpec.model_validate(SPEC)
    assert spec.canonical_json() == CANONICAL
    assert spec.hash() == HASH


def test_every_step_dumps_every_key_in_the_same_order() -> None:
    steps = AppSpec.model_validate(SPEC).model_dump(mode="json")["workflows"][0]["steps"]
    assert [list(step) for step in steps] == [KEYS] * len(steps)


def test_a_stored_spec_loads_back_to_the_same_hash() -> None:
    stored = AppSpec.model_validate_json(CANONICAL)
    assert stored.hash() == HASH and stored == AppSpec.model_validate(SPEC)


@pytest.mark.parametrize("label", list(BAD))
def test_a_malformed_step_is_refused_with_the_same_problem(label: str) -> None:
    operation = {"op": "add_workflow", "workflow": {"name": "w", "steps": [BAD[label]]}}
    with pytest.raises(ButtressError) as caught:
        parse_operations([operation])
    assert caught.value.code == "spec.invalid"
    assert caught.value.details["problems"][0] == PROBLEMS[label]


def test_every_kind_of_step_as_written_fits_the_output_schema_exactly_once() -> None:
    workflow = AppSpec.model_validate(SPEC).workflows[0]
    jsonschema.validate(
        workflow.model_dump(mode="json"), WorkflowSpec.model_json_schema(mode="serialization")
    )
