"""The payment story across servers (engine-specific: PostgreSQL): four `buttress serve --http`
processes (two in the default run), each with its own project directory as four hosts would run them,
share one database and advance the same checkouts (reserve, charge through a fake provider that honours idempotency keys,
record). Each is killed with SIGKILL at a named crash point (`BUTTRESS_FAULTS`: inside a step's
transaction, after its commit, before an effect's request, after the provider answered) and started
again after it dies.

What must hold: the runs a killed server held are taken over by another within their lease; every run
ends completed or compensated; no step is recorded twice and no order charged twice; the provider
never sees a key with two different requests; every request is answered before its key is sent again,
except where a kill took the sender in between (so no two servers sent one effect at once); the stock
adds up; the audit chain verifies.

The default run (two servers) kills at each point at least once; ``BUTTRESS_PG_CRASH_KILLS=40`` runs
the long trial with four.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mcp_server.project import init
from runtime.boundary.policy import Policy
from runtime.runtime import Runtime
from runtime.workflows.steps.effect import SLACK_S
from tests.mcp_server.helpers import configure, serve_command, source_env
from tests.mcp_server.test_http import free_port
from tests.store.test_pg_runtime import open_runtime
from tests.workflows.apps import PAYMENT
from tests.workflows.harness import STEP_AND_EFFECT_POINTS, provider

pytestmark = pytest.mark.timeout(900)

LONG = "BUTTRESS_PG_CRASH_KILLS" in os.environ
SERVERS = 4 if LONG else 2
"""Four servers in the long trial; two by default (each start is a process)."""
LEASE_S = 2.0 if LONG else 1.0
"""How long a server holds a run it advances (a shorter lease keeps the default run short)."""
KILLS = int(os.environ.get("BUTTRESS_PG_CRASH_KILLS") or len(STEP_AND_EFFECT_POINTS))
STOCK = 10_000
URL_ENV = "BUTTRESS_TEST_DATABASE_URL"
CONNECTOR_TIMEOUT_S = 2.0
ACTIVE = ("running", "waiting", "compensating")
TAKEOVER_S = LEASE_S + CONNECTOR_TIMEOUT_S + SLACK_S + 3.0
"""The longest a killed server's runs may wait for another: its lease (an effect's request holds it
for the connector's timeout on top) and a few scheduler passes."""


@dataclass
class Server:
    """One worker process (tests/store/pg_run_worker.py) and what it was told to die of."""

    """One `buttress serve --http` process and what it was told to die of."""
    process: subprocess.Popen[bytes]
    fault: str | None
    owner: str
    """``LIKE`` pattern of its name in the runs' leases (``host:pid:random``)."""


@dataclass
class Orphans:
    """The active runs a killed server held, and when it died."""

    owner: str
    point: str | None
    died: float
    runs: set[str]
    taken_after: float | None = None


