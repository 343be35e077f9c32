"""Each hazard code: one proposal that raises it, and one close to it that must not (false-positive guard)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.migrate import plan
from runtime.migrate.hazards import MEASURED, HazardCode
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.sql.dialect import DUCKDB, POSTGRES, Dialect
from tests.runtime.conftest import BASE_OPERATIONS

BASE = changes.apply(AppSpec(), changes.parse_operations(BASE_OPERATIONS))
ACTION = {
    "op": "add_action",
    "action": {
        "name": "author_of",
        "kind": "query",
        "params": [{"name": "id", "type": "integer"}],
        "statements": ["select author from memo where id = $id"],
    },
}
TOPIC = {
    "name": "events",
    "payload": [{"name": "id", "type": "integer"}, {"name": "who", "type": "text", "nullable": True}],
}
WORKFLOW = {
    "name": "ping",
    "params": [{"name": "id", "type": "integer"}],
    "steps": [
        {"name": "look", "kind": "action", "action": "author_of", "args": {"id": {"from": "input.id"}}}
    ],
}
SUBSCRIPTION = {
    "name": "pinger",
    "topic": "events",
    "workflow": "ping",
    "args": {"id": {"from": "message.id"}},
}
FLOWS = [
    {"op": "add_topic", "topic": TOPIC},
    {"op": "add_workflow", "workflow": WORKFLOW},
    {"op": "add_subscription", "subscription": SUBSCRIPTION},
]
BASE_WITH_ACTION = changes.apply(BASE, changes.parse_operations([ACTION, *FLOWS]))
TWO_PARAMS = {
    **ACTION["action"],
    "params": [{"name": "id", "type": "integer"}, {"name": "since", "type": "integer"}],
    "statements": ["select author from memo where id = $id and priority > $since"],
}
WITH_SINCE = {
    **WORKFLOW,
    "steps": [
        {
            "name": "look",
            "kind": "action",
            "action": "author_of",
            "args": {"id": {"from": "input.id"}, "since": 0},
        }
    ],
}
NEW_ENTITY = {
    "op": "add_entity",
    "entity": {
        "name": "fresh",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "integer"}, {"name": "label", "type": "text", "nullable": True}],
    },
}
READS_BODY = {
    "op": "replace_action",
    "action": {**ACTION["action"], "statements": ["select body from memo where id = $id"]},
}
READS_NOTE = {
    "op": "replace_action",
    "action": {**ACTION["action"], "statements": ["select author from note where id = $id"]},
}
NEW_FIELD = {
    "op": "add_field",
    "entity": "memo",
    "field": {"name": "extra", "type": "text", "nullable": True},
}

Ops = list[dict[str, Any]]
CASES: dict[HazardCode, tuple[Ops, Ops]] = {
    HazardCode.DROP_ENTITY: (
        [{"op": "drop_entity", "entity": "tag"}],
        [NEW_ENTITY, {"op": "drop_entity", "entity": "fresh"}],
    ),
    HazardCode.DROP_FIELD: (
        [READS_BODY, {"op": "drop_field", "entity": "memo", "field": "author"}],
        [NEW_FIELD, {"op": "drop_field", "entity": "memo", "field": "extra"}],
    ),
    HazardCode.LOSSY_TYPE_CHANGE: (
        [{"op": "alter_field", "entity": "purchase", "field": "total", "type": "integer"}],
        [{"op": "alter_field", "entity": "memo", "field": "priority", "type": "bigint"}],
    ),
    HazardCode.REQUIRED_FIELD: (
        [{"op": "add_field", "entity": "memo", "field": {"name": "x", "type": "text"}}],
        [{"op": "add_field", "entity": "memo", "field": {"name": "x", "type": "text", "default": "-"}}],
    ),
    HazardCode.VOLATILE_DEFAULT: (
        [
            {
                "op": "add_field",
                "entity": "memo",
                "field": {"name": "seen_at", "type": "timestamptz", "default": {"expr": "now()"}},
            }
        ],
        [
            NEW_ENTITY,
            {
                "op": "add_field",
                "entity": "fresh",
                "field": {"name": "seen_at", "type": "timestamptz", "default": {"expr": "now()"}},
            },
        ],
    ),
    HazardCode.SET_NOT_NULL: (
        [{"op": "alter_field", "entity": "memo", "field": "author", "nullable": False}],
        [NEW_FIELD, {"op": "alter_field", "entity": "memo", "field": "extra", "nullable": False}],
    ),
    HazardCode.ADD_UNIQUE: (
        [{"op": "add_unique", "entity": "memo", "columns": ["body"]}],
        [NEW_ENTITY, {"op": "add_unique", "entity": "fresh", "columns": ["label"]}],
    ),
    HazardCode.ADD_CHECK: (
        [{"op": "alter_field", "entity": "memo", "field": "priority", "check": "priority < 10"}],
        [NEW_FIELD, {"op": "alter_field", "entity": "memo", "field": "extra", "check": "extra <> ''"}],
    ),
    HazardCode.DROP_CONSTRAINT: (
        [{"op": "drop_unique", "entity": "customer", "columns": ["email"]}],
        [
            NEW_ENTITY,
            {"op": "add_unique", "entity": "fresh", "columns": ["label"]},
            {"op": "drop_unique", "entity": "fresh", "columns": ["label"]},
        ],
    ),
    HazardCode.RENAME_ENTITY: (
        [{"op": "rename_entity", "entity": "memo", "new_name": "note"}, READS_NOTE],
        [NEW_ENTITY, {"op": "rename_entity", "entity": "fresh", "new_name": "newer"}],
    ),
    HazardCode.RENAME_FIELD: (
        [{"op": "rename_field", "entity": "memo", "field": "body", "new_name": "text"}],
        [NEW_FIELD, {"op": "rename_field", "entity": "memo", "field": "extra", "new_name": "more"}],
    ),
    HazardCode.DROP_NOT_NULL: (
        [{"op": "alter_field", "entity": "memo", "field": "body", "nullable": True}],
        [{"op": "alter_field", "entity": "memo", "field": "author", "default": "x"}],
    ),
    HazardCode.DEFAULT_CHANGED: (
        [{"op": "alter_field", "entity": "memo", "field": "priority", "default": 3}],
        [NEW_FIELD, {"op": "alter_field", "entity": "memo", "field": "extra", "default": "y"}],
    ),
    HazardCode.DROP_VIEW: (
        [{"op": "drop_view", "name": "customer_totals"}],
        [
            {"op": "add_view", "view": {"name": "v2", "sql": "select id from memo"}},
            {"op": "drop_view", "name": "v2"},
        ],
    ),
    HazardCode.DROP_INVARIANT: (
        [{"op": "drop_invariant", "name": "no_negative_totals"}],
        [
            {"op": "add_invariant", "invariant": {"name": "i2", "sql": "select id from memo where id < 0"}},
            {"op": "drop_invariant", "name": "i2"},
        ],
    ),
    HazardCode.DROP_ACTION: (
        [
            {"op": "drop_subscription", "name": "pinger"},
            {"op": "drop_workflow", "name": "ping"},
            {"op": "drop_action", "name": "author_of"},
        ],
        [{"op": "replace_action", "action": {**ACTION["action"], "description": "who wrote it"}}],
    ),
    HazardCode.TABLE_REBUILD: (
        [{"op": "drop_field", "entity": "customer", "field": "tier"}],
        [READS_BODY, {"op": "drop_field", "entity": "memo", "field": "author"}],
    ),
    HazardCode.RUNS_IN_FLIGHT: (
        [{"op": "drop_subscription", "name": "pinger"}, {"op": "drop_workflow", "name": "ping"}],
        [
            {"op": "add_workflow", "workflow": {**WORKFLOW, "name": "pong"}},
            {"op": "drop_workflow", "name": "pong"},
        ],
    ),
    HazardCode.MESSAGES_CONVERTED: (
        [{"op": "replace_topic", "topic": {**TOPIC, "payload": [TOPIC["payload"][0]]}}],
        [
            {
                "op": "replace_topic",
                "topic": {
                    **TOPIC,
                    "payload": [*TOPIC["payload"], {"name": "n", "type": "integer", "nullable": True}],
                },
            }
        ],
    ),
    HazardCode.MESSAGES_HELD: (
        [{"op": "drop_subscription", "name": "pinger"}, {"op": "drop_topic", "name": "events"}],
        [{"op": "add_topic", "topic": {**TOPIC, "name": "other"}}, {"op": "drop_topic", "name": "other"}],
    ),
    HazardCode.MESSAGES_STRANDED: (
        [
            {
                "op": "replace_topic",
                "topic": {**TOPIC, "payload": [*TOPIC["payload"], {"name": "n", "type": "integer"}]},
            }
        ],
        [
            {
                "op": "replace_topic",
                "topic": {
                    **TOPIC,
                    "payload": [*TOPIC["payload"], {"name": "n", "type": "integer", "nullable": True}],
                },
            }
        ],
    ),
    HazardCode.SUBSCRIPTION_DROPPED: (
        [{"op": "drop_subscription", "name": "pinger"}],
        [{"op": "replace_subscription", "subscription": {**SUBSCRIPTION, "description": "pings"}}],
    ),
    HazardCode.INDEX_FREEZES: (
        [{"op": "add_index", "entity": "memo", "index": {"name": "memo_author", "columns": ["author"]}}],
        [
            {"op": "rename_field", "entity": "memo", "field": "author", "new_name": "writer"},
            {
                "op": "replace_action",
                "action": {**ACTION["action"], "statements": ["select writer from memo where id = $id"]},
            },
        ],
    ),
}


POSTGRES_CASES: dict[HazardCode, tuple[Ops, Ops]] = {
    HazardCode.TABLE_LOCK: (
        [{"op": "add_field", "entity": "memo", "field": {"name": "pinned", "type": "boolean"}}],
        [NEW_ENTITY, {"op": "add_field", "entity": "fresh", "field": {"name": "n", "type": "integer"}}],
    ),
}
"""Hazards only a plan for PostgreSQL carries (planned in its dialect)."""


def hazard_codes(ops: Ops, dialect: Dialect = DUCKDB) -> set[str]:
    _, planned = plan.plan(BASE_WITH_ACTION, changes.parse_operations(ops), base_version=2, dialect=dialect)
    return {str(h.code) for h in planned.all_hazards()}


def test_every_hazard_code_has_a_case() -> None:
    assert set(CASES) | set(POSTGRES_CASES) == set(HazardCode) - MEASURED


@pytest.mark.parametrize("code", sorted(POSTGRES_CASES, key=str))
def test_a_postgresql_hazard_is_raised_there_and_not_by_a_near_miss_nor_on_duckdb(code: HazardCode) -> None:
    hit, miss = POSTGRES_CASES[code]
    assert str(code) in hazard_codes(hit, POSTGRES)
    assert str(code) not in hazard_codes(miss, POSTGRES)
    assert str(code) not in hazard_codes(hit, DUCKDB)


@pytest.mark.parametrize("code", sorted(CASES, key=str))
def test_hazard_is_raised(code: HazardCode) -> None:
    assert str(code) in hazard_codes(CASES[code][0])


@pytest.mark.parametrize("code", sorted(CASES, key=str))
def test_hazard_is_not_raised_by_a_near_miss(code: HazardCode) -> None:
    assert str(code) not in hazard_codes(CASES[code][1])


def test_objects_created_in_the_same_proposal_raise_no_data_hazards() -> None:
    ops = [
        NEW_ENTITY,
        {"op": "add_field", "entity": "fresh", "field": {"name": "n", "type": "integer"}},
        {"op": "alter_field", "entity": "fresh", "field": "label", "nullable": False},
        {"op": "add_unique", "entity": "fresh", "columns": ["n"]},
        {"op": "rename_field", "entity": "fresh", "field": "n", "new_name": "m"},
        {"op": "drop_unique", "entity": "fresh", "columns": ["m"]},
        {"op": "drop_field", "entity": "fresh", "field": "m"},
    ]
    assert hazard_codes(ops) == set()


def test_changing_the_parameters_of_an_action_names_only_the_workflows_that_call_it() -> None:
    _, called = plan.plan(
        BASE_WITH_ACTION,
        changes.parse_operations(
            [
                {"op": "replace_action", "action": TWO_PARAMS},
                {"op": "replace_workflow", "workflow": WITH_SINCE},
            ]
        ),
        base_version=2,
    )
    found = [h for h in called.all_hazards() if h.code == HazardCode.RUNS_IN_FLIGHT]
    assert any("workflow ping calls" in h.message for h in found)
    assert all(h.severity != "high" for h in called.all_hazards())

    lonely = {**TWO_PARAMS, "name": "lonely"}
    base = changes.apply(
        BASE,
        changes.parse_operations([{"op": "add_action", "action": {**ACTION["action"], "name": "lonely"}}]),
    )
    _, uncalled = plan.plan(
        base, changes.parse_operations([{"op": "replace_action", "action": lonely}]), base_version=2
    )
    assert uncalled.all_hazards() == []
