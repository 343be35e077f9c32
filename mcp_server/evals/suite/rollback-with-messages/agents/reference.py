"""The oracle: the mailer takes ada's message; the plan change is shipped; three sign-ups, of which
the mailer acknowledges cy's and holds dee's and eve's in flight; the rollback; fay on the old
version; the mailer sees no plan in anything it gets there and acknowledges dee's; the plan change is
shipped again and the two messages still undelivered come back with their plans (eve's restored,
fay's null).

If the server dies under a claim, the answer is lost but the lease is not: the messages come back
when it ends, so the mailer simply claims again. If it dies under the rollback, the agent looks at
the version before rolling back again."""

from __future__ import annotations

from typing import Any

import anyio

from mcp_server.evals.agent import Agent, Interrupted

TOPIC = "user_events"
MAILER = "mailer"
LEASE_S = 1
WAIT_S = 30.0

PLAN_CHANGE: list[dict[str, Any]] = [
    {"op": "add_field", "entity": "app_user", "field": {"name": "plan", "type": "text", "nullable": True}},
    {
        "op": "replace_topic",
        "topic": {
            "name": TOPIC,
            "key": "user",
            "external": True,
            "description": "One message per sign-up, for the mailer outside the application.",
            "payload": [
                {"name": "user", "type": "text"},
                {"name": "name", "type": "text"},
                {"name": "plan", "type": "text", "nullable": True},
            ],
        },
    },
    {
        "op": "replace_action",
        "action": {
            "name": "sign_up",
            "kind": "mutation",
            "description": "Register a user with a plan and tell the mailer (a message on user_events).",
            "params": [
                {"name": "id", "type": "text"},
                {"name": "name", "type": "text"},
                {"name": "plan", "type": "text", "nullable": True},
            ],
            "statements": ["insert into app_user (id, name, plan) values ($id, $name, $plan)"],
            "emits": [
                {
                    "publish": TOPIC,
                    "args": {
                        "user": {"from": "args.id"},
                        "name": {"from": "args.name"},
                        "plan": {"from": "args.plan"},
                    },
                }
            ],
        },
    },
]


async def claim(agent: Agent, users: set[str]) -> dict[str, dict[str, Any]]:
    """Claim as the mailer until the messages of ``users`` are all in hand (a message claimed and not
    acknowledged comes back once its lease ends); the messages by user."""
    held: dict[str, dict[str, Any]] = {}
    with anyio.move_on_after(WAIT_S):
        while not users <= set(held):
            try:
                claimed = await agent.ok(
                    "claim_messages", topic=TOPIC, consumer=MAILER, limit=100, lease_s=LEASE_S
                )
            except Interrupted:
                claimed = {"messages": []}  # what it leased comes back when the lease ends
            held.update({m["payload"]["user"]: m for m in claimed["messages"]})
            if not users <= set(held):
                await anyio.sleep(0.25)
    agent.expect(set(held) == users, f"the mailer expected {sorted(users)}, got {sorted(held)}")
    return held


async def ack(agent: Agent, held: dict[str, dict[str, Any]], *users: str) -> None:
    await agent.ok("ack_messages", message_ids=[held[u]["message_id"] for u in users], consumer=MAILER)


async def roll_back(agent: Agent) -> None:
    """Roll back the plan change; the rollback converts dee's and eve's messages, in flight."""
    before = (await agent.ok("describe_app"))["version"]
    try:
        rolled = await agent.rollback()
    except Interrupted:
        if (await agent.ok("describe_app"))["version"] != before:
            return  # it committed; its answer was lost
        rolled = await agent.rollback()
    losses = [loss for step in rolled.get("steps", []) for loss in step.get("losses", [])]
    converted = sum(loss["count"] for loss in losses if loss["code"] == "message.converted")
    agent.expect(converted == 2, f"the rollback should convert dee's and eve's messages: {losses}")


async def run(agent: Agent) -> None:
    waiting = await claim(agent, {"ada"})
    await ack(agent, waiting, "ada")

    await agent.ship(PLAN_CHANGE, note="plan on app_user and on user_events")
    for user, plan in [("cy", "pro"), ("dee", "free"), ("eve", "pro")]:
        await agent.ok(
            "app_sign_up", id=user, name=user.title(), plan=plan, idempotency_key=f"sign-up-{user}"
        )
    taken = await claim(agent, {"cy", "dee", "eve"})
    plans = {user: m["payload"].get("plan") for user, m in taken.items()}
    agent.expect(plans == {"cy": "pro", "dee": "free", "eve": "pro"}, f"plans on the new version: {plans}")
    await ack(agent, taken, "cy")  # dee's and eve's stay in flight

    await roll_back(agent)
    users = await agent.ok("query", sql="select * from app_user order by id")
    agent.expect(users["columns"] == ["id", "name"], f"the old version's app_user: {users['columns']}")

    await agent.ok("app_sign_up", id="fay", name="Fay", idempotency_key="sign-up-fay")
    old = await claim(agent, {"dee", "eve", "fay"})
    shapes = {user: sorted(m["payload"]) for user, m in old.items()}
    agent.expect(
        all(shape == ["name", "user"] for shape in shapes.values()),
        f"a consumer on the old version got the new field: {shapes}",
    )
    await ack(agent, old, "dee")  # eve's and fay's are still undelivered when the plan comes back

    await agent.ship(PLAN_CHANGE, note="plan again")
    back = await claim(agent, {"eve", "fay"})
    agent.expect(
        back["eve"]["payload"] == {"user": "eve", "name": "Eve", "plan": "pro"},
        f"eve's plan should be restored: {back['eve']['payload']}",
    )
    agent.expect(
        back["fay"]["payload"] == {"user": "fay", "name": "Fay", "plan": None},
        f"fay never had a plan: {back['fay']['payload']}",
    )
    await ack(agent, back, "eve", "fay")
