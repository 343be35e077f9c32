"""The policy follows ``buttress.toml`` while the project runs: the owner re-reads the file when it changes
and swaps the policy in whole; a broken file keeps the policy in force and says why (the log,
``describe_app``); every reload is audited as the operator's, with the file's digest. Refusals say what
the policy in force gives the agent, and since when. Through real processes: an agent's ``buttress serve``
over stdio attached to the project daemon, and ``buttress serve --http``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from mcp_server.project import init
from tests.mcp_server.helpers import call, configure, error_of, serve_command, source_env
from tests.mcp_server.test_http import client_for, http_server

pytestmark = pytest.mark.anyio

NOTE = {
    "op": "add_entity",
    "entity": {"name": "note", "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = init(tmp_path / "shop", agent="claude").root
    configure(root, agents={"claude": {"role": "reader"}}, approvals={"severity": "none"})
    return root


def parameters(project: Path) -> StdioServerParameters:
    command, *args = serve_command(project, "--agent", "claude")
    return StdioServerParameters(command=command, args=args, env=source_env())


async def until(check: Any, seconds: float = 15.0) -> Any:
    """The first truthy value of the awaitable ``check()`` within ``seconds``."""
    with anyio.fail_after(seconds):
        while not (value := await check()):
            await anyio.sleep(0.2)
    return value


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def reloads(client: Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await call(client, "read_audit", operation="policy_reload", limit=100))[
        "entries"
    ]
    return entries


async def test_a_role_granted_in_the_file_applies_without_a_restart_and_the_refusal_said_what_was_in_force(
    project: Path,
) -> None:
    async with Client(parameters(project)) as client:
        assert "propose_change" not in await tool_names(client)
        refused = error_of(await client.call_tool("propose_change", {"operations": [NOTE]}))
        assert refused["code"] == "policy.denied"
        assert "buttress.toml as loaded at " in refused["message"]
        assert "gives agent 'claude' role reader (read, query)" in refused["message"]
        assert "ask them to grant" not in refused["hint"] and "re-read within a second" in refused["hint"]
        # the operator grants it: no restart
        configure(project, agents={"claude": {"role": "developer"}})
        digest = hashlib.sha256((project / "buttress.toml").read_bytes()).hexdigest()

        async def granted() -> bool:
            return "propose_change" in await tool_names(client)

        await until(granted)
        proposal = await until(lambda: _accepted(client))
        assert proposal["base_version"] == 0
        entries = await until(lambda: reloads(client))
    assert [(e["actor"], e["outcome"], e["arguments"]["digest"]) for e in entries] == [
        ("operator", "ok", digest)
    ]


async def _accepted(client: Client) -> dict[str, Any] | None:
    """propose_change's result once the owner's policy lets the agent propose (None before)."""
    result = await client.call_tool("propose_change", {"operations": [NOTE]})
    return None if result.is_error else dict(result.structured_content or {})


async def test_a_broken_file_keeps_the_policy_in_force_says_why_and_is_audited_as_refused(
    project: Path,
) -> None:
    config = project / "buttress.toml"
    good = config.read_text()
    async with Client(parameters(project)) as client:
        before = await call(client, "describe_app")
        assert before["policy_problem"] is None and before["policy"]["file"] == "buttress.toml"
        config.write_text(good.replace('role = "reader"', 'role = "developer"') + "\n[agents.broken\n")

        async def problem() -> str | None:
            return (await call(client, "describe_app"))["policy_problem"]

        said = await until(problem)
        assert "not valid TOML" in said
        # the policy loaded before is still in force: still a reader
        assert "propose_change" not in await tool_names(client)
        refused = error_of(await client.call_tool("propose_change", {"operations": [NOTE]}))
        assert refused["code"] == "policy.denied" and "was not loaded" in refused["hint"]
        assert (await call(client, "query", sql="select 1"))["rows"] == [[1]]
        config.write_text(good)  # fixed: the problem goes

        async def fixed() -> bool:
            return (await call(client, "describe_app"))["policy_problem"] is None

        await until(fixed)
        entries = await until(lambda: _two(reloads(client)))
    assert [(e["outcome"], e["error_code"]) for e in entries] == [("refused", "config.invalid"), ("ok", None)]
    log = (project / ".buttress" / "owner.log").read_text()
    assert "changed but was refused" in log


async def _two(entries: Any) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await entries
    return found if len(found) >= 2 else None


async def test_limits_apply_to_new_calls_and_settings_that_need_a_restart_say_so(project: Path) -> None:
    async with Client(parameters(project)) as client:
        assert (await call(client, "query", sql="select * from range(10)"))["row_count"] == 10
        configure(project, limits={"max_rows": 3, "memory_limit_mb": 1024})

        async def capped() -> dict[str, Any] | None:
            result = await call(client, "query", sql="select * from range(10)")
            return result if result["row_count"] == 3 else None

        assert (await until(capped))["truncated"]
        described = await call(client, "describe_app")
    assert described["policy"]["restart_needed"] == [
        "memory_limit_mb: 1024 in the file, 2048 until the owner restarts"
    ]
    assert (
        "needs a restart to take effect: memory_limit_mb" in (project / ".buttress" / "owner.log").read_text()
    )


async def test_a_token_added_while_the_http_server_runs_is_accepted_without_a_restart(project: Path) -> None:
    async with http_server(project) as url:
        added = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mcp_server",
                    "token",
                    "late-bot",
                    "--role",
                    "reader",
                    "--project",
                    str(project),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, **source_env()},
                timeout=60,
            )
        )
        assert added.returncode == 0, added.stderr
        token = added.stdout.split("shown once; store it in the client): ")[1].split()[0]

        async def answered() -> dict[str, Any] | None:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                try:
                    async with client_for(url, http) as client:
                        return await call(client, "describe_app")
                except Exception:  # 401 until the server has read the file
                    return None

        described = await until(answered)
    assert described["version"] == 0
