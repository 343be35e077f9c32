"""`buttress init --engine postgres` and `buttress serve` on it (engine-specific: PostgreSQL): agents on
two servers at once, over stdio with the SDK client, one application in one database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcp_server.demo import BOOKING, SLOT
from mcp_server.project import Project
from runtime.errors import ButtressError
from tests.mcp_server.helpers import call, serve_command, ship, source_env

pytestmark = pytest.mark.anyio

URL_ENV = "BUTTRESS_TEST_DATABASE_URL"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def buttress(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args],
        env={**os.environ, **source_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_init_refuses_without_the_connection_string_and_says_where_it_goes(tmp_path: Path) -> None:
    done = buttress(
        "init", str(tmp_path / "p"), "--engine", "postgres", "--url-env", URL_ENV, env={URL_ENV: ""}
    )
    assert done.returncode != 0
    assert "config.invalid" in done.stderr and URL_ENV in done.stderr


async def test_two_servers_serve_one_application_in_one_postgresql_database(
    pg_dsn: str, tmp_path: Path
) -> None:
    env = {URL_ENV: pg_dsn}
    done = buttress("init", str(tmp_path / "a"), "--engine", "postgres", "--url-env", URL_ENV, env=env)
    assert done.returncode == 0, done.stderr
    assert f"PostgreSQL (connection string in ${URL_ENV})" in done.stdout
    assert pg_dsn not in (tmp_path / "a" / "buttress.toml").read_text()  # never in the project
    status = buttress("status", "--project", str(tmp_path / "a"), env=env)
    assert status.returncode == 0 and "the database is shared" in status.stdout, status.stdout
    assert Project.load(tmp_path / "a").engine == "postgres"
    done = buttress("init", str(tmp_path / "b"), "--engine", "postgres", "--url-env", URL_ENV, env=env)
    assert done.returncode == 0, done.stderr

    def server(project: str) -> StdioServerParameters:
        command, *args = serve_command(tmp_path / project)
        return StdioServerParameters(command=command, args=args, env={**source_env(), **env})

    async with Client(server("a")) as a, Client(server("b")) as b:
        assert (
            await ship(a, [{"op": "add_entity", "entity": SLOT}, {"op": "add_entity", "entity": BOOKING}])
            == 1
        )
        book = {"op": "add_action", "action": {
            "name": "add_slot", "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "note", "type": "text"}],
            "statements": ["insert into slot (id, starts_at, capacity, note) values ($id, current_timestamp, 2, $note)"],
        }}  # fmt: skip
        assert await ship(b, [book]) == 2  # b deploys on top of a's version
        deadline = time.monotonic() + 10
        while True:  # a hears of b's version and lists the new tool
            names = {t.name for t in (await a.list_tools()).tools}
            if "app_add_slot" in names or time.monotonic() > deadline:
                break
            await anyio.sleep(0.2)
        assert "app_add_slot" in names
        await call(a, "app_add_slot", id=1, note="yoga")
        await call(b, "app_add_slot", id=2, note="talk")
        rows = (await call(b, "query", sql="select id, note from slot order by id"))["rows"]
        assert rows == [[1, "yoga"], [2, "talk"]]
        actors = {e["actor"] for e in (await call(a, "read_audit", limit=100))["entries"]}
        assert actors == {"agent"}  # both servers' calls, in one log
    # the servers exited; a command opens the database on its own and finds one chain
    os.environ[URL_ENV] = pg_dsn
    try:
        runtime = Project.load(tmp_path / "a").open()
        try:
            assert runtime.current[0] == 2 and runtime.verify_audit().ok
        finally:
            runtime.close()
    finally:
        del os.environ[URL_ENV]
    with pytest.raises(ButtressError):
        Project.load(tmp_path / "a").open()  # without the connection string: a clear refusal


def test_a_serving_process_follows_its_own_buttress_toml(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each serve of a shared database follows the operator's file in its own project directory, as the
    owner of a DuckDB project does: an edit is in force within a poll, without a restart."""
    from mcp_server.project import connect, init
    from tests.mcp_server.helpers import configure

    monkeypatch.setenv(URL_ENV, pg_dsn)
    root = init(tmp_path / "host", engine="postgres", url_env=URL_ENV).root
    runtime, _ = connect(Project.load(root), spawn=True)  # as an agent's serve opens it
    try:
        assert runtime.limits.max_rows == 1000
        configure(root, limits={"max_rows": 7})
        deadline = time.monotonic() + 10
        while runtime.limits.max_rows != 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.limits.max_rows == 7
        entries = runtime.read_audit(limit=5)
        assert any(e.operation == "policy_reload" and e.outcome == "ok" for e in entries), entries
    finally:
        runtime.close()
