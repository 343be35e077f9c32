"""Several clients on one project: the first ``buttress serve`` owns the database, a second serve and the
CLI attach to it over the project's socket, each audited under its own name; when the owner dies the
attached ones get a clear code at once, and their next call recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcp_server.channel import socket_path
from mcp_server.project import init
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
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout.splitlines()[1].strip() == "10"
    assert shown.returncode == 0, shown.stderr
    actors = {line.split()[2] for line in shown.stdout.splitlines()}
    assert {"claude_code", "claude_desktop", "operator"} <= actors
    assert described["version"] == 1
    assert not socket_path(project / "app.duckdb").exists()  # the owner stopped: it removed its socket


async def test_killing_the_owner_fails_the_attached_server_with_a_clear_code_then_it_recovers(
    project: Path,
) -> None:
    command, *args = serve_command(project, "--agent", "claude_code")
    owner = subprocess.Popen(
        [command, *args],
        stdin=subprocess.PIPE,  # held open: a stdio server stops when its input ends
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **source_env()},
    )
    try:
        with anyio.fail_after(30):
            while not socket_path(project / "app.duckdb").exists():
                await anyio.sleep(0.05)
        async with Client(parameters(project, "claude_desktop")) as attached:
            await ship(attached, [ROOM, PUT])
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            with anyio.fail_after(10):  # a clear code, not a hang
                assert await code_of(attached, "app_put", id=1, seats=3) == "engine.owner_gone"
            with anyio.fail_after(30):  # the next call opens the project itself and carries on
                await call(attached, "app_put", id=1, seats=3)
                assert (await call(attached, "query", sql="select seats from room"))["rows"] == [[3]]
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        assert owner.stdin is not None
        owner.stdin.close()


async def test_an_attached_server_whose_owner_went_away_answers_owner_gone_for_an_action_tool(
    project: Path,
) -> None:
    from mcp_server.project import BackgroundRuntime, Project, connect
    from mcp_server.server import build_server

    loaded = Project.load(project)
    owner, channel = connect(loaded, listen=True)  # the owner, in this process
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
