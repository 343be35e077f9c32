"""Helpers for driving the server through an MCP client and reading its results."""

from __future__ import annotations

from typing import Any

from mcp import Client
from mcp.types import CallToolResult

from mcp_server.demo import BOOKING, SLOT

ERROR_KEYS = {"code", "message", "hint", "details"}


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful call (failing the test with the error otherwise)."""
    assert not result.is_error, result.structured_content
    assert result.structured_content is not None
    return dict(result.structured_content)


def error_of(result: CallToolResult) -> dict[str, Any]:
    """The ``error`` object of a failed call, checked for the one error shape every tool uses."""
    assert result.is_error, result.structured_content
    assert result.structured_content is not None
    assert set(result.structured_content) == {"error"}
    error = result.structured_content["error"]
    assert set(error) == ERROR_KEYS
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"{error['code']}: {error['message']} — {error['hint']}")
    return dict(error)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    return ok(await client.call_tool(tool, arguments))


async def code_of(client: Client, tool: str, **arguments: Any) -> str:
    return str(error_of(await client.call_tool(tool, arguments))["code"])


async def ship(client: Client, operations: list[dict[str, Any]]) -> int:
    """Propose, dry-run (must pass) and deploy; returns the new version."""
    proposal = await call(client, "propose_change", operations=operations)
    report = await call(client, "dry_run", proposal_id=proposal["proposal_id"])
    assert report["passed"], report["report"]["error"]
    return int((await call(client, "deploy", proposal_id=proposal["proposal_id"]))["version"])


async def booking_app(client: Client, *, seeded: bool = True) -> int:
    """Deploy the demo's slot and booking entities (and its sample rows); returns the version."""
    version = await ship(
        client, [{"op": "add_entity", "entity": SLOT}, {"op": "add_entity", "entity": BOOKING}]
    )
    if seeded:
        await call(client, "demo_seed_rows")
    return version


def source_env() -> dict[str, str]:
    """Environment for a spawned server: this checkout on the import path, whatever is installed."""
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    if "BUTTRESS_OPERATOR_KEY" in os.environ:  # the test session's operator secret, not the real one
        env["BUTTRESS_OPERATOR_KEY"] = os.environ["BUTTRESS_OPERATOR_KEY"]
    return env


def serve_command(project: Any, *extra: str) -> list[str]:
    """``buttress serve`` for ``project``, as a command line (run with this interpreter)."""
    import sys

    return [sys.executable, "-m", "mcp_server", "serve", "--project", str(project), *extra]


def configure(project: Any, **sections: dict[str, Any]) -> None:
    """Set keys of ``buttress.toml`` the way an operator edits it (tables merged, comments kept)."""
    from pathlib import Path

    import tomlkit

    path = Path(project) / "buttress.toml"
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    for name, values in sections.items():
        table = document.get(name)
        if table is None:
            table = tomlkit.table()
            document[name] = table
        for key, value in values.items():
            table[key] = value
    path.write_text(tomlkit.dumps(document), encoding="utf-8")


def approve(project: Any, request: str) -> str:
    """``buttress approve REQUEST --yes`` as the operator, from another process; returns its output."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "mcp_server", "approve", request, "--project", str(project), "--yes"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **source_env()},
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def ship_approved(client: Client, project: Any, operations: list[dict[str, Any]]) -> int:
    """Propose, dry-run and deploy a hazardous change: the deploy waits for the operator, who approves
    from another process, and the agent deploys again. Returns the new version."""
    proposal = await call(client, "propose_change", operations=operations)
    report = await call(client, "dry_run", proposal_id=proposal["proposal_id"])
    assert report["passed"], report["report"]["error"]
    waiting = error_of(await client.call_tool("deploy", {"proposal_id": proposal["proposal_id"]}))
    assert waiting["code"] == "deploy.needs_approval", waiting
    approve(project, waiting["details"]["approval_request"])
    return int((await call(client, "deploy", proposal_id=proposal["proposal_id"]))["version"])
