"""The runtime on PostgreSQL, end to end at the facade (engine-specific: PostgreSQL): open, propose,
dry-run, deploy, actions with an invariant, queries, the audit chain, and a second open of the same
database. What is not ported yet (workflows, the control room's views) is listed in docs/NOTES.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime

OPS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "slot",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "capacity", "type": "integer"}],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "booking",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "bigint", "default": {"expr": "autoincrement"}},
                {"name": "slot_id", "type": "integer", "references": "slot.id"},
                {"name": "who", "type": "text"},
            ],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_overbooking",
            "description": "a slot never holds more bookings than its capacity",
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
            "params": [{"name": "slot_id", "type": "integer"}, {"name": "who", "type": "text"}],
            "statements": ["insert into booking (slot_id, who) values ($slot_id, $who) returning id"],
        },
    },
]


def open_runtime(dsn: str, project: Path) -> Runtime:
    from runtime.boundary.secret import ensure_operator_key
    from runtime.store.postgres import PgEngine

    ensure_operator_key()
    return Runtime(PgEngine(dsn, path=str(project / "app.postgres")))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


@pytest.fixture
def rt(pg_dsn: str, project: Path) -> Iterator[Runtime]:
    runtime = open_runtime(pg_dsn, project)
    yield runtime
    runtime.close()


def test_an_application_is_deployed_and_run_on_postgresql(rt: Runtime, pg_dsn: str, project: Path) -> None:
    proposal = rt.propose(OPS)
    report = rt.dry_run(proposal.proposal_id)
    assert report.passed, report.error
    assert rt.deploy(proposal.proposal_id).version == 1
    assert rt.run_action("add_slot", {"id": 1, "capacity": 2}).rows_affected == 1
    first = rt.run_action("book", {"slot_id": 1, "who": "ada"})
    assert first.rows == [[1]]
    rt.run_action("book", {"slot_id": 1, "who": "grace"})
    with pytest.raises(ButtressError) as caught:
        rt.run_action("book", {"slot_id": 1, "who": "alan"})
    assert caught.value.code == "invariant.violated"
    with pytest.raises(ButtressError) as caught:
        rt.run_action("book", {"slot_id": 9, "who": "nobody"})  # the runtime checks references
    assert caught.value.code.startswith("action.")
    result = rt.query("select who from booking where slot_id = $slot order by id", {"slot": 1})
    assert result.rows == [["ada"], ["grace"]]
    assert rt.verify_audit().ok
    rt.close()
    again = open_runtime(pg_dsn, project)  # a second open of the same database
    try:
        assert again.current[0] == 1
        assert again.drift == []
        assert again.query("select count(*) as n from booking").rows == [[2]]
        assert again.verify_audit().ok
    finally:
        again.close()


def test_two_servers_on_one_database_see_each_others_versions_and_keep_one_audit_chain(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Server B, open before server A deploys, writes against A's version at once (read inside its
    transaction) and answers queries on it once the change feed told it; their audit rows form one
    chain; a rollback on B reaches A the same way."""
    import time

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = open_runtime(pg_dsn, tmp_path / "a")
    b = open_runtime(pg_dsn, tmp_path / "b")
    try:
        proposal = a.propose(OPS)
        assert a.dry_run(proposal.proposal_id).passed
        a.deploy(proposal.proposal_id)
        assert b.run_action("add_slot", {"id": 1, "capacity": 5}).version == 1  # no wait: read in its tx
        for i in range(6):
            (a if i % 2 else b).run_action("add_slot", {"id": 10 + i, "capacity": 1})
        deadline = time.monotonic() + 10
        while b.current[0] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.query("select count(*) as n from slot").rows == [[7]]
        assert a.verify_audit().ok and b.verify_audit().ok
        b.rollback()
        while a.current[0] == 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.current[0] == 2 and a.state.spec.entity("slot") is None
    finally:
        a.close()
        b.close()


def test_one_server_runs_the_scheduler_and_another_takes_over_when_it_goes(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Runs and messages are advanced by one server at a time on a shared database."""
    import time

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = open_runtime(pg_dsn, tmp_path / "a")
    b = open_runtime(pg_dsn, tmp_path / "b")
    try:
        a.lead_scheduler()
        deadline = time.monotonic() + 10
        while a.scheduler._thread is None and time.monotonic() < deadline:
            time.sleep(0.05)
        b.lead_scheduler()
        time.sleep(0.5)
        assert a.scheduler._thread is not None and b.scheduler._thread is None
        a.close()  # the leader goes; its session lock goes with its connection
        while b.scheduler._thread is None and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert b.scheduler._thread is not None
    finally:
        a.close()
        b.close()
