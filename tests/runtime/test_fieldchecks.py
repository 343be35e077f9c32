"""Field checks enforced by the runtime (``checked_by`` buttress): every write of an action carries
the verdict of its entity's checks, deploys check the rows a plan leaves, and adding or dropping a
check no longer rebuilds the table. A differential property test holds the runtime's verdicts to
DuckDB's own CHECK constraints on the same writes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import constraint_kinds, examples
from tests.runtime.conftest import deploy

ROOM = {
    "op": "add_entity",
    "entity": {
        "name": "room",
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "seats", "type": "integer", "check": "seats > 0 AND seats <= 500"},
            {"name": "label", "type": "text", "nullable": True, "check": "length(label) BETWEEN 1 AND 8"},
        ],
    },
}


def action(name: str, params: dict[str, str], *statements: str) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": t, "nullable": True} for p, t in params.items()],
            "statements": list(statements),
        },
    }


ACTIONS = [
    action(
        "add_room",
        {"id": "integer", "seats": "integer", "label": "text"},
        "insert into room (id, seats, label) values ($id, $seats, $label)",
    ),
    action("resize", {"id": "integer", "seats": "integer"}, "update room set seats = $seats where id = $id"),
    action(
        "upsert_room",
        {"id": "integer", "seats": "integer", "label": "text"},
        "insert into room (id, seats, label) values ($id, $seats, $label) "
        "on conflict (id) do update set seats = excluded.seats, label = excluded.label",
    ),
]


def code(call: Callable[[], object]) -> str:
    try:
        call()
    except ButtressError as error:
        return str(error.code)
    return "ok"


def rows(rt: Runtime, sql: str) -> list[list[Any]]:
    return rt.query(sql).rows


@pytest.fixture
def rooms(rt: Runtime) -> Runtime:
    deploy(rt, [ROOM, *ACTIONS])
    rt.run_action("add_room", {"id": 1, "seats": 10, "label": "a"})
    return rt


def test_new_projects_carry_no_duckdb_check_constraints(rooms: Runtime) -> None:
    assert "CHECK" not in constraint_kinds(rooms, "room")
    assert rooms.current[1].checked_by == "buttress"


def test_an_insert_breaking_a_check_is_refused_naming_the_row_and_nothing_is_written(rooms: Runtime) -> None:
    with pytest.raises(ButtressError) as caught:
        rooms.run_action("add_room", {"id": 2, "seats": 0, "label": "b"})
    error = caught.value
    assert error.code == "action.constraint_violated"
    assert error.details["field"] == "seats" and error.details["row"] == {"id": 2, "seats": 0, "label": "b"}
    assert "seats > 0" in error.message and error.hint
    assert rows(rooms, "select id from room order by id") == [[1]]


def test_null_passes_a_check_as_in_sql(rooms: Runtime) -> None:
    rooms.run_action("add_room", {"id": 2, "seats": 3, "label": None})
    assert code(lambda: rooms.run_action("add_room", {"id": 3, "seats": 3, "label": "far too long"})) == (
        "action.constraint_violated"
    )


def test_updates_and_upserts_meet_the_check_on_the_rows_they_leave(rooms: Runtime) -> None:
    assert code(lambda: rooms.run_action("resize", {"id": 1, "seats": 501})) == "action.constraint_violated"
    assert code(lambda: rooms.run_action("upsert_room", {"id": 1, "seats": -1, "label": "a"})) == (
        "action.constraint_violated"
    )
    rooms.run_action("upsert_room", {"id": 1, "seats": 20, "label": "b"})
    assert rows(rooms, "select seats, label from room") == [[20, "b"]]


def test_an_update_from_another_table_checks_the_written_table_s_columns(rt: Runtime) -> None:
    other = {
        "op": "add_entity",
        "entity": {
            "name": "plan",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
        },
    }
    copy = action(
        "copy_plan",
        {"id": "integer"},
        "update room as r set seats = p.seats - 1000 from plan as p where p.id = r.id and r.id = $id",
    )
    deploy(rt, [ROOM, other, *ACTIONS, copy])
    rt.run_action("add_room", {"id": 1, "seats": 10, "label": "a"})
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO plan VALUES (1, 1200)")  # plan.seats would pass room's check
    # the verdict is on room.seats (200 after the update: fine), not on plan.seats
    rt.run_action("copy_plan", {"id": 1})
    assert rows(rt, "select seats from room") == [[200]]
    with rt.engine.transaction() as tx:
        tx.execute("UPDATE plan SET seats = 900")
    assert code(lambda: rt.run_action("copy_plan", {"id": 1})) == "action.constraint_violated"


def test_adding_and_dropping_a_check_changes_the_spec_only(rooms: Runtime) -> None:
    add = rooms.propose([{"op": "alter_field", "entity": "room", "field": "seats", "check": "seats >= 10"}])
    assert [s.strategy for s in add.steps] == ["catalog"]
    assert not any(h.code == "rebuild.table_copy" for h in add.hazards)
    rooms.dry_run(add.proposal_id)
    rooms.deploy(add.proposal_id)
    assert code(lambda: rooms.run_action("resize", {"id": 1, "seats": 9})) == "action.constraint_violated"
    rooms.rollback()
    rooms.run_action("resize", {"id": 1, "seats": 9})  # the old check again
    drop = rooms.propose([{"op": "alter_field", "entity": "room", "field": "seats", "drop_check": True}])
    assert [s.strategy for s in drop.steps] == ["catalog"]


def test_a_new_check_that_existing_rows_break_fails_the_dry_run_naming_them(rooms: Runtime) -> None:
    proposal = rooms.propose(
        [{"op": "alter_field", "entity": "room", "field": "seats", "check": "seats > 10"}]
    )
    report = rooms.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert "1" in str(report.error) and "seats" in report.error["message"]


def test_a_new_field_s_default_meets_its_check_at_deploy(rooms: Runtime) -> None:
    bad = rooms.propose(
        [
            {
                "op": "add_field",
                "entity": "room",
                "field": {"name": "floor", "type": "integer", "default": -1, "check": "floor >= 0"},
            }
        ]
    )
    assert [s.strategy for s in bad.steps] == ["alter"]  # DuckDB could not add a column with a CHECK
    report = rooms.dry_run(bad.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["details"]["field"] == "floor" and report.error["details"]["rows"] == [
        {"id": 1, "floor": -1}
    ]
    good = rooms.propose(
        [
            {
                "op": "add_field",
                "entity": "room",
                "field": {"name": "floor", "type": "integer", "default": 0, "check": "floor >= 0"},
            }
        ]
    )
    rooms.dry_run(good.proposal_id)
    rooms.deploy(good.proposal_id)
    assert rooms.check_drift() == []


def test_set_null_meets_the_child_s_checks(rt: Runtime) -> None:
    parent = {
        "op": "add_entity",
        "entity": {"name": "team", "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
    }
    child = {
        "op": "add_entity",
        "entity": {
            "name": "member",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {
                    "name": "team_id",
                    "type": "integer",
                    "nullable": True,
                    "references": "team.id",
                    "on_delete": "set_null",
                    "check": "team_id IS NOT NULL OR id < 100",
                },
            ],
        },
    }
    deploy(
        rt,
        [
            parent,
            child,
            action("drop_team", {"id": "integer"}, "delete from team where id = $id"),
        ],
    )
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO team VALUES (1), (2)")
        tx.execute("INSERT INTO member VALUES (1, 1), (100, 2)")
    rt.run_action("drop_team", {"id": 1})  # member 1 may lose its team
    assert rows(rt, "select id, team_id from member order by id") == [[1, None], [100, 2]]
    with pytest.raises(ButtressError) as caught:
        rt.run_action("drop_team", {"id": 2})  # member 100 may not
    assert caught.value.code == "action.constraint_violated"
    assert caught.value.details["row"]["id"] == 100
    assert rows(rt, "select id from team") == [[2]]


# ------------------------------------------------------------ differential: the runtime against DuckDB

WRITE = st.one_of(
    st.tuples(
        st.just("add_room"),
        st.integers(1, 4),
        st.integers(-2, 502),
        st.sampled_from([None, "", "a", "abcdefghi"]),
    ),
    st.tuples(st.just("resize"), st.integers(1, 4), st.integers(-2, 502), st.none()),
    st.tuples(
        st.just("upsert_room"), st.integers(1, 4), st.integers(-2, 502), st.sampled_from([None, "", "ok"])
    ),
)


def _old_project(path: Path) -> Runtime:
    """A project whose checks DuckDB enforces (as every project made before ``checked_by``)."""
    from runtime.schema.spec import AppSpec

    rt = Runtime.open(path, audit_reads=False)
    with rt.engine.transaction() as tx:
        tx.execute("UPDATE _buttress.versions SET spec = '{}', hash = ? WHERE number = 0", [AppSpec().hash()])
    rt.close()
    return Runtime.open(path, audit_reads=False)


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(WRITE, min_size=1, max_size=15))
def test_the_runtime_refuses_exactly_what_duckdb_check_constraints_refuse(
    writes: list[tuple[str, int, int, str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        ours = Runtime.open(Path(directory) / "ours.duckdb", audit_reads=False)
        theirs = _old_project(Path(directory) / "theirs.duckdb")
        try:
            deploy(ours, [ROOM, *ACTIONS])
            deploy(theirs, [ROOM, *ACTIONS])
            assert theirs.current[1].checked_by == "duckdb"
            for name, room, seats, label in writes:
                args: dict[str, Any] = {"id": room, "seats": seats}
                if name != "resize":
                    args["label"] = label
                verdicts = {
                    code(lambda rt=rt, name=name, args=args: rt.run_action(name, args))
                    for rt in (ours, theirs)
                }
                assert len(verdicts) == 1, (name, args, verdicts)
                assert verdicts <= {"ok", "action.constraint_violated"}
                state = "select id, seats, label from room order by id"
                assert rows(ours, state) == rows(theirs, state)
        finally:
            ours.close()
            theirs.close()


def test_an_existing_project_moves_its_checks_to_the_runtime_and_back(tmp_path: Path) -> None:
    rt = _old_project(tmp_path / "old.duckdb")
    try:
        deploy(rt, [ROOM, *ACTIONS])
        rt.run_action("add_room", {"id": 1, "seats": 10, "label": "a"})

        def constraints() -> set[str]:
            return constraint_kinds(rt, "room")

        assert "CHECK" in constraints()
        moved = rt.propose([{"op": "set_checked_by", "by": "buttress"}])
        assert [s.strategy for s in moved.steps] == ["rebuild"]  # room holds checks
        rt.dry_run(moved.proposal_id)
        rt.deploy(moved.proposal_id)
        assert "CHECK" not in constraints() and rt.check_drift() == []
        with pytest.raises(ButtressError) as caught:
            rt.run_action("resize", {"id": 1, "seats": 0})
        assert caught.value.details["field"] == "seats"  # the runtime's refusal, not DuckDB's
        rt.rollback()
        assert "CHECK" in constraints() and rt.check_drift() == []
        assert code(lambda: rt.run_action("resize", {"id": 1, "seats": 0})) == "action.constraint_violated"
        assert rows(rt, "select id, seats, label from room") == [[1, 10, "a"]]
    finally:
        rt.close()
