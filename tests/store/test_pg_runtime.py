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


def test_one_idempotency_key_sent_to_four_servers_at_once_gives_one_effect_and_three_replays(
    pg_dsn: str, tmp_path: Path
) -> None:
    import threading

    runtimes = []
    for n in range(4):
        (tmp_path / f"s{n}").mkdir()
        runtimes.append(open_runtime(pg_dsn, tmp_path / f"s{n}"))
    try:
        proposal = runtimes[0].propose(OPS)
        assert runtimes[0].dry_run(proposal.proposal_id).passed
        runtimes[0].deploy(proposal.proposal_id)
        runtimes[1].run_action("add_slot", {"id": 1, "capacity": 10})
        start = threading.Barrier(4)
        results: list[Any] = []

        def book(rt: Runtime) -> None:
            start.wait()
            results.append(rt.run_action("book", {"slot_id": 1, "who": "ada"}, idempotency_key="k-1"))

        threads = [threading.Thread(target=book, args=(rt,)) for rt in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r.replayed for r in results) == [False, True, True, True]
        assert len({str(r.rows) for r in results}) == 1  # the replays answer what the first did
        assert runtimes[2].query("select count(*) as n from booking").rows == [[1]]
    finally:
        for rt in runtimes:
            rt.close()


def test_four_producers_messages_are_each_delivered_once_and_none_is_skipped(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Four servers publish at once; the server that leads the scheduler delivers every message to a
    subscribed action exactly once (a sequence number another transaction took earlier is never
    committed after a later one: the lane orders the commits)."""
    import threading
    import time

    ops: list[dict[str, Any]] = [
        {
            "op": "add_entity",
            "entity": {"name": "seen", "primary_key": ["tag"], "fields": [{"name": "tag", "type": "text"}]},
        },
        {
            "op": "add_action",
            "action": {
                "name": "note",
                "kind": "mutation",
                "params": [{"name": "tag", "type": "text"}],
                "statements": ["insert into seen (tag) values ($tag)"],  # a second delivery would collide
            },
        },
        {"op": "add_topic", "topic": {"name": "tags", "payload": [{"name": "tag", "type": "text"}]}},
        {
            "op": "add_subscription",
            "subscription": {
                "name": "noter",
                "topic": "tags",
                "action": "note",
                "args": {"tag": {"from": "message.tag"}},
            },
        },
    ]
    runtimes = []
    for n in range(4):
        (tmp_path / f"s{n}").mkdir()
        runtimes.append(open_runtime(pg_dsn, tmp_path / f"s{n}"))
    try:
        proposal = runtimes[0].propose(ops)
        assert runtimes[0].dry_run(proposal.proposal_id).passed
        runtimes[0].deploy(proposal.proposal_id)
        for rt in runtimes:
            rt.lead_scheduler()  # one of them leads
        start = threading.Barrier(4)
        per = 40

        def produce(n: int, rt: Runtime) -> None:
            start.wait()
            for k in range(per):
                rt.publish_message("tags", {"tag": f"p{n}-{k}"})

        threads = [threading.Thread(target=produce, args=(n, rt)) for n, rt in enumerate(runtimes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = runtimes[3].query("select count(*) as n from seen").rows[0][0]
            if done >= 4 * per and not runtimes[3].list_messages(topic="tags", undelivered=True):
                break
            time.sleep(0.2)
        assert runtimes[3].query("select count(*) as n from seen").rows == [[4 * per]]
        with runtimes[3].engine.snapshot() as reader:
            assert reader.scalar("SELECT count(*) FROM _buttress.dead_letters") == 0
        assert runtimes[0].verify_audit().ok
    finally:
        for rt in runtimes:
            rt.close()
