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
from tests.conftest import deploy_ops
from tests.runtime.test_actions import ACCOUNTS

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


def servers(dsn: str, root: Path, count: int = 4) -> list[Runtime]:
    """``count`` servers of one database, each with a project directory of its own (``root/s0``...)."""
    runtimes = []
    for n in range(count):
        (root / f"s{n}").mkdir()
        runtimes.append(open_runtime(dsn, root / f"s{n}"))
    return runtimes


def open_runtime(dsn: str, project: Path, **options: Any) -> Runtime:
    from runtime.boundary.secret import ensure_operator_key
    from runtime.store.postgres import PgEngine

    ensure_operator_key()
    return Runtime(PgEngine(dsn, path=str(project / "app.postgres")), **options)


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
        deploy_ops(a, OPS)
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


LEASED: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "mark",
            "primary_key": ["run", "step"],
            "fields": [{"name": "run", "type": "text"}, {"name": "step", "type": "text"}],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "note",
            "kind": "mutation",
            "params": [{"name": "run", "type": "text"}, {"name": "step", "type": "text"}],
            "statements": ["insert into mark (run, step) values ($run, $step)"],  # twice would collide
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "two_marks",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {
                    "name": "first",
                    "kind": "action",
                    "action": "note",
                    "args": {"run": {"from": "input.id"}, "step": "first"},
                },
                {"name": "hear", "kind": "wait", "signal": "go", "timeout_s": 600},
                {
                    "name": "second",
                    "kind": "action",
                    "action": "note",
                    "args": {"run": {"from": "input.id"}, "step": "second"},
                },
            ],
        },
    },
]


def leases_of(rt: Runtime) -> dict[str, tuple[str | None, int]]:
    with rt.engine.snapshot() as reader:
        rows = reader.fetchall("SELECT run_id, lease_owner, lease_epoch FROM _buttress.runs")
    return {str(r[0]): (r[1], int(r[2])) for r in rows}


def test_a_run_is_advanced_by_the_server_holding_its_lease_and_taken_over_when_that_lease_runs_out(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Every server runs the scheduler. Server a advances ten runs to their wait and holds their leases;
    it goes (closed, so its leases are no longer renewed); b takes the runs over once the leases run out,
    in the next epoch, and finishes them, each step once."""
    import time

    from runtime.boundary.policy import Limits

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = open_runtime(pg_dsn, tmp_path / "a", limits=Limits(run_lease_s=2.0))
    b = open_runtime(pg_dsn, tmp_path / "b", limits=Limits(run_lease_s=2.0))
    try:
        deploy_ops(a, LEASED)
        for n in range(10):
            a.start_workflow("two_marks", {"id": f"r{n}"}, run_id=f"r{n}")
        a.scheduler.drain()
        held = leases_of(a)
        assert {owner for owner, _ in held.values()} == {a.scheduler.runner.lease_owner}
        assert {epoch for _, epoch in held.values()} == {1}
        a.close()  # a goes: nobody renews its leases
        for n in range(10):
            b.signal_run(f"r{n}", "go", {})
        signalled = time.monotonic()
        b.scheduler.drain()  # the runs are due, but a's leases have not run out yet
        assert {r.status for r in b.list_runs(workflow="two_marks", status=None, limit=100)} == {"running"}
        b.start_scheduler()
        deadline = signalled + 30
        while time.monotonic() < deadline:
            if {r.status for r in b.list_runs(workflow="two_marks", status=None, limit=100)} == {"completed"}:
                break
            time.sleep(0.05)
        taken = time.monotonic() - signalled
        assert {r.status for r in b.list_runs(workflow="two_marks", status=None, limit=100)} == {"completed"}
        assert taken < 2.0 + 3.0  # within the lease, and a pass or two
        after = leases_of(b)
        assert {owner for owner, _ in after.values()} == {b.scheduler.runner.lease_owner}
        assert {epoch for _, epoch in after.values()} == {2}
        assert b.query("select count(*) as n from mark").rows == [[20]]
        assert b.verify_audit().ok
    finally:
        a.close()
        b.close()


def test_a_step_of_a_server_whose_lease_was_taken_over_commits_nothing(pg_dsn: str, tmp_path: Path) -> None:
    """The fence compares the lease's epoch: a server that read a run before another took its lease
    over can neither move the run nor renew the lease for an effect's request."""
    from runtime.errors import Code
    from runtime.workflows import leases, store

    rt = open_runtime(pg_dsn, tmp_path)
    try:
        deploy_ops(rt, LEASED)
        rt.start_workflow("two_marks", {"id": "r"}, run_id="r")
        with rt.engine.transaction() as tx:
            assert leases.claim(tx, ["r"], owner="old", seconds=0.0) == ["r"]
            stale = store.run_row(tx, "r")
        assert stale is not None and stale.lease_epoch == 1
        with rt.engine.transaction() as tx:  # old's lease ran out at once: new takes the run over
            assert leases.claim(tx, ["r"], owner="new", seconds=60.0) == ["r"]
        with rt.engine.transaction() as tx:
            assert leases.claim(tx, ["r"], owner="old", seconds=60.0) == []  # new holds it now
            assert leases.hold(tx, stale, owner="old", seconds=60.0, request_s=1.0) is None
        with pytest.raises(ButtressError) as caught, rt.engine.transaction() as tx:
            store.advance(tx, stale, step=1, status=store.RunStatus.RUNNING)
        assert caught.value.code == Code.ENGINE_CONFLICT
        assert rt.get_run("r").step == "first" and not rt.get_run("r").steps
    finally:
        rt.close()


def test_one_idempotency_key_sent_to_four_servers_at_once_gives_one_effect_and_three_replays(
    pg_dsn: str, tmp_path: Path
) -> None:
    import threading

    runtimes = servers(pg_dsn, tmp_path)
    try:
        deploy_ops(runtimes[0], OPS)
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


NOTED: list[dict[str, Any]] = [
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
"""A topic of tags and a subscribed action that records each (a second delivery would collide)."""


def test_four_producers_messages_are_each_delivered_once_and_none_is_skipped(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Four servers publish at once; their schedulers deliver every message to a subscribed action
    exactly once (a sequence number another transaction took earlier is never
    committed after a later one: the lane orders the commits)."""
    import threading
    import time

    ops = NOTED
    runtimes = servers(pg_dsn, tmp_path)
    try:
        deploy_ops(runtimes[0], ops)
        for rt in runtimes:
            rt.start_scheduler()  # every one of them delivers; each message once
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
    *ACCOUNTS,
    {
        "op": "add_action",
        "action": {
            "name": "open_account",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "balance", "type": "bigint"}],
            "statements": ["insert into account (id, balance) values ($id, $balance)"],
        },
    },
]
"""The accounts of the runtime's transfer test, and an action that opens one."""


def test_money_is_conserved_and_never_overdrawn_across_four_servers(pg_dsn: str, tmp_path: Path) -> None:
    """Transfers from four servers at once, many of which would overdraw: each commits whole or not at
    all (write skew included), so the total never changes and no balance goes below zero."""
    import random
    import threading

    runtimes = servers(pg_dsn, tmp_path)
    try:
        deploy_ops(runtimes[0], MONEY)
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
    runtimes = servers(pg_dsn, tmp_path)
    try:
        deploy_ops(runtimes[0], ops)
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


MEMO: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "memo",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "note", "type": "text"}],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "add_memo",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "note", "type": "text"}],
            "statements": ["insert into memo (id, note) values ($id, $note)"],
        },
    },
]


