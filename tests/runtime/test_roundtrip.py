"""Every operation type on a real DuckDB file: deploy then rollback restores schema and data exactly;
deploying the same change again gives the same state as the first deploy."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.runtime import Runtime
from tests.runtime.conftest import deploy, state

CASES: dict[str, list[dict[str, Any]]] = {
    "add_entity": [
        {
            "op": "add_entity",
            "entity": {
                "name": "note",
                "primary_key": ["id"],
                "fields": [
                    {"name": "id", "type": "integer", "default": {"expr": "autoincrement"}},
                    {"name": "text", "type": "text"},
                ],
            },
        }
    ],
    "drop_entity": [{"op": "drop_entity", "entity": "tag"}],
    "drop_entity_child": [
        {"op": "drop_view", "name": "customer_totals"},
        {"op": "drop_invariant", "name": "no_negative_totals"},
        {"op": "drop_entity", "entity": "purchase"},
    ],
    "rename_entity_indexed": [{"op": "rename_entity", "entity": "tag", "new_name": "label_tag"}],
    "rename_entity_plain": [{"op": "rename_entity", "entity": "memo", "new_name": "note"}],
    "add_field_nullable": [
        {"op": "add_field", "entity": "memo", "field": {"name": "phone", "type": "text", "nullable": True}}
    ],
    "add_field_default": [
        {
            "op": "add_field",
            "entity": "customer",
            "field": {"name": "region", "type": "text", "default": "eu"},
        }
    ],
    "add_field_checked": [
        {
            "op": "add_field",
            "entity": "memo",
            "field": {"name": "stars", "type": "integer", "default": 3, "check": "stars between 1 and 5"},
        }
    ],
    "add_field_position": [
        {
            "op": "add_field",
            "entity": "memo",
            "position": 1,
            "field": {"name": "title", "type": "text", "default": "untitled"},
        }
    ],
    "drop_field_plain": [{"op": "drop_field", "entity": "memo", "field": "author"}],
    "drop_field_middle_required": [{"op": "drop_field", "entity": "memo", "field": "body"}],
    "drop_field_parent": [{"op": "drop_field", "entity": "customer", "field": "tier"}],
    "rename_field_plain": [
        {"op": "rename_field", "entity": "memo", "field": "body", "new_name": "text_body"}
    ],
    "rename_field_parent": [
        {
            "op": "replace_view",
            "view": {
                "name": "customer_totals",
                "sql": "select c.id, c.full_name, sum(p.total) as spent from customer c left join purchase p "
                "on p.customer_id = c.id group by c.id, c.full_name",
            },
        },
        {"op": "rename_field", "entity": "customer", "field": "name", "new_name": "full_name"},
    ],
    "rename_field_fk": [
        {
            "op": "replace_view",
            "view": {
                "name": "customer_totals",
                "sql": "select c.id, c.name, sum(p.total) as spent from customer c left join purchase p "
                "on p.buyer = c.id group by c.id, c.name",
            },
        },
        {"op": "rename_field", "entity": "purchase", "field": "customer_id", "new_name": "buyer"},
    ],
    "alter_type_widening": [{"op": "alter_field", "entity": "memo", "field": "priority", "type": "bigint"}],
    "alter_type_narrowing": [
        {"op": "alter_field", "entity": "purchase", "field": "total", "type": "integer"}
    ],
    "alter_type_to_text": [
        {"op": "alter_field", "entity": "memo", "field": "priority", "type": "text", "default": "1"}
    ],
    "alter_set_not_null_backfill": [
        {"op": "alter_field", "entity": "memo", "field": "author", "nullable": False, "backfill": "anonymous"}
    ],
    "alter_drop_not_null": [{"op": "alter_field", "entity": "memo", "field": "body", "nullable": True}],
    "alter_default": [{"op": "alter_field", "entity": "memo", "field": "priority", "default": 9}],
    "alter_drop_default": [
        {"op": "alter_field", "entity": "memo", "field": "priority", "drop_default": True}
    ],
    "alter_add_check": [
        {"op": "alter_field", "entity": "memo", "field": "priority", "check": "priority < 100"}
    ],
    "alter_drop_check_parent": [
        {"op": "alter_field", "entity": "customer", "field": "score", "drop_check": True}
    ],
    "add_unique": [{"op": "add_unique", "entity": "memo", "columns": ["body"]}],
    "add_unique_indexed": [{"op": "add_unique", "entity": "tag", "columns": ["label"]}],
    "drop_unique_parent": [{"op": "drop_unique", "entity": "customer", "columns": ["email"]}],
    "add_index": [
        {"op": "add_index", "entity": "memo", "index": {"name": "memo_author", "columns": ["author"]}}
    ],
    "drop_index": [{"op": "drop_index", "entity": "tag", "name": "tag_label"}],
    "add_view": [
        {
            "op": "add_view",
            "view": {"name": "gold", "sql": "select id, name from customer where tier = 'gold'"},
        }
    ],
    "replace_view": [
        {
            "op": "replace_view",
            "view": {
                "name": "customer_totals",
                "sql": "select c.id, count(p.id) as n from customer c "
                "left join purchase p on p.customer_id = c.id group by c.id",
            },
        }
    ],
    "drop_view": [{"op": "drop_view", "name": "customer_totals"}],
    "add_invariant": [
        {
            "op": "add_invariant",
            "invariant": {
                "name": "named",
                "description": "names are not empty",
                "sql": "select id from customer where name = ''",
            },
        }
    ],
    "drop_invariant": [{"op": "drop_invariant", "name": "no_negative_totals"}],
    "add_action": [
        {
            "op": "add_action",
            "action": {
                "name": "add_memo",
                "kind": "mutation",
                "params": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}],
                "statements": ["insert into memo (id, body) values ($id, $body)"],
            },
        }
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_deploy_then_rollback_restores_schema_and_data_exactly(app: Runtime, name: str) -> None:
    before = state(app)
    version = deploy(app, CASES[name])
    deployed = state(app)
    assert deployed != before
    result = app.rollback()
    assert result.restored_version == version - 1
    assert state(app) == before
    assert app.check_drift() == []

    deploy(app, CASES[name])
    assert state(app) == deployed
    assert app.verify_audit().ok


def test_rows_written_under_the_new_version_are_retained_and_come_back_on_redeploy(app: Runtime) -> None:
    change = CASES["add_field_nullable"]
    deploy(app, change)
    with app.engine.transaction() as tx:
        tx.execute("UPDATE memo SET phone = '555-' || id")
    written = state(app)
    app.rollback()
    deploy(app, change)
    assert state(app)["data"] == written["data"]


def test_rollback_is_refused_when_the_older_shape_cannot_hold_current_rows(app: Runtime) -> None:
    deploy(app, CASES["alter_drop_not_null"])
    with app.engine.transaction() as tx:
        tx.execute("INSERT INTO memo (id, body) VALUES (10, NULL), (11, NULL)")
    before = state(app)
    versions_before = len(app.versions())
    with pytest.raises(Exception) as caught:
        app.rollback()
    error: Any = caught.value
    assert error.code == "rollback.not_lossless"
    assert sorted(r["id"] for r in error.details["rows"]) == [10, 11]
    assert state(app) == before
    assert len(app.versions()) == versions_before
    last = app.read_audit(limit=1)[0]
    assert (last.operation, last.outcome, last.error_code) == ("rollback", "refused", "rollback.not_lossless")


def test_rollback_to_a_named_earlier_version_reverses_every_deploy_in_between(app: Runtime) -> None:
    start = app.current[0]
    before = state(app)
    deploy(app, CASES["drop_field_plain"])
    deploy(app, CASES["rename_entity_plain"])
    deploy(app, CASES["alter_type_narrowing"])
    result = app.rollback(to_version=start)
    assert result.restored_version == start
    assert state(app) == before


def test_repeated_rollbacks_walk_back_through_history(app: Runtime) -> None:
    start = app.current[0]
    first = state(app)
    deploy(app, CASES["add_view"])
    second = state(app)
    deploy(app, CASES["drop_field_plain"])
    app.rollback()
    assert state(app) == second
    app.rollback()
    assert state(app) == first
    assert app.current[0] == start + 4
