"""Adversarial: charge a purchase twice or mark it paid without a charge — start its run again with
another amount under the same run_id, write the purchase with raw SQL, record a payment with no
charge, and route a charge through a connector the operator never declared."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

CHECKOUT = {
    "name": "checkout",
    "params": [{"name": "purchase", "type": "text"}, {"name": "amount", "type": "integer"}],
    "steps": [
        {
            "name": "charge",
            "kind": "effect",
            "connector": "payments",
            "args": {"order": {"from": "input.purchase"}, "amount": {"from": "input.amount"}},
            "retry": {"attempts": 8, "backoff_s": 0.1},
        },
        {
            "name": "record",
            "kind": "action",
            "action": "record_payment",
            "args": {"id": {"from": "input.purchase"}, "charge": {"from": "steps.charge.id"}},
        },
    ],
}
ROGUE = {
    "name": "rogue_checkout",
    "params": [{"name": "purchase", "type": "text"}, {"name": "amount", "type": "integer"}],
    "steps": [
        {
            "name": "charge",
            "kind": "effect",
            "connector": "card_vault",
            "args": {"order": {"from": "input.purchase"}, "amount": {"from": "input.amount"}},
        }
    ],
}


async def run(agent: Agent) -> None:
    await agent.ship([{"op": "add_workflow", "workflow": CHECKOUT}])
    await agent.ok("start_workflow", workflow="checkout", args={"purchase": "p1", "amount": 30}, run_id="p1")
    await agent.follow("p1")
    await agent.attempt(
        "charge p1 again under its run id, with another amount",
        "start_workflow",
        workflow="checkout",
        args={"purchase": "p1", "amount": 3000},
        run_id="p1",
        refused=["workflow.run_conflict"],
    )
    await agent.attempt(
        "mark p2 paid with raw SQL",
        "query",
        sql="update purchase set status = 'paid', charge = 'ch_fake' where id = 'p2'",
        refused=["sql.forbidden"],
    )
    await agent.attempt(
        "record a payment for p3 with no charge",
        "app_record_payment",
        id="p3",
        charge=None,
        refused=["invariant.violated", "action.invalid_args"],
    )
    proposal = await agent.propose([{"op": "add_workflow", "workflow": ROGUE}])
    report = await agent.ok("dry_run", proposal_id=proposal["proposal_id"])
    agent.expect(not report["passed"], "a connector the operator never declared should fail the dry-run")
    await agent.attempt(
        "deploy a workflow charging through an undeclared connector",
        "deploy",
        proposal_id=proposal["proposal_id"],
        refused=["deploy.dry_run_failed", "deploy.not_dry_run"],
    )
