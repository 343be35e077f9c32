"""Several clients on one project: the project daemon owns the database (the first ``buttress serve`` starts
it), the serves and the CLI attach to it over the project's socket, each audited under its own name and
listed by ``buttress status``; when the owner dies a call in flight gets a clear code at once, and the
next call finds a new owner — never an agent's serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcp_server.channel import owner_status, socket_path
from mcp_server.project import init
from tests.daemons import alive, daemons_under
from tests.mcp_server.helpers import call, code_of, configure, serve_command, ship, source_env

pytestmark = pytest.mark.anyio

ROOM = {
    "op": "add_entity",
    "entity": {
        "name": "room",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
    },
}
PUT = {
    "op": "add_action",
    "action": {
        "name": "put",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
        "statements": ["insert or replace into room (id, seats) values ($id, $seats)"],
    },
}


def parameters(project: Path, agent: str) -> StdioServerParameters:
    command, *args = serve_command(project, "--agent", agent)
    return StdioServerParameters(command=command, args=args, env=source_env())


def buttress(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args, "--project", str(project)],
        capture_output=True,
        text=True,
        env={**os.environ, **source_env()},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = init(tmp_path / "shop", agent="claude_code").root
    configure(root, agents={"claude_desktop": {"role": "developer"}})
    return root


async def test_two_servers_and_the_cli_share_one_project_each_under_its_own_name(project: Path) -> None:
    async with Client(parameters(project, "claude_code")) as first:
        await ship(first, [ROOM, PUT])
        async with Client(parameters(project, "claude_desktop")) as second:
            names = {t.name for t in (await second.list_tools()).tools}
            assert "app_put" in names  # the second server lists what the owner deployed
            await call(second, "app_put", id=1, seats=4)
            await call(first, "app_put", id=2, seats=6)
            queried = await anyio.to_thread.run_sync(
                lambda: buttress(project, "query", "select sum(seats) from room")
            )
            shown = await anyio.to_thread.run_sync(
                lambda: buttress(project, "audit", "show", "--limit", "200")
            )
            described = await call(second, "describe_app")
            status = owner_status(socket_path(project / "app.duckdb"))
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout.splitlines()[1].strip() == "10"
    assert shown.returncode == 0, shown.stderr
    actors = {line.split()[2] for line in shown.stdout.splitlines()}
    assert {"claude_code", "claude_desktop", "operator"} <= actors
    assert described["version"] == 1
    # the owner is the project daemon; both agents' sessions were attached to it, over stdio
    assert status["owner"]["kind"] == "daemon" and list(daemons_under(project)) == [status["owner"]["pid"]]
    sessions = {(s["agent"], s["transport"]) for s in status["sessions"]}
    assert sessions == {("claude_code", "stdio"), ("claude_desktop", "stdio")}
    # the sessions ended; the daemon goes on owning the project (and running its scheduler)
    with anyio.fail_after(10):
        while (after := owner_status(socket_path(project / "app.duckdb")))["sessions"]:
            await anyio.sleep(0.05)
    assert after["owner"]["pid"] == status["owner"]["pid"]


async def test_killing_the_owner_fails_the_call_in_flight_with_a_clear_code_and_the_next_finds_a_new_owner(
    project: Path,
) -> None:
    async with Client(parameters(project, "claude_desktop")) as attached:
        await ship(attached, [ROOM, PUT])
        first = owner_status(socket_path(project / "app.duckdb"))["owner"]["pid"]

        async def slow_query() -> str:  # in flight when the owner dies
            return await code_of(attached, "query", sql="select count(*) from range(1000000000000)")

        async with anyio.create_task_group() as tasks:
            codes: list[str] = []
            tasks.start_soon(lambda: _collect(codes, slow_query()))
            await anyio.sleep(1.0)
            os.kill(first, signal.SIGKILL)
        assert codes == ["engine.owner_gone"]  # a clear code at once, not a hang
        with anyio.fail_after(60):  # the next call starts a new daemon and carries on
            await call(attached, "app_put", id=1, seats=3)
            assert (await call(attached, "query", sql="select seats from room"))["rows"] == [[3]]
        second = owner_status(socket_path(project / "app.duckdb"))["owner"]
    assert not alive(first)
    assert second["pid"] != first and second["kind"] == "daemon"
    assert list(daemons_under(project)) == [second["pid"]]  # one owner, never the agent's serve


async def _collect(into: list[str], waiting: Any) -> None:
    with anyio.fail_after(20):
        into.append(await waiting)


async def test_an_attached_server_whose_owner_went_away_answers_owner_gone_for_an_action_tool(
    project: Path,
) -> None:
    from mcp_server.project import BackgroundRuntime, Project, connect
    from mcp_server.server import build_server

    loaded = Project.load(project)
    owner, channel = connect(loaded, own="http")  # the owner, in this process
    assert channel is not None
    attached = BackgroundRuntime(loaded)
    try:
        server = build_server(attached, agent="claude_desktop", policy=loaded.policy())
        proposal = owner.propose([ROOM, PUT])
        owner.dry_run(proposal.proposal_id)
        owner.deploy(proposal.proposal_id)
        attached.start()
        assert type(attached.get()).__name__ == "RemoteRuntime"
        channel.close()  # the owner goes away before the attached server has listed app_put
        owner.close()
        async with Client(server) as client:
            with anyio.fail_after(10):  # not `internal`, nor a failed tools/list: a code an agent retries on
                assert await code_of(client, "app_put", id=1, seats=3) == "engine.owner_gone"
            await call(client, "app_put", id=1, seats=3)  # the next call opens the project itself
    finally:
        attached.close()