def test_an_approval_asked_on_one_server_is_given_on_another_and_honoured_on_a_third(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Requests and the operator's signed decisions are filed in the shared database: an agent's
    hazardous deploy refused on server a is approved on b (the operator's host) and goes through once
    on c; a refusal given on c answers the next plan's retry on a with the operator's reason."""
    from runtime.boundary.policy import Policy

    policy = Policy.model_validate({"approvals": {"severity": "high"}})
    servers = []
    for name in "abc":
        (tmp_path / name).mkdir()
        servers.append(open_runtime(pg_dsn, tmp_path / name, policy=policy))
    a, b, c = servers
    try:
        deploy_ops(a, MEMO)
        a.run_action("add_memo", {"id": 1, "note": "keep me"})
        drop = a.propose(
            [
                {"op": "drop_action", "name": "add_memo"},
                {"op": "drop_field", "entity": "memo", "field": "note"},
            ],
            actor="local",
        )
        assert a.dry_run(drop.proposal_id, actor="local").passed
        with pytest.raises(ButtressError) as caught:
            a.deploy(drop.proposal_id, actor="local")
        assert caught.value.code == "deploy.needs_approval"
        request = caught.value.details["approval_request"]
        assert [r.status for r in b.approval_requests() if r.request_id == request] == ["pending"]
        b.approve_request(request)
        assert c.deploy(drop.proposal_id, actor="local").version == 2  # c had not derived its catalog yet
        a.catch_up()
        assert a.current[0] == 2  # committed, whichever server deployed it
        assert [r.status for r in a.approval_requests() if r.request_id == request] == ["used"]

        again = c.propose([{"op": "drop_entity", "entity": "memo"}], actor="local")
        assert c.dry_run(again.proposal_id, actor="local").passed
        with pytest.raises(ButtressError) as caught:
            c.deploy(again.proposal_id, actor="local")
        c.refuse_request(caught.value.details["approval_request"], reason="memos stay")
        with pytest.raises(ButtressError) as caught:
            a.deploy(again.proposal_id, actor="local")
        assert caught.value.code == "policy.denied" and "memos stay" in caught.value.message
        assert not list((tmp_path / "a").glob(".buttress/*/*.json"))  # nothing filed beside a server
    finally:
        for rt in servers:
            rt.close()


def test_the_audit_anchor_is_shared_so_a_new_server_trusts_it_and_a_cut_log_is_caught(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The anchor is a signed row of the shared database: a server opening the database for the first
    time checks the chain against it (nothing is missing), and a log whose newest rows were deleted
    by someone without the operator secret fails verification on any server."""
    for name in "abc":
        (tmp_path / name).mkdir()
    a = open_runtime(pg_dsn, tmp_path / "a")
    deploy_ops(a, MEMO)
    for n in range(3):
        a.run_action("add_memo", {"id": n, "note": "x"})
    a.close()  # the anchor follows the head
    b = open_runtime(pg_dsn, tmp_path / "b")
    try:
        assert b.audit.problem is None
        assert b.verify_audit().ok
        with b.engine.transaction() as tx:  # the newest rows go, with the database's own access
            tx.execute("DELETE FROM _buttress.audit WHERE seq > (SELECT max(seq) - 2 FROM _buttress.audit)")
    finally:
        b.close()
    c = open_runtime(pg_dsn, tmp_path / "c")
    try:
        verified = c.verify_audit()
        assert not verified.ok and "anchor" in str(verified.problem)
        assert c.audit.problem is not None  # said at open, and the anchor is left as evidence
    finally:
        c.close()


def test_a_change_that_locks_a_table_says_so_and_waits_for_a_reader_only_as_long_as_allowed(
    pg_dsn: str, tmp_path: Path
) -> None:
    """On PostgreSQL an ALTER holds its table's lock until the deploy commits: the plan names that as a
    hazard, and a deploy queued behind a long read on another server gives up after lane_wait_s
    (engine.busy, nothing changed) instead of making every later reader wait behind it."""
    import time

    import psycopg

    from runtime.boundary.policy import Limits

    rt = open_runtime(pg_dsn, tmp_path, limits=Limits(lane_wait_s=0.5))
    try:
        proposal = rt.propose(MEMO)
        assert rt.dry_run(proposal.proposal_id).passed
        rt.deploy(proposal.proposal_id)
        assert not [h for s in proposal.steps for h in s.hazards if h.code == "lock.table_exclusive"]  # new
        change = rt.propose(
            [{"op": "add_field", "entity": "memo", "field": {"name": "pinned", "type": "boolean"}}]
        )
        locks = [h for s in change.steps for h in s.hazards if h.code == "lock.table_exclusive"]
        assert [h.objects for h in locks] == [("memo",)] and locks[0].severity == "low"
        assert rt.dry_run(change.proposal_id).passed
        with psycopg.connect(pg_dsn) as reader:  # another server's long read holds the table
            reader.execute("SELECT count(*) FROM memo").fetchone()
            started = time.monotonic()
            with pytest.raises(ButtressError) as caught:
                rt.deploy(change.proposal_id)
            waited = time.monotonic() - started
        assert caught.value.code == "engine.busy" and waited < 5, waited
        assert rt.current[0] == 1  # nothing changed
        assert rt.deploy(change.proposal_id).version == 2  # the reader is gone
    finally:
        rt.close()


def test_an_agent_query_reads_as_its_role_and_may_call_the_try_casts_but_not_reach_the_system_schema(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The try-cast helpers live in a schema of their own that the agent role may use; the system
    schema stays out of its reach."""
    rt = Runtime.open_postgres(pg_dsn, tmp_path / "app.postgres")
    try:
        assert rt.agent_role
        deploy_ops(rt, MEMO)
        rt.run_action("add_memo", {"id": 1, "note": "12"})
        rt.run_action("add_memo", {"id": 2, "note": "twelve"})
        answer = rt.query("select id, try_cast(note as integer) as n from memo order by id", actor="local")
        assert answer.rows == [[1, 12], [2, None]]
        with rt.engine.snapshot(agent=True) as reader, pytest.raises(ButtressError) as caught:
            reader.fetchall("SELECT count(*) FROM _buttress.audit")
        assert caught.value.code == "sql.forbidden"
    finally:
        rt.close()


def test_an_actions_statements_write_as_the_agent_role_and_the_runtime_writes_its_rows_as_the_owner(
    pg_dsn: str, tmp_path: Path
) -> None:
    """An action's statements take the agent role for their stretch of the writer transaction: what
    the role may not do, the database refuses (here a write the operator revoked), whatever the guard
    let through; the audit rows and checks after them are the owner's again."""
    rt = Runtime.open_postgres(pg_dsn, tmp_path / "app.postgres")
    try:
        deploy_ops(rt, MEMO)
        rt.run_action("add_memo", {"id": 1, "note": "as the role"})
        with rt.engine.transaction() as tx:
            tx.execute("REVOKE INSERT ON memo FROM buttress_agent")
        with pytest.raises(ButtressError) as caught:
            rt.run_action("add_memo", {"id": 2, "note": "refused by the database"})
        assert caught.value.code == "sql.forbidden"
        with rt.engine.transaction() as tx:
            tx.execute("GRANT INSERT ON memo TO buttress_agent")
        rt.run_action("add_memo", {"id": 3, "note": "granted again"})
        assert rt.query("select id from memo order by id").rows == [[1], [3]]
        assert rt.verify_audit().ok
    finally:
        rt.close()
