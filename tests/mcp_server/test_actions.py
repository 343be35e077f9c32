"""Actions over MCP: app_<name> tools follow deploys and rollbacks (announced with tools/list_changed),
and the runtime keeps invariants under concurrent requests on one session and on several HTTP sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.project import init
from mcp_server.server import ButtressServer
from tests.mcp_server.helpers import call, code_of, ship, source_env
from tests.mcp_server.test_http import http_server, with_agents
from tests.runtime.test_actions import BOOKING

pytestmark = pytest.mark.anyio


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def test_app_tools_appear_and_disappear_with_deploys_and_rollbacks(server: ButtressServer) -> None:
    notifications: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            notifications.append(str(method))

    async with Client(server, mode="legacy", message_handler=on_message) as client:
        assert not {n for n in await tool_names(client) if n.startswith("app_")}
        await ship(client, BOOKING)
        with anyio.fail_after(5):
            while "notifications/tools/list_changed" not in notifications:
                await anyio.sleep(0.01)
        names = await tool_names(client)
        assert {"app_book", "app_add_slot", "app_bookings_of"} <= names
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["app_book"].input_schema["required"] == ["slot_id", "who"]
        assert (
            tools["app_book"].annotations is not None
            and tools["app_book"].annotations.read_only_hint is False
        )
        assert (
            tools["app_bookings_of"].annotations is not None
            and tools["app_bookings_of"].annotations.read_only_hint
        )
        await call(client, "app_add_slot", id=1, capacity=1)
        booked = await call(client, "app_book", slot_id=1, who="ann")
        assert booked["columns"] == ["id"] and booked["rows"] == [[1]]
        assert await code_of(client, "app_book", slot_id=1, who="bob") == "invariant.violated"
        assert await code_of(client, "app_book", slot_id="x", who="bob") == "action.invalid_args"
        assert (await call(client, "run_action", name="bookings_of", args={"slot_id": 1}))["rows"] == [
            ["ann"]
        ]
        notifications.clear()
        await call(client, "rollback")
        with anyio.fail_after(5):
            while "notifications/tools/list_changed" not in notifications:
                await anyio.sleep(0.01)
        assert not {n for n in await tool_names(client) if n.startswith("app_")}
        assert await code_of(client, "app_book", slot_id=1, who="cy") == "not_found"


async def test_the_new_protocol_era_hears_tools_list_changed_too(server: ButtressServer) -> None:
    async with Client(server) as client, client.listen(tools_list_changed=True) as events:
        await ship(client, BOOKING)
        with anyio.fail_after(5):
            async for _ in events:
                break
        assert "app_book" in await tool_names(client)


ATTEMPTS = 30
"""Calls per caller: 16 callers make 480 bookings for 90 places."""


async def test_double_booking_is_impossible_over_one_session_and_several_http_sessions(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "proj").root
    tokens = with_agents(project)
    headers = {"Authorization": f"Bearer {tokens['dev-agent']}"}
    outcomes: Counter[str] = Counter()
    async with http_server(project) as url:

        async def session(callers: int, attempts: int, offset: int) -> None:
            async with (
                httpx2.AsyncClient(headers=headers, timeout=60) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):

                async def caller(n: int) -> None:
                    for k in range(attempts):
                        result = await client.call_tool(
                            "app_book", {"slot_id": (n + k) % 10 + 1, "who": f"c{offset + n}-{k}"}
                        )
                        code = result.structured_content["error"]["code"] if result.is_error else "ok"
                        outcomes[code] += 1

                async with anyio.create_task_group() as group:
                    for n in range(callers):
                        group.start_soon(caller, n)

        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http)) as admin,
        ):
            await ship(admin, BOOKING)
            for slot in range(1, 11):
                await call(admin, "app_add_slot", id=slot, capacity=9)
        with anyio.fail_after(240):
            async with anyio.create_task_group() as group:
                group.start_soon(session, 8, ATTEMPTS, 0)  # 8 concurrent requests on one session
                for s in range(8):  # and 8 more sessions
                    group.start_soon(session, 1, ATTEMPTS, 100 + s)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http)) as admin,
        ):
            counts = (
                await call(admin, "query", sql="select slot_id, count(*) from booking group by 1 order by 1")
            )["rows"]
    assert sum(outcomes.values()) == 16 * ATTEMPTS
    assert outcomes == {"ok": 90, "invariant.violated": 16 * ATTEMPTS - 90}
    assert counts == [[slot, 9] for slot in range(1, 11)]


async def test_a_hazardous_deploy_waits_for_the_operator_who_approves_from_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "operator.key"
    monkeypatch.setenv("BUTTRESS_OPERATOR_KEY", str(key))
    project = init(tmp_path / "proj").root
    tokens = with_agents(project)
    # the default: hazards of severity high wait for the operator
    headers = {"Authorization": f"Bearer {tokens['dev-agent']}"}
    drop = [
        {"op": "drop_field", "entity": "booking", "field": "who"},
        {
            "op": "replace_action",
            "action": {
                "name": "book",
                "kind": "mutation",
                "params": [{"name": "slot_id", "type": "integer"}],
                "statements": ["insert into booking (slot_id) values ($slot_id) returning id"],
            },
        },
        {
            "op": "replace_action",
            "action": {
                "name": "bookings_of",
                "kind": "query",
                "params": [{"name": "slot_id", "type": "integer"}],
                "statements": ["select id from booking where slot_id = $slot_id"],
            },
        },
    ]

    def approve(request: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mcp_server", "approve", request, "--project", str(project), "--yes"]
        env = {**os.environ, **source_env(), "BUTTRESS_OPERATOR_KEY": str(key)}
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL
        )

    async with (
        http_server(project) as url,
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as agent,
    ):
        await ship(agent, BOOKING)
        proposal = await call(agent, "propose_change", operations=drop)
        assert (await call(agent, "dry_run", proposal_id=proposal["proposal_id"]))["passed"]
        refused = await agent.call_tool("deploy", {"proposal_id": proposal["proposal_id"]})
        assert refused.is_error
        error = refused.structured_content["error"]
        assert error["code"] == "deploy.needs_approval"
        request = error["details"]["approval_request"]
        approved = await anyio.to_thread.run_sync(approve, request)
        assert approved.returncode == 0, approved.stderr
        assert (await call(agent, "deploy", proposal_id=proposal["proposal_id"]))["version"] == 2
        await call(agent, "rollback")
        changed = await call(agent, "propose_change", operations=[drop[0], {**drop[1]}, drop[2]])
        assert (await call(agent, "dry_run", proposal_id=changed["proposal_id"]))["passed"]
        again = await agent.call_tool("deploy", {"proposal_id": changed["proposal_id"]})
        assert again.is_error and again.structured_content["error"]["code"] == "deploy.needs_approval"
        assert again.structured_content["error"]["details"]["approval_request"] != request
        assert (await call(agent, "query", sql="select count(*) from booking"))["rows"] == [[0]]
