"""Workflows, messages and effects keep the boundary: everything a call sets in motion meets the policy
decision when the call is made, runs under that decision later, belongs to who started it, and every
chain of messages and runs is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.boundary.policy import AgentPolicy, Limits, Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.store import audit as audit_log
from tests.conftest import deploy_ops
from tests.runtime.test_workflows import action

LOG = {
    "op": "add_entity",
    "entity": {
        "name": "log",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "text"}, {"name": "what", "type": "text"}],
    },
}
APP: list[dict[str, Any]] = [
    LOG,
    action("noop", {"id": "text"}, "insert into log (id, what) values ($id, 'noop')"),
    action("secret_act", {"id": "text"}, "insert into log (id, what) values ($id || '-secret', 'secret')"),
    {"op": "add_topic", "topic": {"name": "pings", "payload": [{"name": "id", "type": "text"}]}},
    {"op": "add_topic", "topic": {"name": "pongs", "payload": [{"name": "id", "type": "text"}]}},
    {
        "op": "add_subscription",
        "subscription": {
            "name": "to_secret",
            "topic": "pings",
            "action": "secret_act",
            "args": {"id": {"from": "message.id"}},
        },
    },
    {
        "op": "add_subscription",
        "subscription": {
            "name": "to_noop",
            "topic": "pongs",
            "action": "noop",
            "args": {"id": {"from": "message.id"}},
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "w_secret",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {"name": "go", "kind": "action", "action": "secret_act", "args": {"id": {"from": "input.id"}}}
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "w_undo",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {
                    "name": "go",
                    "kind": "action",
                    "action": "noop",
                    "args": {"id": {"from": "input.id"}},
                    "compensation": {"action": "secret_act", "args": {"id": {"from": "input.id"}}},
                },
                {"name": "hold", "kind": "wait", "signal": "go"},
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "w_hold",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {"name": "hold", "kind": "wait", "signal": "go"},
                {"name": "go", "kind": "action", "action": "noop", "args": {"id": {"from": "input.id"}}},
            ],
        },
    },
]

AGENTS = {
    "opbot": AgentPolicy(role="operator", actions=("noop",)),
    "ops2": AgentPolicy(role="operator"),
    "dev": AgentPolicy(role="developer"),
}


def open_app(path: Path, **limits: Any) -> Runtime:
    policy = Policy(agents=AGENTS, open_to_any_agent=False, limits=Limits(**limits))
    rt = Runtime.open(path, policy=policy, audit_reads=False)
    deploy_ops(rt, APP)
    return rt


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Runtime]:
    rt = open_app(tmp_path / "app.duckdb")
    yield rt
    rt.close()


def refused(call: Any) -> ButtressError:
    with pytest.raises(ButtressError) as caught:
        call()
    return caught.value


def logged(rt: Runtime) -> list[list[Any]]:
    return rt.query("select id, what from log order by id").rows


def test_every_path_to_an_action_the_agent_was_denied_is_denied_and_nothing_runs(app: Runtime) -> None:
    assert refused(lambda: app.run_action("secret_act", {"id": "a"}, actor="opbot")).code == "policy.denied"
    start = refused(lambda: app.start_workflow("w_secret", {"id": "b"}, actor="opbot"))
    assert start.code == "policy.denied"
    assert start.details["denied"] == [{"kind": "actions", "name": "secret_act"}]
    publish = refused(lambda: app.publish_message("pings", {"id": "c"}, actor="opbot"))
    assert (
        publish.code == "policy.denied"
        and {"kind": "actions", "name": "secret_act"} in publish.details["denied"]
    )
    compensated = refused(lambda: app.start_workflow("w_undo", {"id": "d"}, actor="opbot"))
    assert compensated.code == "policy.denied"
    app.scheduler.drain()
    assert logged(app) == []
    app.flush_reads()
    codes = [e.error_code for e in app.read_audit(limit=20) if e.actor == "opbot"]
    assert codes.count("policy.denied") == 4


def test_what_runs_later_runs_under_the_policy_of_the_call_and_is_audited_as_that_agent(app: Runtime) -> None:
    app.publish_message("pongs", {"id": "p1"}, actor="opbot")
    # before delivery, the subscription is pointed at an action opbot may not run
    deploy_ops(
        app,
        [
            {
                "op": "replace_subscription",
                "subscription": {
                    "name": "to_noop",
                    "topic": "pongs",
                    "action": "secret_act",
                    "args": {"id": {"from": "message.id"}},
                },
            }
        ],
    )
    app.scheduler.drain()
    assert logged(app) == []
    with app.engine.snapshot() as reader:
        (dead,) = reader.fetchall("SELECT subscription, error FROM _buttress.dead_letters")
        rows = audit_log.recent(reader, limit=5, operation="deliver")
    assert dead[0] == "to_noop" and "policy.denied" in dead[1]
    assert rows[0].actor == "opbot via subscription:to_noop" and rows[0].error_code == "policy.denied"


def test_a_cancel_decides_on_the_compensations_it_would_run_with_the_policy_of_now(tmp_path: Path) -> None:
    rt = open_app(tmp_path / "app.duckdb")
    try:
        rt.use_policy(
            rt.policy.model_copy(
                update={
                    "agents": {
                        **AGENTS,
                        "opbot": AgentPolicy(role="operator", actions=("noop", "secret_act")),
                    }
                }
            ),
            digest="test",
        )
        rt.start_workflow("w_undo", {"id": "u"}, run_id="u", actor="opbot")
        rt.scheduler.drain()
        rt.use_policy(
            rt.policy.model_copy(update={"agents": AGENTS}), digest="test"
        )  # the operator takes secret_act away
        error = refused(lambda: rt.cancel_run("u", actor="opbot"))
        assert error.code == "policy.denied" and error.details["denied"] == [
            {"kind": "actions", "name": "secret_act"}
        ]
        assert rt.get_run("u").status == "waiting"
    finally:
        rt.close()


def test_runs_belong_to_who_started_them_unless_an_agent_may_manage_runs(app: Runtime) -> None:
    app.start_workflow("w_hold", {"id": "h"}, run_id="h", actor="ops2")
    app.scheduler.drain()
    assert refused(lambda: app.cancel_run("h", actor="opbot")).code == "policy.denied"
    signal = refused(lambda: app.signal_run("h", "go", actor="opbot"))
    assert signal.code == "policy.denied" and signal.details["started_by"] == "ops2"
    app.signal_run("h", "go", actor="dev")  # developer holds manage_runs
    app.scheduler.drain()
    run = app.get_run("h")
    assert run.status == "completed" and run.acting_for == "ops2"
    with app.engine.snapshot() as reader:
        steps = audit_log.recent(reader, limit=10, operation="workflow_step")
    assert {e.actor for e in steps} == {"ops2 via workflow:h"}


def test_a_cycle_is_refused_at_propose_naming_it_unless_a_subscription_bounds_it(app: Runtime) -> None:
    loop = [
        action(
            "echo",
            {"id": "text"},
            "insert into log (id, what) values ($id || '-' || (select count(*) from log), 'echo')",
            emits=[{"publish": "echoes", "args": {"id": {"from": "args.id"}}}],
        ),
        {"op": "add_topic", "topic": {"name": "echoes", "payload": [{"name": "id", "type": "text"}]}},
        {
            "op": "add_subscription",
            "subscription": {
                "name": "again",
                "topic": "echoes",
                "action": "echo",
                "args": {"id": {"from": "message.id"}},
            },
        },
    ]
    error = refused(lambda: app.propose(loop))
    assert error.code == "spec.invalid"
    assert "action:echo -> topic:echoes -> subscription:again -> action:echo" in error.message
    bounded = [
        *loop[:2],
        {"op": "add_subscription", "subscription": {**loop[2]["subscription"], "max_depth": 3}},
    ]
    deploy_ops(app, bounded)
    app.run_action("echo", {"id": "e"})
    app.scheduler.drain()
    assert len([r for r in logged(app) if r[1] == "echo"]) == 4  # the call, then 3 hops
    with app.engine.snapshot() as reader:
        (dead,) = reader.fetchall("SELECT subscription, error FROM _buttress.dead_letters")
        lengths = {len(str(r[0])) for r in reader.fetchall("SELECT message_id FROM _buttress.messages")}
        deliveries = audit_log.recent(reader, limit=10, operation="deliver")
    assert dead[0] == "again" and "limit.chain_depth" in dead[1]
    assert [e.error_code for e in deliveries if e.outcome == "refused"] == ["limit.chain_depth"]
    assert len(lengths) == 1  # ids do not grow down the chain


def test_a_workflow_starting_itself_through_messages_stops_at_the_chain_limit(tmp_path: Path) -> None:
    rt = open_app(tmp_path / "app.duckdb", max_chain_depth=4)
    try:
        deploy_ops(
            rt,
            [
                {"op": "add_topic", "topic": {"name": "tick", "payload": [{"name": "id", "type": "text"}]}},
                {
                    "op": "add_workflow",
                    "workflow": {
                        "name": "ticker",
                        "params": [{"name": "id", "type": "text"}],
                        "steps": [
                            {
                                "name": "again",
                                "kind": "publish",
                                "topic": "tick",
                                "args": {"id": {"from": "input.id"}},
                            }
                        ],
                    },
                },
                {
                    "op": "add_subscription",
                    "subscription": {
                        "name": "on_tick",
                        "topic": "tick",
                        "workflow": "ticker",
                        "args": {"id": {"from": "message.id"}},
                        "max_depth": 100,
                    },
                },
            ],
        )
        rt.start_workflow("ticker", {"id": "t"}, actor="ops2")
        rt.scheduler.drain()
        runs = rt.list_runs(workflow="ticker")
        assert len(runs) == 5 and max(r.depth for r in runs) == 4
        assert {len(r.run_id) for r in runs if r.origin and r.origin.startswith("message:")} == {
            len("on_tick-") + 32
        }
    finally:
        rt.close()


def test_runs_started_per_minute_per_agent_and_fan_out_are_limited(tmp_path: Path) -> None:
    rt = open_app(tmp_path / "app.duckdb", max_runs_per_minute=2, max_fanout=1)
    try:
        rt.start_workflow("w_hold", {"id": "1"}, actor="ops2")
        rt.start_workflow("w_hold", {"id": "2"}, actor="ops2")
        error = refused(lambda: rt.start_workflow("w_hold", {"id": "3"}, actor="ops2"))
        assert error.code == "limit.rate" and error.details["limit"] == 2
        rt.start_workflow("w_hold", {"id": "4"}, actor="dev")  # another agent has its own budget
        wide = refused(
            lambda: rt.propose(
                [
                    {
                        "op": "add_subscription",
                        "subscription": {
                            "name": "second",
                            "topic": "pongs",
                            "action": "noop",
                            "args": {"id": {"from": "message.id"}},
                        },
                    }
                ]
            )
        )
        assert wide.code == "limit.exceeded" and wide.details["fanout"] == {"topic pongs": 2}
    finally:
        rt.close()
