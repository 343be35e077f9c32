"""The oracle: a checkout workflow (the charge is an effect step, sent with an idempotency key the
runtime derives from the run and the step), one run per purchase with the purchase id as run_id,
then follow the runs. A start whose answer is lost is sent again with the same run_id (the agent
library does that by itself: run_id is the call's idempotency key)."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

CHECKOUT = {
    "name": "checkout",
    "description": "Charge a purchase through the payments connector, then record the charge.",
    "params": [{"name": "purchase", "type": "text"}, {"name": "amount", "type": "integer"}],
    "steps": [
        {
            "name": "charge",
            "kind": "effect",
            "connector": "payments",
            "args": {"order": {"from": "input.purchase"}, "amount": {"from": "input.amount"}},
            "retry": {"attempts": 8, "backoff_s": 0.1, "factor": 1.5},
        },
        {
            "name": "record",
            "kind": "action",
            "action": "record_payment",
            "args": {"id": {"from": "input.purchase"}, "charge": {"from": "steps.charge.id"}},
        },
    ],
}


async def run(agent: Agent) -> None:
    await agent.ship([{"op": "add_workflow", "workflow": CHECKOUT}], note="checkout workflow")
    purchases = (await agent.ok("app_open_purchases"))["rows"]
    agent.expect(len(purchases) == 3, f"three open purchases expected: {purchases}")
    for purchase_id, _customer, amount in purchases:
        await agent.ok(
            "start_workflow",
            workflow="checkout",
            args={"purchase": purchase_id, "amount": amount},
            run_id=purchase_id,
        )
    for purchase_id, _customer, _amount in purchases:
        finished = await agent.follow(purchase_id)
        agent.expect(finished["status"] == "completed", f"run {purchase_id}: {finished}")
