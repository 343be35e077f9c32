"""The rollback-coherence story over MCP stdio: version 2 adds ``plan`` to ``app_user`` and to the
``user_events`` payload; messages are produced; the app is rolled back while some are undelivered;
the project's owner is SIGKILLed; consumers on the old version never see the new field; redeploying version 2
gives the messages still undelivered their field back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.project import Project
from tests.mcp_server.helpers import call, ship
from tests.workflows.apps import USERS_V1, USERS_V2
from tests.workflows.harness import Owners, agent, project, provider

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def claim(client: Any, consumer: str, lease_s: float = 30) -> list[dict[str, Any]]:
    claimed = await call(
        client, "claim_messages", topic="user_events", consumer=consumer, limit=100, lease_s=lease_s
    )
    return list(claimed["messages"])


async def test_a_rollback_with_messages_in_flight_keeps_consumers_on_the_old_shape(tmp_path: Path) -> None:
    with provider(seed=1) as fake:
        root = project(tmp_path / "users", fake.url)
        owners = Owners(root)
        owner = await owners.start()
        async with agent(root, "first") as first:
            await ship(first.client, USERS_V1)
            await call(first.client, "app_sign_up", id="ada", name="Ada")
            delivered = await claim(first.client, "mailer")
            await call(
                first.client,
                "ack_messages",
                message_ids=[m["message_id"] for m in delivered],
                consumer="mailer",
            )

            await ship(first.client, USERS_V2)
            for user, plan in [("cy", "pro"), ("dee", "free"), ("eve", "pro")]:
                await call(first.client, "app_sign_up", id=user, name=user.title(), plan=plan)
            taken = await claim(first.client, "mailer", lease_s=1)
            assert {m["payload"]["user"]: m["payload"]["plan"] for m in taken} == {
                "cy": "pro",
                "dee": "free",
                "eve": "pro",
            }
            cy = next(m["message_id"] for m in taken if m["payload"]["user"] == "cy")
            await call(first.client, "ack_messages", message_ids=[cy], consumer="mailer")
            # dee and eve stay undelivered (claimed, not acknowledged: their lease runs out)

            rolled = await call(first.client, "rollback")
            losses = [loss for step in rolled["steps"] for loss in step["losses"]]
            converted = [loss for loss in losses if loss["code"] == "message.converted"]
            assert len(converted) == 1 and converted[0]["count"] == 2, losses  # the report named them
            owner.kill()  # and the owner dies right after the rollback

        await anyio.sleep(1.1)  # the leases on dee and eve run out
        await owners.start()  # the old version, after a crash
        async with agent(root, "second") as second:
            old = await call(second.client, "query", sql="select * from app_user order by id")
            assert old["columns"] == ["id", "name"]
            await call(second.client, "app_sign_up", id="fay", name="Fay")
            seen = await claim(second.client, "mailer", lease_s=1)
            assert sorted(m["payload"]["user"] for m in seen) == ["dee", "eve", "fay"]
            assert all(set(m["payload"]) == {"user", "name"} for m in seen), seen  # never the new field
            dee = next(m["message_id"] for m in seen if m["payload"]["user"] == "dee")
            await call(second.client, "ack_messages", message_ids=[dee], consumer="mailer")
            # eve and fay are still undelivered when version 2 comes back

            await anyio.sleep(1.1)
            await ship(second.client, USERS_V2)
            back = await claim(second.client, "mailer")
            payloads = {m["payload"]["user"]: m["payload"] for m in back}
            assert payloads["eve"] == {"user": "eve", "name": "Eve", "plan": "pro"}  # its field restored
            assert payloads["fay"] == {"user": "fay", "name": "Fay", "plan": None}  # never had one
            assert set(payloads) == {"eve", "fay"}
            users = await call(second.client, "query", sql="select id, plan from app_user order by id")
            assert users["rows"] == [
                ["ada", None],
                ["cy", "pro"],
                ["dee", "free"],
                ["eve", "pro"],
                ["fay", None],
            ]
        owners.stop()
    runtime = Project.load(root).open()  # the owner is gone: what was delivered stays as delivered
    try:
        stored = {m.payload["user"]: m.payload for m in runtime.list_messages(topic="user_events")}
    finally:
        runtime.close()
    assert stored["dee"] == {"user": "dee", "name": "Dee"}  # acknowledged on the old version: no plan
    assert stored["cy"]["plan"] == "pro" and stored["eve"]["plan"] == "pro"
