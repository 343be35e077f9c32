"""Workflows, messages and effects in one process: what each step guarantees, what the scheduler does
after a restart, and how deploys and rollbacks treat the work in flight. The crash-and-restart stories
over MCP with real SIGKILLs live in tests/workflows/."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.boundary.policy import Connector, Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.fakes.provider import State, serve
from tests.runtime.conftest import deploy


def action(name: str, params: dict[str, str], *statements: str, **extra: Any) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": t} for p, t in params.items()],
            "statements": list(statements),
            **extra,
        },
    }


SHOP: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "stock",
            "primary_key": ["sku"],
            "fields": [
                {"name": "sku", "type": "text"},
                {"name": "qty", "type": "integer", "check": "qty >= 0"},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "sale",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "text"},
                {"name": "sku", "type": "text"},
                {"name": "charge", "type": "text", "nullable": True},
            ],
        },
    },
    action("reserve", {"sku": "text"}, "update stock set qty = qty - 1 where sku = $sku returning qty"),
    action("release", {"sku": "text"}, "update stock set qty = qty + 1 where sku = $sku"),
    action(
        "record_sale",
        {"id": "text", "sku": "text", "charge": "text"},
        "insert into sale values ($id, $sku, $charge)",
    ),
    {
        "op": "add_topic",
        "topic": {
            "name": "sales",
            "payload": [{"name": "sale", "type": "text"}, {"name": "sku", "type": "text"}],
            "key": "sku",
            "external": True,
        },
    },
]

CHECKOUT = {
    "op": "add_workflow",
    "workflow": {
        "name": "checkout",
        "params": [
            {"name": "sale", "type": "text"},
            {"name": "sku", "type": "text"},
            {"name": "amount", "type": "integer"},
        ],
        "steps": [
            {
                "name": "reserve",
                "kind": "action",
                "action": "reserve",
                "args": {"sku": {"from": "input.sku"}},
                "compensation": {"action": "release", "args": {"sku": {"from": "input.sku"}}},
            },
            {
                "name": "charge",
                "kind": "effect",
                "connector": "payments",
                "args": {
                    "customer": "c1",
                    "amount": {"from": "input.amount"},
                    "order": {"from": "input.sale"},
                },
                "retry": {"attempts": 3, "backoff_s": 0.01},
                "compensation": {"connector": "refunds", "args": {"charge": {"from": "steps.charge.id"}}},
            },
            {
                "name": "record",
                "kind": "action",
                "action": "record_sale",
                "args": {
                    "id": {"from": "input.sale"},
                    "sku": {"from": "input.sku"},
                    "charge": {"from": "steps.charge.id"},
                },
            },
            {
                "name": "announce",
                "kind": "publish",
                "topic": "sales",
                "args": {"sale": {"from": "input.sale"}, "sku": {"from": "input.sku"}},
            },
        ],
    },
}


@pytest.fixture
def provider() -> Iterator[tuple[str, State]]:
    state = State(seed=1, fail_rate=0.0, drop_rate=0.0, decline_over=1000)
    server = serve(0, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


HOLD: dict[str, Any] = {
    "op": "add_workflow",
    "workflow": {
        "name": "hold",
        "params": [{"name": "sku", "type": "text"}],
        "steps": [
            {
                "name": "reserve",
                "kind": "action",
                "action": "reserve",
                "args": {"sku": {"from": "input.sku"}},
                "compensation": {"action": "release", "args": {"sku": {"from": "input.sku"}}},
            },
            {"name": "confirm", "kind": "wait", "signal": "confirmed"},
        ],
    },
}
"""Reserves an item, then waits for a ``confirmed`` signal: a run to cancel while it waits."""

Shop = Callable[..., Runtime]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    """Opens the shop app against a provider's base URL (connector options for payments); closed after."""
    opened: list[Runtime] = []

    def open_shop(base: str, **connector: Any) -> Runtime:
        policy = Policy(
            connectors={
                "payments": Connector(url=f"{base}/charges", timeout_s=2, **connector),
                "refunds": Connector(url=f"{base}/refunds", timeout_s=2),
                "mail": Connector(url=f"{base}/mail", timeout_s=2),
            }
        )
        rt = Runtime.open(tmp_path / "shop.duckdb", policy=policy, audit_reads=False)
        opened.append(rt)
        deploy(rt, [*SHOP, CHECKOUT])
        with rt.engine.transaction() as tx:
            tx.execute("INSERT INTO stock VALUES ('apple', 2)")
        return rt

    yield open_shop
    for rt in opened:
        rt.close()


