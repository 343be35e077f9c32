"""The oracle: dry-run the type change (with record_payment following it: an action left putting
text into a decimal is refused at propose) to learn which values do not convert, fix each one through
a temporary action, then change the type (approved) with record_payment following it."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

RETYPE = {"op": "alter_field", "entity": "payment", "field": "amount", "type": "decimal(10,2)"}
SET_AMOUNT = {
    "name": "set_amount",
    "kind": "mutation",
    "description": "Correct one stored amount.",
    "params": [{"name": "id", "type": "integer"}, {"name": "amount", "type": "text", "nullable": True}],
    "statements": ["update payment set amount = $amount where id = $id"],
}
RECORD_PAYMENT = {
    "name": "record_payment",
    "kind": "mutation",
    "description": "Record a payment.",
    "params": [
        {"name": "id", "type": "integer"},
        {"name": "amount", "type": "decimal(10,2)", "nullable": True},
    ],
    "statements": ["insert into payment (id, amount) values ($id, $amount)"],
}


def corrected(value: str) -> str | None:
    if value.strip().lower() == "n/a":
        return None
    return value.replace(",", ".").replace("€", "").strip()


async def run(agent: Agent) -> None:
    probe = await agent.propose([RETYPE, {"op": "replace_action", "action": RECORD_PAYMENT}])
    report = await agent.ok("dry_run", proposal_id=probe["proposal_id"])
    agent.expect(not report["passed"], "some amounts should not convert")
    failing = report["report"]["error"]["details"]["rows"]
    await agent.ship(
        [
            {"op": "alter_field", "entity": "payment", "field": "amount", "nullable": True},
            {"op": "add_action", "action": SET_AMOUNT},
        ]
    )
    for row in failing:
        await agent.ok(
            "app_set_amount",
            id=row["id"],
            amount=corrected(row["amount"]),
            idempotency_key=f"fix-{row['id']}",
        )
    await agent.ship(
        [
            RETYPE,
            {"op": "replace_action", "action": RECORD_PAYMENT},
            {"op": "drop_action", "name": "set_amount"},
        ],
        note="amount as decimal(10,2)",
    )
