"""Application logic under concurrency: the runtime keeps invariants that naive agent SQL would break."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import open_runtime
from tests.runtime.conftest import deploy

BOOKING: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "slot",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "capacity", "type": "integer", "check": "capacity > 0"},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "booking",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer", "default": {"expr": "autoincrement"}},
                {"name": "slot_id", "type": "integer", "references": "slot.id"},
                {"name": "who", "type": "text"},
            ],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_overbooking",
            "description": "no slot holds more bookings than seats",
            "sql": "select s.id from slot s join booking b on b.slot_id = s.id group by s.id, s.capacity "
            "having count(*) > s.capacity",
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "add_slot",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "capacity", "type": "integer"}],
            "statements": ["insert into slot (id, capacity) values ($id, $capacity)"],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "book",
            "kind": "mutation",
            "description": "Book a seat on a slot.",
            "params": [{"name": "slot_id", "type": "integer"}, {"name": "who", "type": "text"}],
            "statements": ["insert into booking (slot_id, who) values ($slot_id, $who) returning id"],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "bookings_of",
            "kind": "query",
            "params": [{"name": "slot_id", "type": "integer"}],
            "statements": ["select who from booking where slot_id = $slot_id order by id"],
        },
    },
]


def hammer(callers: int, attempts: int, call: Callable[[int, int], None]) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(attempts):
                call(n, k)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]


def test_double_booking_is_impossible_under_16_concurrent_callers(rt: Runtime) -> None:
    deploy(rt, BOOKING)
    for slot in range(1, 11):
        rt.run_action("add_slot", {"id": slot, "capacity": 7})
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def book(n: int, k: int) -> None:
        try:
            rt.run_action("book", {"slot_id": (n + k) % 10 + 1, "who": f"caller{n}-{k}"}, actor=f"caller{n}")
            code = "ok"
        except ButtressError as error:
            code = str(error.code)
        with lock:
            outcomes[code] += 1

    hammer(16, 125, book)
    assert outcomes == {"ok": 70, "invariant.violated": 2000 - 70}
    counts = rt.query("select slot_id, count(*) from booking group by slot_id order by slot_id").rows
    assert counts == [[slot, 7] for slot in range(1, 11)]
    assert rt.verify_audit().ok


def test_an_invariant_violation_names_the_rule_and_the_rows_and_changes_nothing(rt: Runtime) -> None:
    deploy(rt, BOOKING)
    rt.run_action("add_slot", {"id": 1, "capacity": 1})
    rt.run_action("book", {"slot_id": 1, "who": "ann"})
    with pytest.raises(ButtressError) as caught:
        rt.run_action("book", {"slot_id": 1, "who": "bob"})
    assert caught.value.code == "invariant.violated"
    assert caught.value.details["invariant"] == "no_overbooking"
    assert caught.value.details["rows"] == [{"id": 1}]
    assert rt.run_action("bookings_of", {"slot_id": 1}).rows == [["ann"]]


DOCTORS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "doctor",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "on_call", "type": "boolean"}],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "someone_on_call",
            "description": "at least one doctor stays on call",
            "sql": "select 1 as nobody from doctor having count(*) > 0 and count(*) filter (where on_call) = 0",
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "go_off_call",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}],
            "statements": [
                "select count(*) from doctor where on_call",
                "update doctor set on_call = false where id = $id",
            ],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "go_on_call",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}],
            "statements": ["update doctor set on_call = true where id = $id"],
        },
    },
]


def test_write_skew_is_impossible_doctors_stay_on_call(rt: Runtime) -> None:
    deploy(rt, DOCTORS)
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO doctor VALUES (1, true), (2, true)")
    for _ in range(30):
        barrier = threading.Barrier(2)

        def off(n: int, k: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=10)
            try:
                rt.run_action("go_off_call", {"id": n + 1})
            except ButtressError as error:
                assert error.code == "invariant.violated"

        hammer(2, 1, off)
        on_call = rt.query("select count(*) from doctor where on_call").rows[0][0]
        assert on_call == 1
        for doctor in (1, 2):
            rt.run_action("go_on_call", {"id": doctor})


ACCOUNTS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "account",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "balance", "type": "bigint"}],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_overdraft",
            "description": "balances never go negative",
            "sql": "select id from account where balance < 0",
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "transfer",
            "kind": "mutation",
            "params": [
                {"name": "source", "type": "integer"},
                {"name": "target", "type": "integer"},
                {"name": "amount", "type": "bigint"},
            ],
            "statements": [
                "update account set balance = balance - $amount where id = $source",
                "update account set balance = balance + $amount where id = $target",
            ],
        },
    },
]


def test_money_is_conserved_under_concurrent_transfers(rt: Runtime) -> None:
    deploy(rt, ACCOUNTS)
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO account VALUES (0, 100), (1, 100), (2, 100), (3, 100), (4, 100), (5, 100)")

    def transfer(n: int, k: int) -> None:
        source, target = (n + k) % 6, (n * 7 + k * 3 + 1) % 6
        if source == target:
            return
        try:
            rt.run_action("transfer", {"source": source, "target": target, "amount": 10 + (k % 5) * 20})
        except ButtressError as error:
            assert error.code == "invariant.violated"

    for _ in range(3):
        hammer(8, 40, transfer)
        total, lowest = rt.query("select sum(balance), min(balance) from account").rows[0]
        assert total == 600
        assert lowest >= 0


ORDERS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "orders",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer", "default": {"expr": "autoincrement"}},
                {"name": "item", "type": "text"},
                {"name": "amount", "type": "decimal(10,2)"},
            ],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "place_order",
            "kind": "mutation",
            "params": [{"name": "item", "type": "text"}, {"name": "amount", "type": "decimal(10,2)"}],
            "statements": ["insert into orders (item, amount) values ($item, $amount) returning id, amount"],
        },
    },
]


def test_a_retried_order_with_the_same_key_is_recorded_once_even_after_a_restart(
    rt: Runtime, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    deploy(rt, ORDERS)
    first = rt.run_action("place_order", {"item": "lamp", "amount": "19.90"}, idempotency_key="order-1")
    again = rt.run_action("place_order", {"item": "lamp", "amount": "19.90"}, idempotency_key="order-1")
    assert again.replayed and again.rows == first.rows == [[1, "19.90"]]
    rt.close()
    reopened = open_runtime(tmp_path, request)  # the same database, opened again
    try:
        after_restart = reopened.run_action(
            "place_order", {"item": "lamp", "amount": "19.90"}, idempotency_key="order-1"
        )
        assert after_restart.replayed and after_restart.rows == first.rows
        assert reopened.query("select count(*) from orders").rows == [[1]]
        with pytest.raises(ButtressError) as caught:
            reopened.run_action("place_order", {"item": "sofa", "amount": "900"}, idempotency_key="order-1")
        assert caught.value.code == "action.idempotency_conflict"
        assert reopened.query("select count(*) from orders").rows == [[1]]
    finally:
        reopened.close()


def test_concurrent_retries_with_one_key_create_exactly_one_order(rt: Runtime) -> None:
    deploy(rt, ORDERS)
    hammer(
        8,
        5,
        lambda n, k: rt.run_action("place_order", {"item": "lamp", "amount": "5"}, idempotency_key="same"),
    )
    assert rt.query("select count(*) from orders").rows == [[1]]


def test_a_migration_dropping_a_field_actions_use_is_refused_naming_every_one_until_they_are_replaced(
    rt: Runtime,
) -> None:
    deploy(rt, BOOKING)
    drop = [{"op": "drop_field", "entity": "booking", "field": "who"}]
    with pytest.raises(ButtressError) as caught:
        rt.propose(drop)
    assert caught.value.code == "sql.unknown_column"
    assert {(p["kind"], p["name"]) for p in caught.value.details["problems"]} == {
        ("action", "book"),
        ("action", "bookings_of"),
    }
    assert "replace" in caught.value.hint
    fixed = rt.propose(
        [
            {
                "op": "replace_action",
                "action": {
                    "name": "book",
                    "kind": "mutation",
                    "params": [{"name": "slot_id", "type": "integer"}],
                    "statements": ["insert into booking (slot_id) values ($slot_id) returning id"],
                },
            },
            {
                "op": "replace_action",
                "action": {
                    "name": "bookings_of",
                    "kind": "query",
                    "params": [{"name": "slot_id", "type": "integer"}],
                    "statements": ["select id from booking where slot_id = $slot_id"],
                },
            },
            *drop,
        ]
    )
    assert "action.broken" not in {h.code for h in fixed.hazards}
    assert rt.dry_run(fixed.proposal_id).passed
    rt.deploy(fixed.proposal_id)
    rt.rollback()
    assert [p.name for p in rt.current[1].action("book").params] == ["slot_id", "who"]  # type: ignore[union-attr]


def test_arguments_are_validated_against_the_declared_types(rt: Runtime) -> None:
    deploy(rt, BOOKING)
    with pytest.raises(ButtressError) as caught:
        rt.run_action("book", {"slot_id": "one", "who": "ann"})
    assert caught.value.code == "action.invalid_args"
    with pytest.raises(ButtressError) as caught:
        rt.run_action("nope", {})
    assert caught.value.code == "not_found"
