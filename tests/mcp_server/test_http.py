"""``buttress serve --http``: streamable HTTP on 127.0.0.1, called with the SDK client over httpx2."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.demo import SLOT
from mcp_server.project import init
from tests.mcp_server.helpers import call, code_of, serve_command, ship, source_env

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for_port(port: int, process: anyio.abc.Process) -> None:
    with anyio.fail_after(30):
        while True:
            assert process.returncode is None, "the server exited before listening"
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def http_server(project: Path) -> AsyncIterator[str]:
    port = free_port()
    command = serve_command(project, "--http", "--port", str(port), "--agent", "http-agent")
    process = await anyio.open_process(
        command, env={**os.environ, **source_env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def with_agents(project: Path) -> dict[str, str]:
    """Two agents with bearer tokens: a developer and a reader (only their sha256 is stored)."""
    tokens = {"dev-agent": "dev-token-0123456789", "read-agent": "read-token-0123456789"}
    roles = {"dev-agent": "developer", "read-agent": "reader"}
    config = project / "buttress.toml"
    text = config.read_text()
    for agent, token in tokens.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        text += f'\n[agents.{agent}]\nrole = "{roles[agent]}"\ntoken_sha256 = "{digest}"\n'
    config.write_text(text)
    return tokens


def client_for(url: str, http: httpx2.AsyncClient) -> Client:
    return Client(streamable_http_client(url, http_client=http))


async def test_tools_are_served_over_streamable_http_to_the_agent_its_token_names(tmp_path: Path) -> None:
    project = init(tmp_path / "proj").root
    tokens = with_agents(project)
    async with (
        http_server(project) as url,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {tokens['dev-agent']}"}) as http,
        client_for(url, http) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"describe_app", "propose_change", "deploy", "rollback", "run_action"} <= names
        assert await ship(client, [{"op": "add_entity", "entity": SLOT}]) == 1
        assert (await call(client, "query", sql="select count(*) as n from slot"))["rows"] == [[0]]
        assert await code_of(client, "query", sql="select * from _buttress.versions") == "sql.forbidden"
        audit = await call(client, "read_audit")
    assert {entry["actor"] for entry in audit["entries"]} == {"dev-agent"}


async def test_missing_or_unknown_tokens_get_401(tmp_path: Path) -> None:
    project = init(tmp_path / "proj").root
    with_agents(project)
    async with http_server(project) as url, httpx2.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        missing = await http.post(url, json=body, headers=headers)
        unknown = await http.post(url, json=body, headers={**headers, "Authorization": "Bearer not-a-token"})
    assert missing.status_code == 401
    assert unknown.status_code == 401


async def test_a_known_agent_lacking_a_capability_gets_policy_denied_and_sees_only_its_tools(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "proj").root
    tokens = with_agents(project)
    async with (
        http_server(project) as url,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {tokens['read-agent']}"}) as http,
        client_for(url, http) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "query" in names and "describe_app" in names
        assert not names & {"propose_change", "deploy", "rollback", "define_entity", "run_action"}
        assert await code_of(client, "propose_change", operations=[{"op": "add_entity", "entity": SLOT}]) == (
            "policy.denied"
        )
        assert await code_of(client, "deploy", proposal_id="p1") == "policy.denied"
        audit = await call(client, "read_audit")
    refused = [(e["operation"], e["error_code"]) for e in audit["entries"] if e["outcome"] == "refused"]
    assert refused == [("propose_change", "policy.denied"), ("deploy", "policy.denied")]


async def test_a_restarted_http_server_lists_every_deployed_action_in_its_first_tools_list(
    tmp_path: Path,
) -> None:
    from tests.mcp_server.test_stdio import SETTLE

    project = init(tmp_path / "proj").root
    tokens = with_agents(project)
    headers = {"Authorization": f"Bearer {tokens['dev-agent']}"}
    async with (
        http_server(project) as url,
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        client_for(url, http) as client,
    ):
        await ship(client, SETTLE)
    async with (
        http_server(project) as url,
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        client_for(url, http) as client,
    ):
        first = {t.name for t in (await client.list_tools()).tools}
        settled = await call(client, "app_settle_up")
    assert "app_settle_up" in first
    assert settled["rows"] == [[0]]
