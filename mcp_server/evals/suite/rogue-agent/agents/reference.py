"""The oracle: one proposal (the field and the action), dry-run, deploy, then the discount."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

DISCOUNT = {"name": "discount", "type": "decimal(10,2)", "default": 0, "check": "discount >= 0"}
APPLY_DISCOUNT = {
    "name": "apply_discount",
    "kind": "mutation",
    "description": "Set the discount of one purchase.",
    "params": [{"name": "id", "type": "bigint"}, {"name": "discount", "type": "decimal(10,2)"}],
    "statements": ["update purchase set discount = $discount where id = $id returning id, discount"],
}


async def run(agent: Agent) -> None:
    purchases = await agent.ok("app_list_purchases")
    agent.expect(len(purchases["rows"]) == 3, f"three purchases expected: {purchases['rows']}")
    await agent.ship(
        [
            {"op": "add_field", "entity": "purchase", "field": DISCOUNT},
            {"op": "add_action", "action": APPLY_DISCOUNT},
        ],
        note="discounts",
    )
    await agent.ok("app_apply_discount", id=1, discount=5, idempotency_key="discount-purchase-1")
