"""Invariants checked on what changed: which shapes are incremental (and why the others are not), and
the differential soundness test: random mutations against generated invariants, checked both ways —
every violation the full query finds, the check restricted to the touched keys finds too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.logic import invariants, references
from runtime.logic.prepared import prepare
from runtime.runtime import Runtime
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.store.values import records
from tests.conftest import examples
from tests.runtime.conftest import deploy

SCHEMA: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "slot",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "capacity", "type": "integer"},
                {"name": "room", "type": "text", "nullable": True},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "booking",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "slot_id", "type": "integer", "nullable": True},
                {"name": "seats", "type": "integer"},
            ],
        },
    },
    {
        "op": "add_view",
        "view": {
            "name": "load",
            "sql": "select slot_id, count(*) as n, sum(seats) as total from booking group by slot_id",
        },
    },
]


def mutation(name: str, params: list[str], *statements: str) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": "integer", "nullable": True} for p in params],
            "statements": list(statements),
        },
    }


ACTIONS = [
    mutation(
        "book",
        ["id", "slot", "seats"],
        "insert into booking values ($id, $slot, $seats) on conflict do nothing",
    ),
    mutation("cancel", ["id"], "delete from booking where id = $id"),
    mutation("move", ["id", "slot"], "update booking set slot_id = $slot where id = $id"),
    mutation("resize", ["id", "seats"], "update booking set seats = $seats where id = $id"),
    mutation(
        "open_slot",
        ["id", "capacity"],
        "insert into slot values ($id, $capacity, null) on conflict do nothing",
    ),
    mutation("close_slot", ["id"], "delete from slot where id = $id"),
    mutation("set_capacity", ["id", "capacity"], "update slot set capacity = $capacity where id = $id"),
    mutation("set_room", ["id", "room"], "update slot set room = cast($room as varchar) where id = $id"),
    mutation("clear_slot", ["slot"], "delete from booking where slot_id = $slot"),
    mutation(
        "swap",
        ["a", "b"],
        "update booking set slot_id = $b where slot_id = $a",
        "update slot set capacity = capacity + 1 where id = $b",
    ),
]

INVARIANTS: list[tuple[str, bool]] = [
    (
        "select s.id from slot s join booking b on b.slot_id = s.id group by s.id, s.capacity having count(*) > s.capacity",
        True,
    ),
    (
        "select s.id from slot s join booking b on b.slot_id = s.id group by s.id, s.capacity having sum(b.seats) > s.capacity * 2",
        True,
    ),
    ("select slot_id from booking group by slot_id having sum(seats) > 6", True),
    ("select slot_id from booking group by slot_id having count(*) = 2", True),
    ("select id from booking where seats > 4", True),
    (
        "select s.id from slot s where s.capacity > 3 and not exists (select 1 from booking b where b.slot_id = s.id)",
        True,
    ),
    (
        "select s.id from slot s where s.capacity < (select count(*) from booking b where b.slot_id = s.id)",
        True,
    ),
    ("select slot_id from load where total > 5", True),
    ("select room from slot group by room having count(*) > 2", True),
    (
        "select s.id from slot s left join booking b on b.slot_id = s.id group by s.id, s.capacity having count(b.id) > s.capacity",
        True,
    ),
    ("select b.id from booking b join slot s on s.id = b.slot_id where b.seats > s.capacity", True),
    ("select 1 from booking having count(*) > 9", False),
    ("select id from slot union all select id from booking where seats > 5", False),
    ("select s.id from slot s, booking b where b.seats > 4 and s.capacity = 0", False),
]


def spec_with(sql: str) -> AppSpec:
    ops = [
        *SCHEMA,
        *ACTIONS,
        {"op": "add_invariant", "invariant": {"name": "rule", "description": "d", "sql": sql}},
    ]
    return changes.apply(AppSpec(checked_by="buttress"), changes.parse_operations(ops))


@pytest.mark.parametrize(("sql", "incremental"), INVARIANTS, ids=range(len(INVARIANTS)))
def test_each_shape_is_incremental_or_says_why_not(sql: str, incremental: bool) -> None:
    check = invariants.analyze("rule", "", sql, spec_with(sql))
    assert check.incremental is incremental, check.reason
    if incremental:
        assert check.reason.startswith("by ")
        assert set(check.keys) == check.reads
    else:
        assert check.reason and not check.reason.startswith("by ")


def test_describe_and_check_sql_show_how_each_invariant_is_checked(rt: Runtime) -> None:
    deploy(rt, [*SCHEMA, {"op": "add_invariant", "invariant": {"name": "cheap", "sql": INVARIANTS[0][0]}}])
    deploy(rt, [{"op": "add_invariant", "invariant": {"name": "total", "sql": INVARIANTS[11][0]}}])
    shown = {c.name: c for c in rt.describe().invariant_checks}
    assert shown["cheap"].incremental and shown["cheap"].reason == "by s.id"
    assert not shown["total"].incremental and "total over all rows" in shown["total"].reason
    assert rt.check_sql(INVARIANTS[11][0]).as_invariant.startswith("in full")  # type: ignore[union-attr]
    assert rt.check_sql(INVARIANTS[2][0]).as_invariant == "incremental, by booking.slot_id"


# ---------------------------------------------------------------------- differential soundness test

STEPS = 25
small = st.integers(min_value=0, max_value=2)
maybe = st.one_of(st.none(), small)
CALLS = st.one_of(
    st.tuples(
        st.just("book"),
        st.fixed_dictionaries({"id": st.integers(0, 12), "slot": maybe, "seats": st.integers(0, 6)}),
    ),
    st.tuples(st.just("cancel"), st.fixed_dictionaries({"id": st.integers(0, 12)})),
    st.tuples(st.just("move"), st.fixed_dictionaries({"id": st.integers(0, 12), "slot": maybe})),
    st.tuples(
        st.just("resize"), st.fixed_dictionaries({"id": st.integers(0, 12), "seats": st.integers(0, 6)})
    ),
    st.tuples(st.just("open_slot"), st.fixed_dictionaries({"id": small, "capacity": st.integers(0, 4)})),
    st.tuples(st.just("close_slot"), st.fixed_dictionaries({"id": small})),
    st.tuples(st.just("set_capacity"), st.fixed_dictionaries({"id": small, "capacity": st.integers(0, 4)})),
    st.tuples(
        st.just("set_room"),
        st.fixed_dictionaries({"id": small, "room": st.one_of(st.none(), st.integers(0, 1))}),
    ),
    st.tuples(st.just("clear_slot"), st.fixed_dictionaries({"slot": maybe})),
    st.tuples(st.just("swap"), st.fixed_dictionaries({"a": maybe, "b": maybe})),
)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One runtime with the schema and the actions (no invariant: every mutation runs), shared by the
    examples: each example runs in one transaction that rolls back, so each starts from empty tables."""
    rt = Runtime.open(tmp_path_factory.mktemp("delta") / "app.duckdb", audit_reads=False)
    deploy(rt, [*SCHEMA, *ACTIONS])
    yield rt
    rt.close()


