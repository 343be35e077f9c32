"""An external agent for ``buttress eval run --agent-cmd``: a separate program using the MCP SDK.

It stands where an LLM agent's command line would: it reads how to reach the server from its
environment (``BUTTRESS_MCP_TRANSPORT``; ``BUTTRESS_MCP_COMMAND`` over stdio, or
``BUTTRESS_MCP_URL`` and ``BUTTRESS_MCP_TOKEN`` over HTTP), reads the task
(``BUTTRESS_EVAL_PROMPT``), and instead of reasoning about the task it follows a playbook: a JSON
list of tool calls. In a call's arguments, ``"$version"`` is the version ``describe_app`` showed
last and ``"$proposal_id"`` the id of the last proposal. A deploy that waits for the operator
(``deploy.needs_approval``) is sent again until the operator has answered.

It recovers from a server that dies under it (``buttress eval run --fault``): when the connection is
lost, or an attached server answers ``engine.owner_gone``, it connects again (the runner restarts the
server) and sends the same call again. So a playbook gives an idempotency key to every call that must
not act twice; a resent ``deploy`` answered ``deploy.already_applied`` means the first one committed,
which ``list_versions`` confirms.

    buttress eval run rename-field --agent-cmd "python examples/eval_agent.py playbook.json"
    buttress eval run rename-field --transport http --agent-cmd "python examples/eval_agent.py playbook.json"
    buttress eval run rename-field --fault kill@deploy --agent-cmd "python examples/eval_agent.py playbook.json"

It prints one line per call and exits 0 when every call succeeded, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

APPROVAL_WAIT_S = 30.0
RECONNECTS = 5
CALL_TIMEOUT_S = 120.0


def substitute(value: Any, memory: dict[str, Any]) -> Any:
    """Replace ``"$name"`` strings with what the agent remembers."""
    if isinstance(value, str) and value.startswith("$") and value[1:] in memory:
        return memory[value[1:]]
    if isinstance(value, list):
        return [substitute(v, memory) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, memory) for k, v in value.items()}
    return value


class Connection:
    """The agent's connection to the server, opened again when the server died under it. The MCP
    client lives in a task of its own: when its server dies, that task ends, not the agent's."""

    def __init__(self, tasks: anyio.abc.TaskGroup) -> None:
        self._tasks = tasks
        self._closing = anyio.Event()
        self._closed = anyio.Event()
        self.client: Client | None = None

    async def open(self) -> Client:
        if self.client is None:
            self._closing, self._closed = anyio.Event(), anyio.Event()
            await self._tasks.start(self._hold)
        assert self.client is not None
        return self.client

    async def _hold(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        started = False
        try:
            async with connect() as client:
                self.client = client
                task_status.started()
                started = True
                await self._closing.wait()
        except Exception:
            if not started:
                raise  # the caller of open() sees why it could not connect
        finally:
            self.client = None
            self._closed.set()

    async def close(self) -> None:
        if self.client is not None:
            self._closing.set()
            await self._closed.wait()

    async def call(self, tool: str, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """One tool call, sent again after the connection is lost; a deploy waiting for the operator
        is sent again until answered."""
        lost = 0
        content: dict[str, Any] = {}
        waiting_until = anyio.current_time() + APPROVAL_WAIT_S
        while anyio.current_time() < waiting_until:
            try:
                client = await self.open()  # never inside a cancel scope: the client's tasks outlive it
                result = await client.call_tool(tool, arguments)
            except Exception as error:  # the server went away: connect again, send it again
                lost += 1
                print(f"{tool}: connection lost ({type(error).__name__}); reconnecting", flush=True)
                await self.close()
                if lost > RECONNECTS:
                    return False, {"error": {"code": "connection_lost"}}
                await anyio.sleep(0.1 * lost)
                continue
            content = dict(result.structured_content or {})
            code = content.get("error", {}).get("code") if result.is_error else None
            if code == "engine.owner_gone":  # the process owning the database died
                lost += 1
                print(f"{tool}: the server's owner went away; sending it again", flush=True)
                continue
            if code == "deploy.already_applied" and lost:
                return await self.deployed(arguments)
            if code != "deploy.needs_approval":
                return not result.is_error, content
            await anyio.sleep(0.2)
        return False, content

    async def deployed(self, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """A deploy sent again after its answer was lost: applied, if a version names the proposal."""
        ok, versions = await self.call("list_versions", {})
        named = [
            v for v in versions.get("versions", []) if v.get("proposal_id") == arguments.get("proposal_id")
        ]
        if not ok or not named:
            return False, {"error": {"code": "deploy.already_applied"}}
        return True, {"version": named[-1]["number"], "proposal_id": arguments.get("proposal_id")}


async def follow(connection: Connection, playbook: list[dict[str, Any]]) -> bool:
    memory: dict[str, Any] = {}
    for step in playbook:
        tool, arguments = step["tool"], substitute(step.get("arguments", {}), memory)
        ok, content = await connection.call(tool, arguments)
        print(f"{tool}: {'ok' if ok else content.get('error', {}).get('code')}", flush=True)
        if not ok:
            return False
        if "proposal_id" in content and tool in {"propose_change", "define_entity"}:
            memory["proposal_id"] = content["proposal_id"]
        if tool == "describe_app":
            memory["version"] = content["version"]
    return True


@asynccontextmanager
async def connect() -> AsyncIterator[Client]:
    """A client for the server named by the environment."""
    if os.environ["BUTTRESS_MCP_TRANSPORT"] == "http":
        headers = {"Authorization": f"Bearer {os.environ['BUTTRESS_MCP_TOKEN']}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(
                streamable_http_client(os.environ["BUTTRESS_MCP_URL"], http_client=http),
                read_timeout_seconds=CALL_TIMEOUT_S,
            ) as client,
        ):
            yield client
        return
    argv = shlex.split(os.environ["BUTTRESS_MCP_COMMAND"])
    parameters = StdioServerParameters(command=argv[0], args=argv[1:])
    async with Client(parameters, read_timeout_seconds=CALL_TIMEOUT_S) as client:
        yield client


async def main(playbook_path: str) -> int:
    task = Path(os.environ["BUTTRESS_EVAL_PROMPT"]).read_text(encoding="utf-8")
    print(f"task: {task.splitlines()[0] if task else '(empty)'}", flush=True)
    playbook = json.loads(Path(playbook_path).read_text(encoding="utf-8"))
    async with anyio.create_task_group() as tasks:
        connection = Connection(tasks)
        try:
            return 0 if await follow(connection, playbook) else 1
        finally:
            await connection.close()


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1]))
