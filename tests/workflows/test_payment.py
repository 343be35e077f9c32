"""The payment story: reserve stock, charge through a connector to a payment provider that honours
idempotency keys, record the purchase — with the project's owner SIGKILLed over and over (at every
step boundary, inside effects, and at a random moment) while an agent starts checkouts over MCP stdio;
then the agent's own serve is SIGKILLed too (its editor crashed) and a new session finds the work done.

What must hold at the end: the charges the provider kept (not refunded) are exactly the recorded
purchases; no order and no customer was charged twice; every run ended completed or compensated
(stock released, charge refunded); the stock adds up; the audit chain verifies.

The default run fires each named crash point once and kills once at random;
``BUTTRESS_STORY_KILLS=200`` runs the long trial (200 kills, a seeded mix).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.project import Project
from tests.mcp_server.helpers import call, ship
from tests.workflows.apps import PAYMENT
from tests.workflows.harness import (
    STEP_AND_EFFECT_POINTS,
    Life,
    Owners,
    Trials,
    agent,
    attempt,
    owner_pid,
    project,
    provider,
    until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1800)]

STOCK = 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def orders(count: int) -> list[dict[str, Any]]:
    """Orders of distinct customers; every 7th is declined by the provider (over 500)."""
    return [
        {
            "order_id": f"o{i:03}",
            "customer": f"c{i:03}",
            "sku": "apple",
            "amount": 900 if i % 7 == 3 else 10 + i,
        }
        for i in range(count)
    ]


async def test_payments_survive_owner_kills_at_every_step_inside_effects_and_at_random(
    tmp_path: Path,
) -> None:
    trials = Trials(seed=11, points=STEP_AND_EFFECT_POINTS)
    todo = orders(max(20, trials.target or 0))  # one new order a life: every life has work to crash in
    started: set[str] = set()
    with provider(seed=7, fail_rate=0.05, drop_rate=0.05, decline_over=500) as fake:
        root = project(tmp_path / "shop", fake.url)
        owners = Owners(root)
        try:
            await owners.start()
            async with agent(root, "first") as first:
                await ship(first.client, PAYMENT)
                await call(first.client, "app_restock", sku="apple", qty=STOCK)
                # this order's record step will hit the key: it is charged, then refunded and released
                await call(
                    first.client, "app_record_purchase", id="o001", customer="x", sku="apple", charge="manual"
                )
                while not trials.done():
                    faults, patience = trials.next_faults()
                    current = await owners.start(faults)
                    with anyio.move_on_after(patience):
                        for order in [o for o in todo if o["order_id"] not in started][:1]:
                            done = await attempt(
                                lambda order=order: call(
                                    first.client,
                                    "start_workflow",
                                    workflow="checkout",
                                    args=order,
                                    run_id=order["order_id"],
                                )
                            )
                            if done is not None:
                                started.add(order["order_id"])

                        async def dead(current: Life = current) -> bool:
                            return not current.alive()

                        await until(dead, patience)
                    current.kill()
                    trials.count(faults, fired=current.fired)
                final = await owners.start()  # no faults: everything settles
                first.kill()  # the agent's editor crashes: the owner carries on without it
            async with agent(root, "second") as second:
                for order in todo:  # starting again is idempotent: the same run
                    run = await call(
                        second.client,
                        "start_workflow",
                        workflow="checkout",
                        args=order,
                        run_id=order["order_id"],
                    )
                    assert run["run_id"] == order["order_id"]

                async def settled() -> bool:
                    active = await call(second.client, "list_runs", status="active", limit=1000)
                    return not active["runs"]

                assert await until(settled, 120), await call(second.client, "list_runs", status="active")
                runs = (await call(second.client, "list_runs", limit=1000))["runs"]
                purchases = await call(
                    second.client, "query", sql="select id, customer, charge from purchase"
                )
                stock = await call(second.client, "query", sql="select qty from stock")
            assert final.alive() and owner_pid(root) == final.pid  # the same owner throughout
        finally:
            owners.stop()
        state = fake.state()
    runtime = Project.load(root).open()  # the owner is gone: read the file itself
    try:
        verified = runtime.verify_audit()
    finally:
        runtime.close()

    assert trials.done()
    status = Counter(r["status"] for r in runs)
    assert set(status) <= {"completed", "compensated"}, status  # none stuck, none failed half-way
    assert len(runs) == len(todo)

    refunded = {r["charge"] for r in state["refunds"]}
    assert len(refunded) == len(state["refunds"])  # no charge refunded twice
    kept = [c for c in state["charges"] if c["id"] not in refunded]
    paid = {row[0]: row[2] for row in purchases["rows"] if row[2] != "manual"}
    assert sorted(c["order"] for c in kept) == sorted(paid), "charges kept must equal paid orders"
    assert {c["id"] for c in kept} == set(paid.values())
    per_order = Counter(c["order"] for c in state["charges"])
    per_customer = Counter(c["customer"] for c in kept)
    assert max(per_order.values()) == 1 and max(per_customer.values()) == 1  # nobody charged twice
    completed = {r["run_id"] for r in runs if r["status"] == "completed"}
    assert completed == set(paid)
    declined = {o["order_id"] for o in todo if o["amount"] > 500}
    assert declined <= {r["run_id"] for r in runs if r["status"] == "compensated"}
    assert "o001" not in completed and "o001" in {c["order"] for c in state["charges"]}  # charged, refunded
    assert stock["rows"] == [[STOCK - len(completed)]]  # every compensated run released its item
    assert len(purchases["rows"]) == len(paid) + 1  # and the one recorded by hand
    assert verified.ok, verified
    assert set(trials.by_point) == {*STEP_AND_EFFECT_POINTS, "random"}, trials.by_point  # each way of dying
    print(
        f"kills: {trials.kills} {dict(sorted(trials.by_point.items()))}; runs: {dict(status)}; provider: "
        f"{state['requests']} requests, {state['replays']} replays, {state['dropped']} dropped answers, "
        f"{state['failed']} 503s"
    )
