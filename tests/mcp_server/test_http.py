"""``buttress serve --http``: streamable HTTP on 127.0.0.1, called with the SDK client over httpx2."""

from __future__ import annotations

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


async def test_tools_are_served_over_streamable_http(tmp_path: Path) -> None:
    project = init(tmp_path / "proj").root
    async with (
        http_server(project) as url,
        httpx2.AsyncClient() as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"describe_app", "propose_change", "deploy", "rollback"} <= names
        assert await ship(client, [{"op": "add_entity", "entity": SLOT}]) == 1
        assert (await call(client, "query", sql="select count(*) as n from slot"))["rows"] == [[0]]
        assert await code_of(client, "query", sql="select * from _buttress.versions") == "sql.forbidden"
        audit = await call(client, "read_audit")
    assert {entry["actor"] for entry in audit["entries"]} == {"http-agent"}