@dataclass
class Trial:
    dsn: str
    root: Path
    kills: Counter[str] = field(default_factory=Counter)
    orphans: list[Orphans] = field(default_factory=list)
    rotation: int = 0

    def wanting(self) -> bool:
        """More kills to come: fewer than asked for, or a crash point that has not fired yet."""
        return sum(self.kills.values()) < KILLS or not set(STEP_AND_EFFECT_POINTS) <= set(self.kills)

    def start(self, n: int) -> Server:
        fault = None
        if self.wanting():
            unfired = [p for p in STEP_AND_EFFECT_POINTS if p not in self.kills]
            points = unfired or list(STEP_AND_EFFECT_POINTS)
            fault = f"{points[self.rotation % len(points)]}:{1 + self.rotation % 3}"  # a few steps in
            self.rotation += 1
        port = free_port()
        env = {**os.environ, **source_env(), URL_ENV: self.dsn, "BUTTRESS_FAULTS": fault or ""}
        process = subprocess.Popen(
            serve_command(self.root / f"host{n}", "--http", "--port", str(port)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        return Server(process, fault, f"%:{process.pid}:%")


def orders(first: int, count: int) -> list[dict[str, Any]]:
    """Orders of distinct customers; every 7th is declined by the provider (and compensated)."""
    return [
        {
            "order_id": f"o{i:04}",
            "customer": f"c{i:04}",
            "sku": "apple",
            "amount": 900 if i % 7 == 3 else 10 + i,
        }
        for i in range(first, first + count)
    ]


def held_runs(rt: Runtime, owner: str) -> set[str]:
    with rt.engine.snapshot() as reader:
        rows = reader.fetchall(
            "SELECT run_id FROM _buttress.runs WHERE lease_owner LIKE ? AND status IN (?, ?, ?)",
            [owner, *ACTIVE],
        )
    return {str(r[0]) for r in rows}


def still_orphaned(rt: Runtime, orphans: Orphans) -> set[str]:
    return held_runs(rt, orphans.owner) & orphans.runs


def settings(provider_url: str) -> dict[str, Any]:
    """The operator's settings on every host: the provider's connectors, short leases, no approvals."""
    return {
        "connectors": {
            "payments": {"url": f"{provider_url}/charges", "timeout_s": CONNECTOR_TIMEOUT_S},
            "refunds": {"url": f"{provider_url}/refunds", "timeout_s": CONNECTOR_TIMEOUT_S},
        },
        "limits": {"run_lease_s": LEASE_S, "action_timeout_s": 5.0},
        "approvals": {"severity": "none"},
    }


def test_servers_killed_at_every_crash_point_leave_each_step_once_and_each_charge_once(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_dsn)
    with provider(seed=5, fail_rate=0.05, decline_over=500) as fake:
        for n in range(SERVERS):  # four hosts' projects, one database, the same operator's settings
            host = init(tmp_path / f"host{n}", engine="postgres", url_env=URL_ENV).root
            configure(host, **settings(fake.url))
        (tmp_path / "operator").mkdir()
        operator = open_runtime(
            pg_dsn, tmp_path / "operator", policy=Policy.model_validate(settings(fake.url))
        )
        trial = Trial(pg_dsn, tmp_path)
        servers: list[Server] = []
        try:
            proposal = operator.propose(PAYMENT)
            assert operator.dry_run(proposal.proposal_id).passed
            operator.deploy(proposal.proposal_id)
            operator.run_action("restock", {"sku": "apple", "qty": STOCK})
            todo = orders(0, 16)
            for order in todo:
                operator.start_workflow("checkout", order, run_id=order["order_id"])
            servers = [trial.start(n) for n in range(SERVERS)]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                for n, server in enumerate(servers):
                    if server.process.poll() is None:
                        continue
                    died = time.monotonic()
                    killed = server.process.returncode == -signal.SIGKILL  # by its fault, not by an error
                    point = server.fault.partition(":")[0] if server.fault and killed else None
                    trial.kills[point or "unplanned"] += 1
                    trial.orphans.append(
                        Orphans(server.owner, point, died, held_runs(operator, server.owner))
                    )
                    servers[n] = trial.start(n)
                for orphans in trial.orphans:
                    if orphans.taken_after is None and not still_orphaned(operator, orphans):
                        orphans.taken_after = time.monotonic() - orphans.died
                active = operator.list_runs(status="active", limit=1000)
                if not active and trial.wanting():  # more work to crash in
                    more = orders(len(todo), 8)
                    todo += more
                    for order in more:
                        operator.start_workflow("checkout", order, run_id=order["order_id"])
                    continue
                if not active and all(o.taken_after is not None for o in trial.orphans):
                    break
                time.sleep(0.05)
        finally:
            for server in servers:
                server.process.terminate()
            for server in servers:
                try:
                    server.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
        try:
            runs = operator.list_runs(workflow="checkout", limit=10_000)
            purchases = operator.query("select id, customer, charge from purchase").rows
            stock = operator.query("select qty from stock").rows
            with operator.engine.snapshot() as reader:
                steps_done = reader.fetchall(
                    "SELECT arguments FROM _buttress.audit WHERE operation = 'workflow_step' AND outcome = 'ok'"
                )
                exchanges = reader.fetchall(
                    "SELECT operation, arguments, time FROM _buttress.audit "
                    "WHERE operation IN ('effect_send', 'effect_answer') ORDER BY seq"
                )
            verified = operator.verify_audit()
        finally:
            operator.close()
        state = fake.state()

    status = Counter(r.status for r in runs)
    assert set(status) <= {"completed", "compensated"}, status  # none stuck, none failed half-way
    assert len(runs) == len(todo)
    assert sum(trial.kills.values()) >= KILLS and trial.kills["unplanned"] == 0, trial.kills
    assert set(trial.kills) >= set(STEP_AND_EFFECT_POINTS), trial.kills  # each way of dying
    late = [(o.point, o.taken_after, len(o.runs)) for o in trial.orphans if (o.taken_after or 0) > TAKEOVER_S]
    assert not late, late  # a killed server's runs resumed within the lease

    recorded: Counter[tuple[str, str]] = Counter()
    for (arguments,) in steps_done:
        item = json.loads(arguments) if isinstance(arguments, str) else arguments
        recorded[(item["run_id"], item["step"])] += 1
    assert max(recorded.values()) == 1, [k for k, v in recorded.items() if v > 1]  # no step recorded twice

    refunded = {r["charge"] for r in state["refunds"]}
    assert len(refunded) == len(state["refunds"])  # no charge refunded twice
    kept = [c for c in state["charges"] if c["id"] not in refunded]
    paid = {row[0]: row[2] for row in purchases}
    assert sorted(c["order"] for c in kept) == sorted(paid), "charges kept must equal paid orders"
    per_order = Counter(c["order"] for c in state["charges"])
    assert max(per_order.values()) == 1  # nobody charged twice
    assert state["reused"] == 0  # one request per key, whoever sent it
    # no two servers sent one effect at once: a request not answered (its sender was killed) is sent
    # again only after it ended (a request lasts at most the connector's timeout)
    last_send: dict[str, datetime.datetime | None] = {}
    lost, overlapping = 0, []
    for operation, arguments, at in exchanges:
        key = (json.loads(arguments) if isinstance(arguments, str) else arguments)["effect_id"]
        when = datetime.datetime.fromisoformat(at)
        if operation == "effect_answer":
            last_send[key] = None
            continue
        previous = last_send.get(key)
        if previous is not None:
            lost += 1
            if (when - previous).total_seconds() < CONNECTOR_TIMEOUT_S:
                overlapping.append((key, previous, when))
        last_send[key] = when
    assert not overlapping, overlapping
    assert lost <= SERVERS * sum(trial.kills.values())  # a kill loses the requests its server had in flight
    completed = {r.run_id for r in runs if r.status == "completed"}
    assert completed == set(paid)
    assert stock == [[STOCK - len(completed)]]
    assert verified.ok, verified
    taken = sorted(round(o.taken_after or 0, 2) for o in trial.orphans if o.runs)
    print(
        f"kills: {dict(sorted(trial.kills.items()))}; runs: {dict(status)}; takeovers (s): {taken}; provider: "
        f"{state['requests']} requests, {state['replays']} replays, {state['failed']} 503s; "
        f"{lost} requests lost to kills, none resent while it could still be in flight"
    )
