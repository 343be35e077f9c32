"""A deploy never leaves logic and data disagreeing: SQL that depends on column order, statements the
engine no longer binds, types that no longer fit, runs pinned to an older shape, failures after effects,
and approvals asked only for what can deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime.boundary import approvals
from runtime.boundary.policy import Connector, Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.schema import changes, usage
from runtime.schema.spec import ActionSpec, AppSpec, EntitySpec, FieldSpec, ParamSpec
from runtime.sql import sqlcheck
from tests.conftest import deploy_ops
from tests.runtime.test_workflows import CHECKOUT, SHOP, action, provider, settle  # noqa: F401

REVIEW: dict[str, Any] = {
    "op": "add_entity",
    "entity": {
        "name": "review",
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "author", "type": "text"},
            {"name": "body", "type": "text"},
            {"name": "title", "type": "text"},
        ],
    },
}
ADD_REVIEW = action(
    "add_review",
    {"id": "integer", "author": "text", "body": "text", "title": "text"},
    "insert into review values ($id, $author, $body, $title)",
)


def refused(call: Any) -> ButtressError:
    with pytest.raises(ButtressError) as caught:
        call()
    return caught.value


# ------------------------------------------------------------------------------------ column order


def test_an_insert_without_a_column_list_is_stored_with_the_columns_it_means(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW, ADD_REVIEW])
    (statement,) = rt.current[1].action("add_review").statements  # type: ignore[union-attr]
    assert statement == "insert into review (id, author, body, title) values ($id, $author, $body, $title)"
    assert not sqlcheck.analyze_statement(
        statement, rt.current[1].relations(), allow_writes=True
    ).order_dependent
    described = {a.name: a for a in rt.describe().actions}["add_review"]
    assert described.fields_written == ["review.author", "review.body", "review.id", "review.title"]


def test_a_dropped_field_then_an_added_one_never_moves_values_into_other_columns(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW, ADD_REVIEW])
    error = refused(lambda: rt.propose([{"op": "drop_field", "entity": "review", "field": "body"}]))
    assert error.code == "sql.unknown_column"
    assert [(p["kind"], p["name"]) for p in error.details["problems"]] == [("action", "add_review")]
    deploy_ops(
        rt,
        [
            {
                "op": "add_field",
                "entity": "review",
                "field": {"name": "mood", "type": "text", "nullable": True},
            }
        ],
    )
    rt.run_action("add_review", {"id": 1, "author": "ada", "body": "B", "title": "T"})
    assert rt.query("select id, author, body, title, mood from review").rows == [[1, "ada", "B", "T", None]]


def test_a_statement_stored_by_position_before_breaks_when_its_table_changes() -> None:
    legacy = AppSpec(
        entities=(
            EntitySpec(
                name="review",
                primary_key=("id",),
                fields=(FieldSpec(name="id", type="integer"), FieldSpec(name="body", type="text")),
            ),
        ),
        actions=(
            ActionSpec(
                name="add_review",
                kind="mutation",
                params=(ParamSpec(name="id", type="integer"), ParamSpec(name="body", type="text")),
                statements=("insert into review values ($id, $body)",),
            ),
        ),
    )
    # an unrelated change leaves it as it is
    changes.apply(
        legacy,
        changes.parse_operations(
            [
                {
                    "op": "add_entity",
                    "entity": {
                        "name": "tag",
                        "primary_key": ["id"],
                        "fields": [{"name": "id", "type": "integer"}],
                    },
                }
            ]
        ),
    )
    error = refused(
        lambda: changes.apply(
            legacy,
            changes.parse_operations(
                [
                    {
                        "op": "add_field",
                        "entity": "review",
                        "field": {"name": "mood", "type": "text", "nullable": True},
                    }
                ]
            ),
        )
    )
    assert error.code == "sql.mismatch"
    problem = error.details["problems"][0]
    assert (problem["kind"], problem["name"]) == ("action", "add_review")
    assert "insert into review (id, body) values ($id, $body)" in error.hint


def test_a_star_feeding_an_insert_is_refused_with_the_explicit_form(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW])
    copy = action("copy", {}, "insert into review select * from review")
    error = refused(lambda: rt.propose([copy]))
    assert error.code == "sql.forbidden" and "review (id, author, body, title)" in error.hint
    error = refused(
        lambda: rt.propose(
            [
                {
                    "op": "add_view",
                    "view": {"name": "twice", "sql": "select * from review union all select * from review"},
                }
            ]
        )
    )
    assert error.code == "sql.forbidden" and "set operation" in error.message


def test_an_insert_with_too_few_values_is_refused_at_propose(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW])
    error = refused(
        lambda: rt.propose([action("short", {"id": "integer"}, "insert into review values ($id, 'x', 'y')")])
    )
    assert error.code == "sql.mismatch"
    assert "3 values per row" in error.message and "4 columns" in error.message


# ------------------------------------------------------------------------------------------- types


def test_a_field_retyped_under_an_action_comparing_it_with_a_parameter_is_refused_naming_both(
    rt: Runtime,
) -> None:
    deploy_ops(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "item",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "integer"}, {"name": "code", "type": "integer"}],
                },
            },
            {
                "op": "add_action",
                "action": {
                    "name": "by_code",
                    "kind": "query",
                    "params": [{"name": "code", "type": "integer"}],
                    "statements": ["select id from item where code = $code"],
                },
            },
        ],
    )
    error = refused(
        lambda: rt.propose([{"op": "alter_field", "entity": "item", "field": "code", "type": "text"}])
    )
    assert error.code == "sql.mismatch"
    (mismatch,) = error.details["mismatches"]
    assert mismatch["field"] == "item.code" and mismatch["value"] == "$code"
    assert (mismatch["field_type"], mismatch["value_type"]) == ("text", "integer")


def test_type_facts_fit_widening_and_text_forms_but_not_narrowing() -> None:
    assert usage.fits("integer", "bigint") and usage.fits("text", "date")
    assert not usage.fits("bigint", "integer") and not usage.fits("text", "integer")
    assert usage.comparable("date", "text") and not usage.comparable("integer", "text")


# ----------------------------------------------------------------------------------- engine binding


def test_the_dry_run_binds_every_statement_in_the_engine_and_names_what_does_not_bind(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW])
    proposal = rt.propose(
        [
            action("shout", {"id": "integer"}, "update review set title = upper(id) where id = $id"),
            action("fine", {"id": "integer"}, "delete from review where id = $id"),
        ]
    )
    report = rt.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["code"] == "deploy.dry_run_failed"
    assert report.error["details"]["hazard"] == "action.broken"
    (problem,) = report.error["details"]["problems"]
    assert (problem["action"], problem["statement"]) == ("shout", 0)
    assert "upper" in problem["problem"]


def test_a_retype_that_only_the_engine_sees_fails_the_dry_run(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            REVIEW,
            action(
                "upper_author", {"id": "integer"}, "update review set title = lower(author) where id = $id"
            ),
        ],
    )
    proposal = rt.propose([{"op": "alter_field", "entity": "review", "field": "author", "type": "integer"}])
    report = rt.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["details"]["problems"][0]["action"] == "upper_author"
    error = refused(lambda: rt.deploy(proposal.proposal_id))
    assert error.code == "deploy.dry_run_failed" and "upper_author" in error.message


# ------------------------------------------------------------------------------------ pinned runs

NEWS = {"name": "news", "external": True, "payload": [{"name": "who", "type": "text"}]}
NEWS_WITH_COUPON = {
    **NEWS,
    "payload": [*NEWS["payload"], {"name": "coupon", "type": "text", "nullable": True}],
}
ANNOUNCE = {
    "name": "announce",
    "params": [{"name": "who", "type": "text"}],
    "steps": [
        {"name": "hold", "kind": "wait", "signal": "go"},
        {"name": "tell", "kind": "publish", "topic": "news", "args": {"who": {"from": "input.who"}}},
    ],
}
ANNOUNCE_WITH_COUPON = {
    **ANNOUNCE,
    "steps": [
        ANNOUNCE["steps"][0],
        {
            "name": "tell",
            "kind": "publish",
            "topic": "news",
            "args": {"who": {"from": "input.who"}, "coupon": "WELCOME"},
        },
    ],
}


def test_a_run_pinned_before_a_rollback_publishes_in_the_current_shape_and_a_redeploy_restores_it(
    rt: Runtime,
) -> None:
    deploy_ops(rt, [{"op": "add_topic", "topic": NEWS}, {"op": "add_workflow", "workflow": ANNOUNCE}])
    v2 = deploy_ops(
        rt,
        [
            {"op": "replace_topic", "topic": NEWS_WITH_COUPON},
            {"op": "replace_workflow", "workflow": ANNOUNCE_WITH_COUPON},
        ],
    ).version
    run = rt.start_workflow("announce", {"who": "ada"}, run_id="r1")
    rt.scheduler.drain()
    assert rt.get_run("r1").status == "waiting"
    back = rt.rollback()
    rt.signal_run(run.run_id, "go")
    rt.scheduler.drain()
    finished = rt.get_run("r1")
    assert finished.status == "completed" and finished.version == v2
    tell = finished.steps[-1]
    assert tell.version == back.version
    assert tell.output["converted"] == {
        "dropped": ["coupon"],
        "retained": ["coupon"],
        "version": back.version,
    }
    (message,) = rt.list_messages(topic="news")
    assert message.payload == {"who": "ada"} and message.version == back.version
    again = deploy_ops(
        rt,
        [
            {"op": "replace_topic", "topic": NEWS_WITH_COUPON},
            {"op": "replace_workflow", "workflow": ANNOUNCE_WITH_COUPON},
        ],
    )
    (message,) = rt.list_messages(topic="news")
    assert message.payload == {"who": "ada", "coupon": "WELCOME"}
    assert message.version == again.version


def test_a_rollback_that_would_strand_a_pinned_run_fails_the_dry_run_naming_it_and_the_step(
    rt: Runtime,
) -> None:
    note = action("note", {"id": "text"}, "insert into log (id) values ($id)")
    note_v2 = {
        **note["action"],
        "params": [{"name": "id", "type": "text"}, {"name": "who", "type": "text"}],
        "statements": ["insert into log (id, who) values ($id, $who)"],
    }
    deploy_ops(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "log",
                    "primary_key": ["id"],
                    "fields": [
                        {"name": "id", "type": "text"},
                        {"name": "who", "type": "text", "nullable": True},
                    ],
                },
            },
            note,
        ],
    )
    deploy_ops(
        rt,
        [
            {"op": "replace_action", "action": note_v2},
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "later",
                    "params": [{"name": "id", "type": "text"}],
                    "steps": [
                        {"name": "hold", "kind": "wait", "signal": "go"},
                        {
                            "name": "write",
                            "kind": "action",
                            "action": "note",
                            "args": {"id": {"from": "input.id"}, "who": "later"},
                        },
                    ],
                },
            },
        ],
    )
    rt.start_workflow("later", {"id": "x"}, run_id="x")
    rt.scheduler.drain()
    error = refused(lambda: rt.rollback())
    assert error.code == "workflow.stranded"
    (stranded,) = error.details["stranded"]
    assert (stranded["workflow"], stranded["step"], stranded["runs"]) == ("later", "write", ["x"])
    assert "unknown parameters ['who']" in stranded["problem"]
    rt.signal_run("x", "go")
    rt.scheduler.drain()
    rt.rollback()  # nothing in flight now


# ----------------------------------------------------------------------------- failure after effects


@pytest.fixture
def shop(tmp_path: Path, provider: tuple[str, Any]) -> Any:  # noqa: F811
    base, state = provider
    policy = Policy(
        connectors={
            "payments": Connector(url=f"{base}/charges", timeout_s=2),
            "refunds": Connector(url=f"{base}/refunds", timeout_s=2),
        }
    )
    rt = Runtime.open(tmp_path / "shop.duckdb", policy=policy, audit_reads=False)
    deploy_ops(rt, [*SHOP, CHECKOUT])
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO stock VALUES ('apple', 2)")
    yield rt, state
    rt.close()


def test_a_step_failing_after_a_charge_for_a_reason_that_is_not_a_business_answer_blocks_the_run(
    shop: Any,
) -> None:
    rt, state = shop
    broken = {
        "name": "record_sale",
        "kind": "mutation",
        "params": [
            {"name": "id", "type": "text"},
            {"name": "sku", "type": "text"},
            {"name": "charge", "type": "text"},
        ],
        "statements": [
            "insert into sale (id, sku, charge) values ($id, $sku, CAST(CAST($charge AS INTEGER) AS VARCHAR))"
        ],
    }
    deploy_ops(rt, [{"op": "replace_action", "action": broken}])
    rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 5}, run_id="s1")
    settle(rt)
    run = rt.get_run("s1")
    assert run.status == "blocked"
    assert run.error is not None and run.error["step"] == "record"
    assert run.error["unsettled"] == ["reserve", "charge"]
    assert len(run.error["effects"]) == 1 and len(state.charges) == 1 and state.refunds == []
    fixed = {**broken, "statements": ["insert into sale (id, sku, charge) values ($id, $sku, $charge)"]}
    deploy_ops(rt, [{"op": "replace_action", "action": fixed}])
    rt.retry_run("s1")
    settle(rt)
    assert rt.get_run("s1").status == "completed"
    assert rt.query("select id, charge from sale").rows == [["s1", state.charges[0]["id"]]]
    assert len(state.charges) == 1


def test_cancelling_a_run_whose_effect_outcome_is_unknown_is_refused_and_settles_nothing(shop: Any) -> None:
    rt, _ = shop
    with rt.engine.transaction() as tx:
        tx.execute("UPDATE stock SET qty = 5")
    deploy_ops(
        rt,
        [
            {
                "op": "replace_workflow",
                "workflow": {
                    **CHECKOUT["workflow"],
                    "steps": [
                        CHECKOUT["workflow"]["steps"][0],
                        {
                            **CHECKOUT["workflow"]["steps"][1],
                            "connector": "payments",
                            "retry": {"attempts": 1},
                        },
                        *CHECKOUT["workflow"]["steps"][2:],
                    ],
                },
            }
        ],
    )
    rt.use_policy(
        rt.policy.model_copy(
            update={
                "connectors": {
                    **rt.policy.connectors,
                    "payments": Connector(url="http://127.0.0.1:9/charges", timeout_s=0.5),
                }
            }
        ),
        digest="test",
    )
    rt.start_workflow("checkout", {"sale": "s2", "sku": "apple", "amount": 5}, run_id="s2")
    settle(rt)
    assert rt.get_run("s2").status == "blocked"
    error = refused(lambda: rt.cancel_run("s2"))
    assert error.code == "workflow.blocked" and len(error.details["effects"]) == 1
    assert [e.state for e in rt.list_effects(run_id="s2")] == ["unknown"]
    assert rt.query("select qty from stock").rows == [[4]]


# ---------------------------------------------------------------------------------------- approvals


def test_a_deploy_whose_dry_run_failed_is_refused_for_that_before_any_approval_is_asked(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW])
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO review VALUES (1, 'a', 'b', 't'), (2, 'a', 'b', 't')")
    proposal = rt.propose(
        [
            {"op": "add_unique", "entity": "review", "columns": ["author"]},
            {"op": "drop_field", "entity": "review", "field": "title"},
        ],
        actor="local",
    )
    assert not rt.dry_run(proposal.proposal_id, actor="local").passed
    error = refused(lambda: rt.deploy(proposal.proposal_id, actor="local"))
    assert error.code == "deploy.dry_run_failed"
    assert not list((Path(rt.engine.path).parent / ".buttress" / "requests").glob("*.json"))


def test_a_request_whose_plan_can_no_longer_deploy_is_stale_and_cannot_be_approved(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            REVIEW,
            {
                "op": "add_entity",
                "entity": {
                    "name": "tag",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "integer"}],
                },
            },
        ],
    )
    proposal = rt.propose([{"op": "drop_entity", "entity": "tag"}], actor="local")
    assert rt.dry_run(proposal.proposal_id, actor="local").passed
    waiting = refused(lambda: rt.deploy(proposal.proposal_id, actor="local"))
    assert waiting.code == "deploy.needs_approval"
    request_id = waiting.details["approval_request"]
    assert rt.approval_requests()[0].status == "pending"
    deploy_ops(
        rt,
        [
            {
                "op": "add_field",
                "entity": "review",
                "field": {"name": "mood", "type": "text", "nullable": True},
            }
        ],
    )
    listed = rt.approval_requests()[0]
    assert listed.status == "stale" and "current version" in (listed.reason or "")
    error = refused(lambda: rt.approve_request(request_id))
    assert error.code == "approval.stale"
    assert rt.refuse_request(request_id, reason="moved on").status == "refused"
    with rt.engine.snapshot() as reader:
        assert approvals.stale_reason(
            reader, {"proposal_id": proposal.proposal_id, "plan_hash": proposal.plan_hash}
        )


# ------------------------------------------------------------------------------------ typed flows


def test_a_workflow_passing_null_to_a_required_parameter_is_refused_at_propose(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW, ADD_REVIEW])
    flow = {
        "name": "w",
        "params": [{"name": "id", "type": "integer"}],
        "steps": [
            {
                "name": "select",
                "kind": "action",
                "action": "add_review",
                "args": {"id": {"from": "input.id"}, "author": None, "body": "b", "title": 7},
            }
        ],
    }
    error = refused(lambda: rt.propose([{"op": "add_workflow", "workflow": flow}]))
    assert error.code == "spec.invalid"
    problems = " | ".join(p["problem"] for p in error.details["problems"])
    assert "passes null to required parameter author" in problems
    assert "passes 7 to parameter title, which is text" in problems
    text_id = {
        **flow,
        "params": [{"name": "id", "type": "text"}],
        "steps": [
            {
                **flow["steps"][0],
                "args": {"id": {"from": "input.id"}, "author": "a", "body": "b", "title": "t"},
            }
        ],
    }
    error = refused(lambda: rt.propose([{"op": "add_workflow", "workflow": text_id}]))
    assert "passes input.id (text) to parameter id (integer)" in error.message


def test_step_names_may_be_sql_words(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            REVIEW,
            ADD_REVIEW,
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "w",
                    "params": [{"name": "id", "type": "integer"}],
                    "steps": [
                        {
                            "name": "select",
                            "kind": "action",
                            "action": "add_review",
                            "args": {"id": {"from": "input.id"}, "author": "a", "body": "b", "title": "t"},
                        },
                        {"name": "order", "kind": "sleep", "seconds": 0},
                    ],
                },
            },
        ],
    )
    rt.start_workflow("w", {"id": 3}, run_id="w3")
    settle(rt)
    assert [s.name for s in rt.get_run("w3").steps] == ["select", "order"]


# --------------------------------------------------------------------------------------- field usage


def test_a_drop_hazard_names_every_action_view_workflow_step_and_subscription_that_uses_the_field(
    rt: Runtime,
) -> None:
    deploy_ops(
        rt,
        [
            REVIEW,
            ADD_REVIEW,
            {"op": "add_view", "view": {"name": "titles", "sql": "select id, title from review"}},
            {"op": "add_topic", "topic": {"name": "posted", "payload": [{"name": "id", "type": "integer"}]}},
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "post",
                    "params": [{"name": "id", "type": "integer"}],
                    "steps": [
                        {
                            "name": "write",
                            "kind": "action",
                            "action": "add_review",
                            "args": {"id": {"from": "input.id"}, "author": "a", "body": "b", "title": "t"},
                        }
                    ],
                },
            },
            {
                "op": "add_subscription",
                "subscription": {
                    "name": "on_post",
                    "topic": "posted",
                    "workflow": "post",
                    "args": {"id": {"from": "message.id"}},
                },
            },
        ],
    )
    users = usage.field_users(rt.current[1], "review", "title")
    assert users == ["action add_review", "view titles", "workflow post step write", "subscription on_post"]
    assert usage.field_users(rt.current[1], "review", "author") == [
        "action add_review",
        "workflow post step write",
        "subscription on_post",
    ]
    check = rt.check_sql("update review set title = $t where author = $a")
    assert check.fields_written == ["review.title"] and check.fields_read == ["review.author"]


def test_runs_say_which_version_they_are_pinned_to_and_each_step_the_version_it_ran_on(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            REVIEW,
            ADD_REVIEW,
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "w",
                    "params": [{"name": "id", "type": "integer"}],
                    "steps": [
                        {
                            "name": "write",
                            "kind": "action",
                            "action": "add_review",
                            "args": {"id": {"from": "input.id"}, "author": "a", "body": "b", "title": "t"},
                        },
                        {"name": "hold", "kind": "wait", "signal": "go"},
                    ],
                },
            },
        ],
    )
    pinned = rt.current[0]
    rt.start_workflow("w", {"id": 9}, run_id="w9")
    rt.scheduler.drain()
    field = {"name": "mood", "type": "text", "nullable": True}
    later = deploy_ops(rt, [{"op": "add_field", "entity": "review", "field": field}]).version
    rt.signal_run("w9", "go")
    rt.scheduler.drain()
    run = rt.get_run("w9")
    assert run.version == pinned and [s.version for s in run.steps] == [pinned, later]
    assert json.loads(run.model_dump_json())["acting_for"] == "operator"


# ------------------------------------------------------------------------------------ roll forward


def test_redeploy_rolls_forward_to_a_version_rolled_back_from_restoring_its_data(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW, ADD_REVIEW])
    rt.run_action("add_review", {"id": 1, "author": "ada", "body": "B", "title": "T"})
    mood = {
        "op": "add_field",
        "entity": "review",
        "field": {"name": "mood", "type": "text", "nullable": True},
    }
    deploy_ops(rt, [mood])
    with rt.engine.transaction() as tx:
        tx.execute("UPDATE review SET mood = 'glad'")
    rename = {"op": "rename_field", "entity": "review", "field": "mood", "new_name": "feeling"}
    target = deploy_ops(rt, [rename]).version
    target_hash = rt.current[1].hash()
    rt.rollback(to_version=1)
    assert "feeling" not in rt.current[1].entity("review").field_names  # type: ignore[union-attr]
    error = refused(lambda: rt.rollback(to_version=target))
    assert error.code == "rollback.not_ancestor" and "redeploy" in error.hint
    proposal = rt.redeploy(target)
    assert [step.summary.split(" (")[0] for step in proposal.steps][:2] == [
        "add field review.mood and restore its retained values",
        "rename field review.mood to feeling",
    ]
    assert proposal.target_hash == target_hash
    assert rt.dry_run(proposal.proposal_id).passed
    rt.deploy(proposal.proposal_id)
    assert rt.query("select id, feeling from review").rows == [[1, "glad"]]
    assert refused(lambda: rt.redeploy(target)).code == "rollback.nothing_to_roll_back"


def test_redeploy_of_a_version_on_another_branch_names_where_they_part(rt: Runtime) -> None:
    deploy_ops(rt, [REVIEW])
    other = deploy_ops(
        rt,
        [{"op": "add_field", "entity": "review", "field": {"name": "a", "type": "text", "nullable": True}}],
    ).version
    rt.rollback(to_version=1)
    deploy_ops(
        rt,
        [{"op": "add_field", "entity": "review", "field": {"name": "b", "type": "text", "nullable": True}}],
    )
    error = refused(lambda: rt.redeploy(other))
    assert error.code == "rollback.not_ancestor" and error.details["shared"] == 1
    assert "Roll back to version 1 first" in error.hint
