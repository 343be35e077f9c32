"""What agents meet: errors that name the object that caused them in the agent's terms, and a
description of the application that is the complete map."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import deploy_ops
from tools.read import AppOverview

ITEM: dict[str, Any] = {
    "op": "add_entity",
    "entity": {
        "name": "item",
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "code", "type": "text"},
            {"name": "label", "type": "text"},
        ],
        "unique": [["code"]],
    },
}
PUT = {
    "op": "add_action",
    "action": {
        "name": "put",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}, {"name": "code", "type": "text"}],
        "statements": ["insert into item (id, code, label) values ($id, $code, '1')"],
    },
}


def refused(call: Any) -> ButtressError:
    with pytest.raises(ButtressError) as caught:
        call()
    return caught.value


def test_a_duplicate_key_names_the_entity_and_the_values_it_collides_on_as_written(rt: Runtime) -> None:
    deploy_ops(rt, [ITEM, PUT])
    rt.run_action("put", {"id": 1, "code": "a"})
    error = refused(lambda: rt.run_action("put", {"id": 2, "code": "a"}))
    assert error.code == "action.constraint_violated"
    assert error.message == "action 'put': a row of item with code = 'a' already exists (unique key code)"
    assert error.details["values"] == {"code": "a"} and error.details["statement"] == 0
    assert error.details["sql"] == "insert into item (id, code, label) values ($id, $code, '1')"
    assert "__bt" not in str(error.to_dict())


def test_a_type_change_an_invariant_cannot_take_fails_the_dry_run_naming_the_invariant(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            ITEM,
            {
                "op": "add_invariant",
                "invariant": {"name": "labelled", "sql": "select id from item where label > 'a'"},
            },
        ],
    )
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO item VALUES (1, 'a', '7')")
    report = rt.dry_run(
        rt.propose([{"op": "alter_field", "entity": "item", "field": "label", "type": "integer"}]).proposal_id
    )
    assert not report.passed and report.error is not None
    assert report.error["code"] == "deploy.dry_run_failed"
    assert report.error["details"]["invariant"] == "labelled"
    assert "invariant 'labelled'" in report.error["message"]


def test_claiming_an_internal_topic_names_why_and_points_at_reading_it(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            {
                "op": "add_topic",
                "topic": {"name": "internal_news", "payload": [{"name": "n", "type": "integer"}]},
            }
        ],
    )
    rt.publish_message("internal_news", {"n": 1})
    error = refused(lambda: rt.claim_messages("internal_news"))
    assert error.code == "message.not_external" and "list_messages" in error.hint
    (message,) = rt.list_messages(topic="internal_news")
    assert message.payload == {"n": 1} and message.state == "delivered"  # no subscription waits for it


def test_describe_app_is_the_complete_map_and_has_a_compact_form(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            ITEM,
            {
                **PUT,
                "action": {
                    **PUT["action"],
                    "emits": [{"publish": "made", "args": {"n": {"from": "args.id"}}}],
                },
            },
            {"op": "add_topic", "topic": {"name": "made", "payload": [{"name": "n", "type": "integer"}]}},
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "follow",
                    "params": [{"name": "n", "type": "integer"}],
                    "steps": [{"name": "pause", "kind": "sleep", "seconds": 60}],
                },
            },
            {
                "op": "add_subscription",
                "subscription": {
                    "name": "on_made",
                    "topic": "made",
                    "workflow": "follow",
                    "args": {"n": {"from": "message.n"}},
                },
            },
        ],
    )
    rt.run_action("put", {"id": 1, "code": "a"})
    rt.scheduler.drain()
    overview = AppOverview.of(rt.describe())
    assert [t.name for t in overview.topics] == ["made"]
    assert [w.name for w in overview.workflows] == ["follow"] and overview.workflows[0].steps[
        0
    ].kind == "sleep"
    assert [s.name for s in overview.subscriptions] == ["on_made"]
    assert overview.actions[0].emits[0].publish == "made"
    assert overview.work is not None and {f.value: f.count for f in overview.work.runs_by_status} == {
        "waiting": 1
    }
    compact = AppOverview.of(rt.describe(), "names")
    assert compact.workflows[0].steps[0].name == "pause" and compact.actions[0].fields_read == []
    assert len(compact.model_dump_json()) < len(overview.model_dump_json())
