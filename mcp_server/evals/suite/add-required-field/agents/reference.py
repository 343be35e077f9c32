"""The oracle: the field with a default (existing rows get it), and the action replaced in the
same proposal; then the new customer."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

ADD_CUSTOMER = {
    "name": "add_customer",
    "kind": "mutation",
    "description": "Register a customer.",
    "params": [
        {"name": "id", "type": "integer"},
        {"name": "name", "type": "text"},
        {"name": "email", "type": "text"},
        {"name": "tier", "type": "text"},
    ],
    "statements": ["insert into customer (id, name, email, tier) values ($id, $name, $email, $tier)"],
}


async def run(agent: Agent) -> None:
    app = await agent.ok("describe_app")
    agent.expect(any(e["name"] == "customer" for e in app["entities"]), "no customer entity")
    await agent.ship(
        [
            {
                "op": "add_field",
                "entity": "customer",
                "field": {"name": "tier", "type": "text", "default": "standard"},
            },
            {"op": "replace_action", "action": ADD_CUSTOMER},
        ],
        note="customer tiers",
    )
    await agent.ok(
        "app_add_customer",
        id=6,
        name="Linus",
        email="linus@example.com",
        tier="gold",
        idempotency_key="customer-6",
    )
