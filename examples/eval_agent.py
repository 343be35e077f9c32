"""An external agent for ``buttress eval run --agent-cmd``: a separate program using the MCP SDK.

It stands where an LLM agent's command line would: it reads how to reach the server from its
environment (``BUTTRESS_MCP_TRANSPORT``; ``BUTTRESS_MCP_COMMAND`` over stdio, or
``BUTTRESS_MCP_URL`` and ``BUTTRESS_MCP_TOKEN`` over HTTP), reads the task
(``BUTTRESS_EVAL_PROMPT``), and instead of reasoning about the task it follows a playbook: a JSON
list of tool calls. In a call's arguments, ``"$version"`` is the version ``describe_app`` showed
last and ``"$proposal_id"`` the id of the last proposal. A deploy that waits for the operator
(``deploy.needs_approval``) is sent again until the operator has answered.

    buttress eval run rename-field --agent-cmd "python examples/eval_agent.py playbook.json"
    buttress eval run rename-field --transport http --agent-cmd "python examples/eval_agent.py playbook.json"

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
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

APPROVAL_WAIT_S = 30.0


def substitute(value: Any, memory: dict[str, Any]) -> Any:
    """Replace ``"$name"`` strings with what the agent remembers."""
    if isinstance(value, str) and value.startswith("$") and value[1:] in memory:
        return memory[value[1:]]
    if isinstance(value, list):
        return [substitute(v, memory) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, memory) for k, v in value.items()}
    return value


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """One tool call; a deploy waiting for the operator is retried until answered."""
    with anyio.move_on_after(APPROVAL_WAIT_S):
        while True:
            result = await client.call_tool(tool, arguments)
            content = dict(result.structured_content or {})
            code = content.get("error", {}).get("code") if result.is_error else None
            if code != "deploy.needs_approval":
                return not result.is_error, content
            await anyio.sleep(0.2)
    return False, content


async def follow(client: Client, playbook: list[dict[str, Any]]) -> bool:
    memory: dict[str, Any] = {}
    for step in playbook:
        tool, arguments = step["tool"], substitute(step.get("arguments", {}), memory)
        ok, content = await call(client, tool, arguments)
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
            Client(streamable_http_client(os.environ["BUTTRESS_MCP_URL"], http_client=http)) as client,
        ):
            yield client
        return
    argv = shlex.split(os.environ["BUTTRESS_MCP_COMMAND"])
    async with Client(StdioServerParameters(command=argv[0], args=argv[1:])) as client:
        yield client


async def main(playbook_path: str) -> int:
    task = Path(os.environ["BUTTRESS_EVAL_PROMPT"]).read_text(encoding="utf-8")
    print(f"task: {task.splitlines()[0] if task else '(empty)'}", flush=True)
    playbook = json.loads(Path(playbook_path).read_text(encoding="utf-8"))
    async with connect() as client:
        return 0 if await follow(client, playbook) else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1]))
