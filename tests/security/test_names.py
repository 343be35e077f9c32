"""Names are matched whole: a name with a trailing newline (or any other whitespace) is not the name
without it. ``$`` in a regular expression also matches before a final newline, so ``slot\\n`` once
deployed beside ``slot``; every kind of name, value path and error code in a proposal is checked here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime

OPERATIONS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "account",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "owner", "type": "text"}],
            "indexes": [{"name": "account_owner", "columns": ["owner"]}],
        },
    },
    {"op": "add_view", "view": {"name": "owners", "sql": "select owner from account"}},
    {
        "op": "add_invariant",
        "invariant": {"name": "sane", "description": "d", "sql": "select id from account where id < 0"},
    },
    {
        "op": "add_action",
        "action": {
            "name": "open",
            "kind": "mutation",
            "params": [{"name": "owner", "type": "text"}],
            "statements": ["insert into account values (1, $owner)"],
        },
    },
    {"op": "add_topic", "topic": {"name": "opened", "payload": [{"name": "owner", "type": "text"}]}},
    {
        "op": "add_workflow",
        "workflow": {
            "name": "welcome",
            "params": [{"name": "owner", "type": "text"}],
            "compensate_on": ["effect.rejected"],
            "steps": [
                {
                    "name": "greet",
                    "kind": "effect",
                    "connector": "mail",
                    "args": {"to": {"from": "input.owner"}},
                    "retry": {"attempts": 2, "on": ["effect.failed"]},
                },
                {
                    "name": "settle",
                    "kind": "action",
                    "action": "open",
                    "args": {"owner": {"from": "input.owner"}},
                },
            ],
        },
    },
    {
        "op": "add_subscription",
        "subscription": {
            "name": "on_open",
            "topic": "opened",
            "workflow": "welcome",
            "args": {"owner": {"from": "message.owner"}},
        },
    },
]

NAMES: dict[str, tuple[Any, ...]] = {
    "entity": (0, "entity", "name"),
    "field": (0, "entity", "fields", 1, "name"),
    "primary key": (0, "entity", "primary_key", 0),
    "index": (0, "entity", "indexes", 0, "name"),
    "index column": (0, "entity", "indexes", 0, "columns", 0),
    "view": (1, "view", "name"),
    "invariant": (2, "invariant", "name"),
    "action": (3, "action", "name"),
    "action param": (3, "action", "params", 0, "name"),
    "topic": (4, "topic", "name"),
    "topic payload field": (4, "topic", "payload", 0, "name"),
    "workflow": (5, "workflow", "name"),
    "workflow param": (5, "workflow", "params", 0, "name"),
    "step": (5, "workflow", "steps", 0, "name"),
    "step connector": (5, "workflow", "steps", 0, "connector"),
    "step action": (5, "workflow", "steps", 1, "action"),
    "subscription": (6, "subscription", "name"),
    "subscription topic": (6, "subscription", "topic"),
    "subscription workflow": (6, "subscription", "workflow"),
    "value path": (5, "workflow", "steps", 0, "args", "to", "from"),
    "message path": (6, "subscription", "args", "owner", "from"),
    "compensation code": (5, "workflow", "compensate_on", 0),
    "retry code": (5, "workflow", "steps", 0, "retry", "on", 0),
}
"""Where each kind of name sits in OPERATIONS."""

VARIANTS = [
    "{}\n",
    "{}\r\n",
    "{}\r",
    "{} ",
    "{}\t",
    " {}",
    "\n{}",
    "{}\x0b",
    "{}\x0c",
    "{}\u00a0",
    "{}\u2028",
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = Runtime.open(Path(tmp_path_factory.mktemp("names")) / "app.duckdb")
    yield rt
    rt.close()


def with_value(path: tuple[Any, ...], template: str) -> list[dict[str, Any]]:
    operations = copy.deepcopy(OPERATIONS)
    node: Any = operations
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = template.format(node[path[-1]])
    return operations


def test_the_operations_propose_cleanly_as_written(runtime: Runtime) -> None:
    assert runtime.propose(copy.deepcopy(OPERATIONS), actor="agent").proposal_id


@pytest.mark.parametrize("variant", VARIANTS, ids=[repr(v.format("")) for v in VARIANTS])
@pytest.mark.parametrize("kind", NAMES)
def test_a_name_with_whitespace_around_it_is_refused(runtime: Runtime, kind: str, variant: str) -> None:
    with pytest.raises(ButtressError) as caught:
        runtime.propose(with_value(NAMES[kind], variant), actor="agent")
    assert caught.value.code == "spec.invalid", caught.value.to_dict()