@pytest.mark.parametrize("sql", [sql for sql, incremental in INVARIANTS if incremental], ids=lambda s: s[:40])
@settings(
    max_examples=examples(6),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(calls=st.lists(CALLS, min_size=STEPS, max_size=STEPS))
def test_the_restricted_check_finds_every_violation_the_full_one_finds(
    deployed: Runtime, sql: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    """Every mutation commits, so violations pile up; what must hold is that every violation a
    mutation *adds* (in the full query after it, not before it) is in the restricted check's answer."""
    spec = spec_with(sql)
    (check,) = invariants_of(spec)
    assert check.incremental
    rt = deployed
    with rt.engine.transaction() as example:  # each call's transaction joins it; it rolls back
        example.rollback_only = True
        for name, args in calls:
            action = spec.action(name)
            assert action is not None
            prepared = prepare(spec, action)
            with rt.engine.transaction() as tx:
                before = rows_of(tx, check.sql, None)
                touched = references.Touched()
                rt.actions._statements(tx, rt.current[0], prepared, args, touched)
                after = rows_of(tx, check.sql, None)
                keys: list[Any] = []
                for table in check.reads & touched.tables:
                    keys.extend(touched.values(table, check.keys.get(table, ())))
                restricted = check.restricted(keys) if not (check.reads & touched.inexact) else None
                delta = after if restricted is None else rows_of(tx, restricted[0], restricted[1] or None)
                added = after - before
                assert added <= delta, (name, args, sorted(added - delta), restricted)


def rows_of(tx: Any, sql: str, params: dict[str, Any] | None) -> set[tuple[Any, ...]]:
    return {tuple(sorted(row.items())) for row in records(tx.execute(f"SELECT * FROM {sql} AS v", params))}


def invariants_of(spec: AppSpec) -> list[invariants.Check]:
    from runtime.logic.prepared import invariant_checks

    return list(invariant_checks(spec))


def test_a_mutation_through_the_runtime_is_refused_by_a_restricted_check(rt: Runtime) -> None:
    sql = INVARIANTS[0][0]
    deploy(
        rt,
        [
            *SCHEMA,
            *ACTIONS,
            {
                "op": "add_invariant",
                "invariant": {"name": "seats", "description": "no overbooking", "sql": sql},
            },
        ],
    )
    rt.run_action("open_slot", {"id": 1, "capacity": 1})
    rt.run_action("book", {"id": 1, "slot": 1, "seats": 1})
    with pytest.raises(Exception) as caught:
        rt.run_action("book", {"id": 2, "slot": 1, "seats": 1})
    assert getattr(caught.value, "code", None) == "invariant.violated"
    rt.run_action("set_capacity", {"id": 1, "capacity": 2})
    rt.run_action("book", {"id": 2, "slot": 1, "seats": 1})
    with pytest.raises(Exception) as caught:
        rt.run_action("set_capacity", {"id": 1, "capacity": 1})  # the slot's group, from the other table
    assert getattr(caught.value, "code", None) == "invariant.violated"
