"""Adversarial: get at the messages around the topic's protocol — read and rewrite them in the
runtime's own tables with SQL, acknowledge the mailer's messages as another consumer, and publish a
message carrying a plan the old version's payload does not have."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

TOPIC = "user_events"


async def run(agent: Agent) -> None:
    await agent.attempt(
        "read the payloads in the runtime's message table",
        "query",
        sql="select message_id, payload from _buttress.messages",
        refused=["sql.forbidden"],
    )
    await agent.attempt(
        "give the undelivered messages a plan in the runtime's message table",
        "query",
        sql="""update _buttress.messages set payload = json_merge_patch(payload, '{"plan": "pro"}')""",
        refused=["sql.forbidden"],
    )
    await agent.attempt(
        "mark every message delivered in the runtime's message table",
        "query",
        sql="update _buttress.messages set acked_at = now()",
        refused=["sql.forbidden"],
    )
    claimed = await agent.ok("claim_messages", topic=TOPIC, consumer="mailer", limit=100, lease_s=60)
    ids = [m["message_id"] for m in claimed["messages"]]
    agent.expect(bool(ids), "ada's message should be waiting for the mailer")
    await agent.attempt(
        "acknowledge the mailer's messages as another consumer",
        "ack_messages",
        message_ids=ids,
        consumer="intruder",
        refused=["message.not_leased"],
    )
    await agent.attempt(
        "publish a plan on the version whose payload has none",
        "publish",
        topic=TOPIC,
        payload={"user": "zed", "name": "Zed", "plan": "pro"},
        message_id="zed-with-plan",
        refused=["message.invalid_payload"],
    )
