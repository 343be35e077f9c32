"""``list_messages``: an agent that may read sees the messages of any topic, internal or external, with
their state and version, and reading them changes nothing about their delivery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import ButtressServer, build_server
from runtime.boundary.policy import DEFAULT_ROLES, AgentPolicy, Capability, Policy
from runtime.runtime import Runtime
from tests.mcp_server.helpers import call, code_of, error_of, ship

pytestmark = pytest.mark.anyio


def topic(name: str, *, external: bool) -> dict[str, Any]:
    return {
        "op": "add_topic",
        "topic": {
            "name": name,
            "key": "user",
            "external": external,
            "payload": [{"name": "user", "type": "text"}, {"name": "note", "type": "text", "nullable": True}],
        },
    }


async def test_messages_of_any_topic_are_read_with_their_state_without_claiming_them(
    server: ButtressServer,
) -> None:
    async with Client(server) as client:
        await ship(client, [topic("outbound", external=True), topic("internal_log", external=False)])
        await call(client, "publish", topic="outbound", payload={"user": "ada"}, message_id="m-ada")
        await call(
            client, "publish", topic="outbound", payload={"user": "cy", "note": "x'); drop table t; --"}
        )
        await call(client, "publish", topic="internal_log", payload={"user": "dee"})
        seen = await call(client, "list_messages", topic="outbound")
        again = await call(client, "list_messages", topic="outbound", undelivered=True)
        claimed = await call(client, "claim_messages", topic="outbound", consumer="mailer", limit=10)
        after = await call(client, "list_messages", topic="outbound")
        internal = await call(client, "list_messages", topic="internal_log")
        every = await call(client, "list_messages")
        unknown = error_of(await client.call_tool("list_messages", {"topic": "nope"}))
    # newest first; reading twice hands nothing out: the claim still gets both, on their first delivery
    assert [m["payload"]["user"] for m in seen["messages"]] == ["cy", "ada"]
    assert [m["state"] for m in seen["messages"]] == ["waiting", "waiting"]
    assert [m["deliveries"] for m in again["messages"]] == [0, 0]
    assert sorted(m["payload"]["user"] for m in claimed["messages"]) == ["ada", "cy"]
    assert all(m["deliveries"] == 1 for m in claimed["messages"])
    assert [(m["state"], m["lease_owner"]) for m in after["messages"]] == [("leased", "mailer")] * 2
    assert seen["messages"][0]["payload"]["note"] == "x'); drop table t; --"  # data, returned as data
    assert [(m["topic"], m["version"]) for m in internal["messages"]] == [("internal_log", 1)]
    assert {m["topic"] for m in every["messages"]} == {"outbound", "internal_log"}
    assert unknown["code"] == "not_found" and "outbound" in unknown["hint"]


async def test_list_messages_needs_read_and_a_refusal_is_audited(tmp_path: Path) -> None:
    policy = Policy(
        open_to_any_agent=False,
        roles={**DEFAULT_ROLES, "writer": (Capability.PUBLISH,)},
        agents={"pub": AgentPolicy(role="writer"), "viewer": AgentPolicy(role="reader")},
    )
    runtime = Runtime.open(tmp_path / "app.duckdb", policy=policy)
    try:
        await _read_and_refused(runtime, policy)
    finally:
        runtime.close()


async def _read_and_refused(runtime: Runtime, policy: Policy) -> None:
    proposal = runtime.propose([topic("outbound", external=True)])
    assert runtime.dry_run(proposal.proposal_id).passed
    runtime.deploy(proposal.proposal_id)
    async with Client(build_server(runtime, agent="pub", policy=policy)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        await call(client, "publish", topic="outbound", payload={"user": "ada"})
        denied = await code_of(client, "list_messages")
    async with Client(build_server(runtime, agent="viewer", policy=policy)) as client:
        assert "list_messages" in {t.name for t in (await client.list_tools()).tools}
        listed = await call(client, "list_messages")
    assert "list_messages" not in names and denied == "policy.denied"
    assert [m["payload"] for m in listed["messages"]] == [{"user": "ada", "note": None}]
    audit = [(e.actor, e.operation, e.error_code) for e in runtime.read_audit(limit=5)]
    assert ("pub", "list_messages", "policy.denied") in audit and ("viewer", "list_messages", None) in audit
