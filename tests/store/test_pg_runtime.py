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
            try:
                results.append(rt.run_action("book", {"slot_id": 1, "who": "ada"}, idempotency_key="k-1"))
            except ButtressError as error:  # reported by the assertion below, with its details
                results.append(error.to_dict())

        threads = [threading.Thread(target=book, args=(rt,)) for rt in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(not isinstance(r, dict) for r in results), results
        assert sorted(r.replayed for r in results) == [False, True, True, True], results
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
        per = 25

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


MONEY: list[dict[str, Any]] = [
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
            "description": "balances stay >= 0",
            "sql": "select id from account where balance < 0",
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "open_account",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "balance", "type": "bigint"}],
            "statements": ["insert into account (id, balance) values ($id, $balance)"],
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


def test_money_is_conserved_and_never_overdrawn_across_four_servers(pg_dsn: str, tmp_path: Path) -> None:
    """Transfers from four servers at once, many of which would overdraw: each commits whole or not at
    all (write skew included), so the total never changes and no balance goes below zero."""
    import random
    import threading

    runtimes = []
    for n in range(4):
        (tmp_path / f"s{n}").mkdir()
        runtimes.append(open_runtime(pg_dsn, tmp_path / f"s{n}"))
    try:
        proposal = runtimes[0].propose(MONEY)
        assert runtimes[0].dry_run(proposal.proposal_id).passed
        runtimes[0].deploy(proposal.proposal_id)
        for account in range(6):
            runtimes[1].run_action("open_account", {"id": account, "balance": 100})
        outcomes: list[str] = []

        def move(n: int, rt: Runtime) -> None:
            rng = random.Random(n)
            for _ in range(30):
                source, target = rng.sample(range(6), 2)
                try:
                    rt.run_action(
                        "transfer", {"source": source, "target": target, "amount": rng.randint(1, 80)}
                    )
                    outcomes.append("ok")
                except ButtressError as error:
                    outcomes.append(error.code)

        threads = [threading.Thread(target=move, args=(n, rt)) for n, rt in enumerate(runtimes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        balances = runtimes[2].query("select id, balance from account order by id").rows
        assert sum(b for _, b in balances) == 600
        assert min(b for _, b in balances) >= 0
        assert set(outcomes) == {"ok", "invariant.violated"}, outcomes  # both happened
    finally:
        for rt in runtimes:
            rt.close()


def test_mutations_racing_a_deploy_on_another_server_commit_no_violation(pg_dsn: str, tmp_path: Path) -> None:
    """Three servers book while a fourth deploys the invariant those bookings go on to break: none that
    commits after the deploy violates it (each writer reads the version inside its transaction)."""
    import threading
    import time

    ops = [op for op in OPS if op["op"] != "add_invariant"]
    rule = next(op for op in OPS if op["op"] == "add_invariant")
    runtimes = []
    for n in range(4):
        (tmp_path / f"s{n}").mkdir()
        runtimes.append(open_runtime(pg_dsn, tmp_path / f"s{n}"))
    try:
        proposal = runtimes[0].propose(ops)
        assert runtimes[0].dry_run(proposal.proposal_id).passed
        runtimes[0].deploy(proposal.proposal_id)
        for slot in range(5):
            runtimes[0].run_action("add_slot", {"id": slot, "capacity": 60})
        for rt in runtimes[1:]:  # the change feed is down on the bookers: what holds is the version
            rt._watch.stop()  # each of their transactions reads
        stop = threading.Event()
        refused: list[str] = []

        def book(n: int, rt: Runtime) -> None:
            k = 0
            while not stop.is_set():
                try:
                    rt.run_action("book", {"slot_id": k % 5, "who": f"s{n}-{k}"})
                except ButtressError as error:
                    refused.append(error.code)
                k += 1

        threads = [threading.Thread(target=book, args=(n, rt)) for n, rt in enumerate(runtimes[1:])]
        for thread in threads:
            thread.start()
        time.sleep(0.1)  # bookings are under way, far from the capacity
        invariant = runtimes[0].propose([rule])
        report = runtimes[0].dry_run(invariant.proposal_id)
        assert report.passed, report.error
        assert runtimes[0].deploy(invariant.proposal_id).version == 2
        deadline = time.monotonic() + 30
        while "invariant.violated" not in refused and time.monotonic() < deadline:
            time.sleep(0.05)  # until the slots are full and the bookers are being refused
        stop.set()
        for thread in threads:
            thread.join()
        over = (
            runtimes[0]
            .query(
                "select b.slot_id, count(*) as n from booking b join slot s on s.id = b.slot_id "
                "group by b.slot_id, s.capacity having count(*) > s.capacity"
            )
            .rows
        )
        assert over == [], over
        assert "invariant.violated" in refused
    finally:
        for rt in runtimes:
            rt.close()
