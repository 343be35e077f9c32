"""``buttress serve`` over stdio, driven by the SDK client as a real agent would: the whole lifecycle."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.types import ToolListChangedNotification

from mcp_server.demo import BOOKING, SLOT
from mcp_server.project import Project, init
from tests.mcp_server.helpers import call, code_of, serve_command, ship, ship_approved, source_env

pytestmark = pytest.mark.anyio


def parameters(project: Path, *extra: str) -> StdioServerParameters:
    command, *args = serve_command(project, *extra)
    return StdioServerParameters(command=command, args=args, env=source_env())


async def test_the_whole_lifecycle_over_stdio(tmp_path: Path) -> None:
    project = init(tmp_path / "proj", agent="stdio-agent").root
    async with Client(parameters(project, "--demo-seed")) as client:
        assert (await call(client, "describe_app"))["version"] == 0
        assert (
            await ship(
                client, [{"op": "add_entity", "entity": SLOT}, {"op": "add_entity", "entity": BOOKING}]
            )
            == 1
        )
        await call(client, "demo_seed_rows")
        # The defaults a new user gets: dropping data waits for the operator's approval.
        assert (
            await ship_approved(client, project, [{"op": "drop_field", "entity": "slot", "field": "note"}])
            == 2
        )
        assert await code_of(client, "query", sql="select note from slot") == "sql.unknown_column"
        rolled = await call(client, "rollback")
        notes = await call(client, "query", sql="select note from slot order by id")
        audit = await call(client, "read_audit", limit=1000)
    assert rolled["version"] == 3
    assert [row[0] for row in notes["rows"]] == ["morning yoga", None, "lunch talk"]
    # the agent's calls, and the operator's approval (`buttress approve`) of the drop
    assert {e["actor"] for e in audit["entries"]} == {"stdio-agent", "operator"}
    assert {e["operation"] for e in audit["entries"] if e["actor"] == "operator"} == {
        "list_approvals",
        "approve",
    }
    runtime = Project.load(project).open()  # the server exited and released the file
    try:
        assert runtime.verify_audit().ok
    finally:
        runtime.close()


async def test_handshake_era_clients_get_list_changed_over_stdio(tmp_path: Path) -> None:
    project = init(tmp_path / "proj").root
    notices: list[str] = []

    async def on_message(message: object) -> None:
        if isinstance(message, ToolListChangedNotification):
            notices.append(message.method)

    async with (
        stdio_client(parameters(project)) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        init_result = await session.initialize()
        assert init_result.capabilities.tools is not None and init_result.capabilities.tools.list_changed
        proposal = await session.call_tool("define_entity", {"entity": SLOT})
        assert proposal.structured_content is not None
        proposal_id = proposal.structured_content["proposal_id"]
        await session.call_tool("dry_run", {"proposal_id": proposal_id})
        deployed = await session.call_tool("deploy", {"proposal_id": proposal_id})
        assert not deployed.is_error
        with anyio.fail_after(5):
            while not notices:
                await anyio.sleep(0.01)
    assert notices == ["notifications/tools/list_changed"]


SETTLE = [
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


async def test_a_restarted_server_lists_every_deployed_action_in_its_first_tools_list(tmp_path: Path) -> None:
    project = init(tmp_path / "proj").root
    async with Client(parameters(project)) as client:
        await ship(client, SETTLE)
    async with Client(parameters(project)) as client:  # a fresh process
        first = {t.name for t in (await client.list_tools()).tools}
        settled = await call(client, "app_settle_up")
    assert "app_settle_up" in first
    assert settled["rows"] == [[0]]
