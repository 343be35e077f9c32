"""The oracle: four connections book eight people at once; the invariant refuses six of them on
the workshop, and they go to the overflow slot. Every booking carries an idempotency key, so a
retry after a crash replays the first answer instead of booking twice."""

from __future__ import annotations

import anyio

from mcp_server.evals.agent import Agent, Session

PEOPLE = ["alan", "barbara", "claude", "dana", "edsger", "frances", "guido", "hedy"]
CONNECTIONS = 4


async def book(agent: Agent, session: Session, people: list[str]) -> None:
    for who in people:
        first = await session.call("app_book", slot_id=1, who=who, idempotency_key=f"workshop-{who}")
        if first.ok:
            continue
        agent.expect(first.code == "invariant.violated", f"booking {who}: unexpected {first.code}")
        await session.ok("app_book", slot_id=2, who=who, idempotency_key=f"overflow-{who}")


async def run(agent: Agent) -> None:
    seats = await agent.ok("app_seats_left")
    agent.expect(seats["rows"][0][2] == 2, f"the workshop should have two seats left: {seats['rows']}")
    async with agent.session() as second, agent.session() as third, agent.session() as fourth:
        sessions: list[Session] = [agent, second, third, fourth]
        async with anyio.create_task_group() as tasks:
            for index, session in enumerate(sessions):
                tasks.start_soon(book, agent, session, PEOPLE[index::CONNECTIONS])
    booked = await agent.rows("select slot_id, count(*) from booking group by slot_id order by slot_id")
    agent.expect(booked == [[1, 4], [2, 6]], f"unexpected bookings: {booked}")