def settle(rt: Runtime, seconds: float = 5.0) -> None:
    """Run the scheduler until nothing is due, letting short timers and backoffs pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rt.scheduler.drain()
        active = rt.list_runs(status="active")
        if not active or all(r.status in {"blocked", "waiting"} and r.wake_at is None for r in active):
            return
        time.sleep(0.02)


def rows(rt: Runtime, sql: str) -> list[list[Any]]:
    return rt.query(sql).rows


# ------------------------------------------------------------------------------------ the happy path


def test_a_run_completes_each_step_once_and_publishes(shop: Shop, provider: tuple[str, State]) -> None:
    base, state = provider
    rt = shop(base)
    run = rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 10}, run_id="s1")
    assert run.status == "running" and run.step == "reserve"
    settle(rt)
    detail = rt.get_run("s1")
    assert detail.status == "completed", detail
    assert [s.name for s in detail.steps] == ["reserve", "charge", "record", "announce"]
    assert all(s.version == 1 and s.attempts == 1 for s in detail.steps)
    assert [e.state for e in detail.effects] == ["succeeded"]
    assert rows(rt, "select id, charge from sale") == [["s1", "ch_1"]]
    assert rows(rt, "select qty from stock") == [[1]]
    assert len(state.charges) == 1 and state.charges[0]["order"] == "s1"
    claimed = rt.claim_messages("sales", consumer="c")
    assert [m.payload for m in claimed.messages] == [{"sale": "s1", "sku": "apple"}]
    assert rt.verify_audit().ok
    operations = [e.operation for e in rt.read_audit(limit=100)]
    assert operations.count("workflow_step") == 4 and "effect_send" in operations


def test_a_run_id_is_an_idempotency_key(shop: Shop, provider: tuple[str, State]) -> None:
    rt = shop(provider[0])
    first = rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 10}, run_id="r")
    again = rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 10}, run_id="r")
    assert again.run_id == first.run_id and len(rt.list_runs()) == 1
    with pytest.raises(ButtressError) as caught:
        rt.start_workflow("checkout", {"sale": "s2", "sku": "apple", "amount": 10}, run_id="r")
    assert caught.value.code == "workflow.run_conflict"
    with pytest.raises(ButtressError) as caught:
        rt.start_workflow("checkout", {"sale": "s2", "sku": "apple"})
    assert caught.value.code == "action.invalid_args" and "amount" in caught.value.message


# ----------------------------------------------------------------------------------- compensation


def test_a_declined_charge_compensates_the_reservation(shop: Shop, provider: tuple[str, State]) -> None:
    base, state = provider
    rt = shop(base)
    rt.start_workflow("checkout", {"sale": "big", "sku": "apple", "amount": 5000}, run_id="big")
    settle(rt)
    detail = rt.get_run("big")
    assert detail.status == "compensated" and detail.error is not None
    assert detail.error["code"] == "effect.rejected"
    assert [(s.name, s.status) for s in detail.steps] == [
        ("reserve", "completed"),
        ("charge", "failed"),
        ("reserve.compensation", "completed"),
    ]
    assert rows(rt, "select qty from stock") == [[2]] and rows(rt, "select * from sale") == []
    assert state.charges == [] and detail.effects[0].state == "rejected"


def test_a_failure_after_the_charge_refunds_it(shop: Shop, provider: tuple[str, State]) -> None:
    base, state = provider
    rt = shop(base)
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO sale VALUES ('dup', 'apple', NULL)")  # record_sale will hit its key
    rt.start_workflow("checkout", {"sale": "dup", "sku": "apple", "amount": 10}, run_id="dup")
    settle(rt)
    detail = rt.get_run("dup")
    assert detail.status == "compensated", detail
    names = [s.name for s in detail.steps]
    assert names == ["reserve", "charge", "record", "charge.compensation", "reserve.compensation"]
    assert [r["charge"] for r in state.refunds] == ["ch_1"]
    assert rows(rt, "select qty from stock") == [[2]]


def test_cancel_compensates_the_completed_steps(shop: Shop, provider: tuple[str, State]) -> None:
    rt = shop(provider[0])
    deploy(rt, [HOLD])
    rt.start_workflow("hold", {"sku": "apple"}, run_id="h")
    settle(rt)
    assert rt.get_run("h").status == "waiting" and rows(rt, "select qty from stock") == [[1]]
    rt.cancel_run("h", reason="customer left")
    settle(rt)
    detail = rt.get_run("h")
    assert detail.status == "cancelled" and rows(rt, "select qty from stock") == [[2]]
    with pytest.raises(ButtressError) as caught:
        rt.cancel_run("h")
    assert caught.value.code == "workflow.not_active"


# ---------------------------------------------------------------------------------------- effects


def test_a_lost_answer_is_resent_with_the_same_key(shop: Shop, provider: tuple[str, State]) -> None:
    base, state = provider
    state.drop_rate = 1.0  # the provider charges, then the answer never arrives
    rt = shop(base)
    rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 10}, run_id="s1")
    rt.scheduler.drain()
    state.drop_rate = 0.0
    settle(rt)
    assert rt.get_run("s1").status == "completed"
    assert len(state.charges) == 1 and state.replays >= 1  # the repeat got the saved answer
    effect = rt.list_effects(run_id="s1")[0]
    assert effect.attempts >= 2 and effect.state == "succeeded"


def test_an_effect_without_an_answer_blocks_until_the_operator_acts(
    shop: Shop, provider: tuple[str, State]
) -> None:
    base, state = provider
    state.fail_rate = 1.0  # 503 every time
    rt = shop(base)
    rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 10}, run_id="s1")
    settle(rt)
    detail = rt.get_run("s1")
    assert detail.status == "blocked" and detail.error is not None
    unknown = rt.list_effects(state="unknown")
    assert [e.run_id for e in unknown] == ["s1"] and unknown[0].attempts == 3
    state.fail_rate = 0.0
    rt.retry_run("s1")
    settle(rt)
    assert rt.get_run("s1").status == "completed" and len(state.charges) == 1


def test_the_operator_resolves_an_unknown_effect(shop: Shop, provider: tuple[str, State]) -> None:
    base, state = provider
    state.fail_rate = 1.0
    rt = shop(base)
    rt.start_workflow("checkout", {"sale": "s1", "sku": "apple", "amount": 10}, run_id="s1")
    settle(rt)
    effect = rt.list_effects(state="unknown")[0]
    with pytest.raises(ButtressError) as caught:
        rt.resolve_effect(effect.effect_id, "succeeded", actor="claude")
    assert caught.value.code == "policy.denied"  # an agent cannot decide what happened outside
    rt.resolve_effect(effect.effect_id, "succeeded", response={"id": "ch_manual"})
    settle(rt)
    assert rt.get_run("s1").status == "completed"
    assert rows(rt, "select charge from sale") == [["ch_manual"]] and state.charges == []


def test_a_connector_the_operator_did_not_declare_fails_the_dry_run(rt: Runtime) -> None:
    proposal = rt.propose([*SHOP, CHECKOUT])
    report = rt.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["code"] == "connector.unknown"
    assert report.error["details"]["connectors"] == ["payments", "refunds"]


# ------------------------------------------------------------------------ waits, timers, restarts


def test_timers_and_waits_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    rt = Runtime.open(path)
    deploy(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "note",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "text"}, {"name": "text", "type": "text"}],
                },
            },
            action("write", {"id": "text", "text": "text"}, "insert into note values ($id, $text)"),
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "later",
                    "params": [{"name": "id", "type": "text"}],
                    "steps": [
                        {"name": "nap", "kind": "sleep", "seconds": 0.3},
                        {"name": "hear", "kind": "wait", "signal": "go", "timeout_s": 60},
                        {
                            "name": "write",
                            "kind": "action",
                            "action": "write",
                            "args": {"id": {"from": "input.id"}, "text": {"from": "steps.hear.text"}},
                        },
                    ],
                },
            },
        ],
    )
    rt.start_workflow("later", {"id": "n1"}, run_id="n1")
    rt.scheduler.drain()
    assert rt.get_run("n1").waiting_on == "sleep:nap"
    rt.close()
    time.sleep(0.4)  # the timer passes while nothing runs
    rt = Runtime.open(path)
    try:
        rt.signal_run("n1", "go", {"text": "sent early"})  # a signal before its wait is kept for it
        settle(rt)
        assert rt.get_run("n1").status == "completed"
        assert rows(rt, "select text from note") == [["sent early"]]
    finally:
        rt.close()


def test_a_wait_times_out_into_its_workflow_s_failure_handling(rt: Runtime) -> None:
    deploy(
        rt,
        [
            {
                "op": "add_topic",
                "topic": {"name": "pings", "payload": [{"name": "who", "type": "text"}]},
            },
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "listen",
                    "params": [{"name": "who", "type": "text"}],
                    "steps": [
                        {
                            "name": "ping",
                            "kind": "wait",
                            "topic": "pings",
                            "args": {"who": {"from": "input.who"}},
                            "timeout_s": 0.2,
                        }
                    ],
                },
            },
        ],
    )
    rt.publish_message("pings", {"who": "bob"})  # before the runs start: not for them
    rt.start_workflow("listen", {"who": "ada"}, run_id="a")
    rt.start_workflow("listen", {"who": "bob"}, run_id="b")
    rt.scheduler.drain()
    rt.publish_message("pings", {"who": "ada"})
    settle(rt, 2)
    assert rt.get_run("a").status == "completed"
    assert rt.get_run("a").steps[0].output == {"who": "ada"}
    failed = rt.get_run("b")
    assert failed.status == "compensated" and failed.error is not None  # nothing to undo
    assert failed.error["code"] == "workflow.timeout"


# ------------------------------------------------------------------------ messages and the outbox


def test_an_action_publishes_and_starts_runs_only_when_its_writes_commit(
    shop: Shop, provider: tuple[str, State]
) -> None:
    rt = shop(provider[0])
    deploy(
        rt,
        [
            action(
                "place",
                {"sale": "text", "sku": "text"},
                "update stock set qty = qty - 1 where sku = $sku returning qty",
                emits=[
                    {
                        "publish": "sales",
                        "args": {"sale": {"from": "args.sale"}, "sku": {"from": "args.sku"}},
                    },
                ],
            )
        ],
    )
    rt.run_action("place", {"sale": "a", "sku": "apple"})
    rt.run_action("place", {"sale": "b", "sku": "apple"})
    with pytest.raises(ButtressError):
        rt.run_action("place", {"sale": "c", "sku": "apple"})  # qty would be -1: nothing commits
    published = rt.list_messages(topic="sales")
    assert sorted(m.payload["sale"] for m in published) == ["a", "b"]


def test_claims_lease_and_keep_per_key_order(shop: Shop, provider: tuple[str, State]) -> None:
    rt = shop(provider[0])
    for sale, sku in [("1", "apple"), ("2", "apple"), ("3", "pear"), ("4", "apple")]:
        rt.publish_message("sales", {"sale": sale, "sku": sku})
    first = rt.claim_messages("sales", consumer="a", limit=10, lease_s=1)
    assert [m.payload["sale"] for m in first.messages] == ["1", "3"]  # one per key at a time
    assert rt.claim_messages("sales", consumer="b").messages == []
    rt.ack_messages([first.messages[0].message_id], consumer="a")
    second = rt.claim_messages("sales", consumer="b")
    assert [m.payload["sale"] for m in second.messages] == ["2"]
    time.sleep(1.1)  # a's lease on "3" runs out: it is delivered again
    third = rt.claim_messages("sales", consumer="b")
    assert [m.payload["sale"] for m in third.messages] == ["3"] and third.messages[0].deliveries == 2
    with pytest.raises(ButtressError) as caught:
        rt.ack_messages([first.messages[1].message_id], consumer="a")
    assert caught.value.code == "message.not_leased"
    again = rt.publish_message("sales", {"sale": "5", "sku": "kiwi"}, message_id="m5")
    assert rt.publish_message("sales", {"sale": "5", "sku": "kiwi"}, message_id="m5").seq == again.seq
    with pytest.raises(ButtressError) as caught:
        rt.publish_message("sales", {"sale": 5})
    assert caught.value.code == "message.invalid_payload"


def test_a_subscription_feeds_an_action_exactly_once_and_dead_letters_refusals(rt: Runtime) -> None:
    deploy(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "tally",
                    "primary_key": ["who"],
                    "fields": [
                        {"name": "who", "type": "text"},
                        {"name": "n", "type": "integer", "check": "n < 3"},
                    ],
                },
            },
            action(
                "count",
                {"who": "text"},
                "insert into tally values ($who, 1) on conflict (who) do update set n = tally.n + 1",
            ),
            {
                "op": "add_topic",
                "topic": {"name": "visits", "payload": [{"name": "who", "type": "text"}]},
            },
            {
                "op": "add_subscription",
                "subscription": {
                    "name": "counter",
                    "topic": "visits",
                    "action": "count",
                    "args": {"who": {"from": "message.who"}},
                },
            },
        ],
    )
    for who in ["ada", "ada", "bob", "ada", "ada"]:
        rt.publish_message("visits", {"who": who})
    rt.scheduler.drain()
    rt.scheduler.drain()
    assert rows(rt, "select who, n from tally order by who") == [["ada", 2], ["bob", 1]]
    with rt.engine.snapshot() as reader:
        dead = reader.fetchall("SELECT seq FROM _buttress.dead_letters ORDER BY seq")
    assert len(dead) == 2  # ada's 3rd and 4th visits broke the check
    assert rt.list_messages(topic="visits", undelivered=True) == []


# ----------------------------------------------------------------- coherence with deploy and rollback


def test_dropping_an_action_a_run_in_flight_calls_fails_the_dry_run_naming_it(rt: Runtime) -> None:
    deploy(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "log",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "text"}],
                },
            },
            action("note", {"id": "text"}, "insert into log values ($id)"),
            {
                "op": "add_workflow",
                "workflow": {
                    "name": "two",
                    "params": [{"name": "id", "type": "text"}],
                    "steps": [
                        {"name": "hold", "kind": "wait", "signal": "go"},
                        {
                            "name": "note",
                            "kind": "action",
                            "action": "note",
                            "args": {"id": {"from": "input.id"}},
                        },
                    ],
                },
            },
        ],
    )
    rt.start_workflow("two", {"id": "x"}, run_id="x")
    rt.scheduler.drain()
    proposal = rt.propose([{"op": "drop_workflow", "name": "two"}, {"op": "drop_action", "name": "note"}])
    assert {h.code for h in proposal.hazards} == {"workflow.in_flight", "compat.drop_action"}
    report = rt.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["code"] == "workflow.stranded"
    (stranded,) = report.error["details"]["stranded"]
    assert (stranded["workflow"], stranded["step"], stranded["runs"]) == ("two", "note", ["x"])
    assert "calls action note, which the target does not have" in stranded["problem"]
    rt.cancel_run("x")
    rt.scheduler.drain()
    assert rt.dry_run(
        rt.propose(
            [{"op": "drop_workflow", "name": "two"}, {"op": "drop_action", "name": "note"}]
        ).proposal_id
    ).passed


def test_rollback_converts_undelivered_messages_and_a_redeploy_restores_them(rt: Runtime) -> None:
    deploy(
        rt,
        [
            {
                "op": "add_topic",
                "topic": {
                    "name": "user_events",
                    "payload": [{"name": "user", "type": "text"}],
                    "external": True,
                },
            }
        ],
    )
    new_shape = {
        "op": "replace_topic",
        "topic": {
            "name": "user_events",
            "payload": [
                {"name": "user", "type": "text"},
                {"name": "plan", "type": "text", "nullable": True},
            ],
            "external": True,
        },
    }
    deploy(rt, [new_shape])
    rt.publish_message("user_events", {"user": "ada", "plan": "pro"}, message_id="m1")
    rt.publish_message("user_events", {"user": "bob", "plan": "free"}, message_id="m2")
    delivered = rt.claim_messages("user_events", consumer="c", limit=1)
    rt.ack_messages([m.message_id for m in delivered.messages], consumer="c")
    result = rt.rollback()
    report_losses = [loss for step in result.steps for loss in step.losses]
    assert any(loss.code == "message.converted" and loss.count == 1 for loss in report_losses)
    pending = rt.claim_messages("user_events", consumer="old")
    assert [m.payload for m in pending.messages] == [{"user": "bob"}]  # no field the old version lacks
    again = rt.propose([new_shape])
    rt.dry_run(again.proposal_id)
    rt.deploy(again.proposal_id)
    restored = {m.message_id: m.payload for m in rt.list_messages(topic="user_events")}
    assert restored["m2"] == {"user": "bob", "plan": "free"}


def test_a_payload_change_undelivered_messages_cannot_take_is_refused(rt: Runtime) -> None:
    deploy(
        rt,
        [
            {
                "op": "add_topic",
                "topic": {"name": "t", "payload": [{"name": "a", "type": "text"}], "external": True},
            }
        ],
    )
    rt.publish_message("t", {"a": "x"})
    proposal = rt.propose(
        [
            {
                "op": "replace_topic",
                "topic": {
                    "name": "t",
                    "payload": [{"name": "a", "type": "text"}, {"name": "b", "type": "integer"}],
                    "external": True,
                },
            }
        ]
    )
    report = rt.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["code"] == "deploy.dry_run_failed"
    assert report.error["details"]["probe"] == "message.stranded" and report.error["details"]["count"] == 1


def test_workflow_spec_problems_are_reported_all_at_once(rt: Runtime) -> None:
    with pytest.raises(ButtressError) as caught:
        rt.propose(
            [
                {"op": "add_topic", "topic": {"name": "t", "payload": [{"name": "a", "type": "text"}]}},
                {
                    "op": "add_workflow",
                    "workflow": {
                        "name": "w",
                        "steps": [
                            {"name": "one", "kind": "action", "action": "missing"},
                            {"name": "two", "kind": "publish", "topic": "t", "args": {"b": 1}},
                            {
                                "name": "three",
                                "kind": "wait",
                                "signal": "s",
                                "args": {"x": {"from": "steps.four.y"}},
                            },
                        ],
                    },
                },
                {
                    "op": "add_subscription",
                    "subscription": {"name": "s", "topic": "nope", "workflow": "w"},
                },
            ]
        )
    problems = caught.value.details["problems"]
    assert caught.value.code == "spec.invalid" and len(problems) >= 4
    text = json.dumps(problems)
    assert "missing" in text and "lacks" in text and "steps.four.y" in text and "nope" in text


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())
