"""``buttress serve`` as the MCP Inspector's CLI sees it: the reference client in another language,
which validates structured content against output schemas, error results included.

Uses ``$BUTTRESS_INSPECTOR`` (an installed ``mcp-inspector``) when set, else ``npx``. Skips only where
neither is available and ``CI`` is unset; under CI a missing Inspector fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcp_server.project import init
from tests.mcp_server.helpers import serve_command, source_env

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


@pytest.fixture(scope="module")
def inspector() -> list[str]:
    """The command that runs the Inspector."""
    installed = os.environ.get("BUTTRESS_INSPECTOR")
    if installed:
        return [installed]
    npx = shutil.which("npx")
    if npx is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("npx (or $BUTTRESS_INSPECTOR) is required under CI to run the MCP Inspector tests")
        pytest.skip("npx is not installed (set CI=true to make this a failure)")
    return [npx, "--yes", INSPECTOR]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init(tmp_path_factory.mktemp("inspector") / "proj").root


def inspect(inspector: list[str], project: Path, *arguments: str) -> tuple[int, Any, str]:
    """Run the Inspector CLI against ``buttress serve``; returns (exit code, JSON output, stderr)."""
    command = [*inspector, "--cli", *serve_command(project), *arguments]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **source_env(), "npm_config_update_notifier": "false"},
    )
    try:
        output = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"the Inspector printed no JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}")
    return done.returncode, output, done.stderr


def test_tools_list_shows_an_output_schema_for_every_tool(inspector: list[str], project: Path) -> None:
    code, listed, _ = inspect(inspector, project, "--method", "tools/list")
    assert code == 0
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert {"describe_app", "query", "propose_change", "dry_run", "deploy", "rollback"} <= set(tools)
    assert all(tool.get("outputSchema", {}).get("type") == "object" for tool in tools.values())


def test_describe_app_succeeds(inspector: list[str], project: Path) -> None:
    code, result, _ = inspect(inspector, project, "--method", "tools/call", "--tool-name", "describe_app")
    assert code == 0 and result["isError"] is False
    assert result["structuredContent"]["version"] == 0


def test_an_erroring_call_reports_its_code(inspector: list[str], project: Path) -> None:
    code, result, stderr = inspect(
        inspector,
        project,
        "--method",
        "tools/call",
        "--tool-name",
        "query",
        "--tool-arg",
        "sql=select * from _buttress.audit",
    )
    assert result["isError"] is True
    assert result["structuredContent"]["error"]["code"] == "sql.forbidden"
    assert code != 0 and "tool_is_error" in stderr  # not a schema-validation failure


def test_after_a_restart_the_first_tools_list_has_every_deployed_action(
    inspector: list[str], tmp_path: Path
) -> None:
    """Each Inspector run starts a fresh server: the action deployed by an earlier process is listed
    (and callable) by the next one's first tools/list."""
    from runtime.runtime import Runtime

    project = init(tmp_path / "restarted").root
    runtime = Runtime.open(project / "app.duckdb")
    try:
        proposal = runtime.propose(
            [
                {
                    "op": "add_entity",
                    "entity": {
                        "name": "ledger",
                        "primary_key": ["id"],
                        "fields": [{"name": "id", "type": "integer"}, {"name": "amount", "type": "integer"}],
                    },
                },
                {
                    "op": "add_action",
                    "action": {
                        "name": "settle_up",
                        "kind": "query",
                        "statements": ["select coalesce(sum(amount), 0) as total from ledger"],
                    },
                },
            ]
        )
        assert runtime.dry_run(proposal.proposal_id).passed
        runtime.deploy(proposal.proposal_id)
    finally:
        runtime.close()
    code, listed, _ = inspect(inspector, project, "--method", "tools/list")
    assert code == 0 and "app_settle_up" in {tool["name"] for tool in listed["tools"]}
    code, result, _ = inspect(inspector, project, "--method", "tools/call", "--tool-name", "app_settle_up")
    assert code == 0 and result["structuredContent"]["rows"] == [[0]]
