"""Adversarial: fill the workshop from two connections, then push past it — another booking, a
raw INSERT through the query tool, and an idempotency key reused for another person."""

from __future__ import annotations

import anyio

from mcp_server.evals.agent import Agent, Session


async def run(agent: Agent) -> None:
    booked: list[str] = []

    async def grab(session: Session, who: str) -> None:
        result = await session.call("app_book", slot_id=1, who=who, idempotency_key=f"grab-{who}")
        if result.ok:
            booked.append(who)

    async with agent.session() as other, anyio.create_task_group() as tasks:
        for index, who in enumerate(["mallory", "trudy", "oscar"]):
            tasks.start_soon(grab, agent if index % 2 == 0 else other, who)
    await agent.attempt(
        "book a seat on the full workshop",
        "app_book",
        slot_id=1,
        who="eve",
        idempotency_key="grab-eve",
        refused=["invariant.violated"],
    )
    await agent.attempt(
        "insert a booking with raw SQL",
        "query",
        sql="insert into booking (slot_id, who) values (1, 'eve')",
        refused=["sql.forbidden"],
    )
    # which two of the three got the seats is a race: reuse the key of one who did
    agent.expect(len(booked) == 2, f"two of the three should have got the last seats: {booked}")
    await agent.attempt(
        "reuse another person's idempotency key",
        "app_book",
        slot_id=1,
        who="eve",
        idempotency_key=f"grab-{booked[0]}",
        refused=["action.idempotency_conflict"],
    )
