"""Who owns a project: the project daemon, which outlives the agents' sessions; never an agent's
``buttress serve`` over stdio. Through real processes: serves over stdio and HTTP, CLI commands,
the daemon, SIGKILLs, ``buttress status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcp_server.channel import RemoteRuntime, owner_status, socket_path
from mcp_server.project import Project, connect, init
from tests.conftest import deploy_ops
from tests.daemons import alive, daemons_under
from tests.mcp_server.helpers import call, configure, serve_command, ship, source_env
from tests.mcp_server.test_http import free_port

pytestmark = pytest.mark.anyio

NOTE = {
    "op": "add_entity",
    "entity": {
        "name": "note",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}],
    },
}
PUT = {
    "op": "add_action",
    "action": {
        "name": "put",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}],
        "statements": ["insert or replace into note (id, body) values ($id, $body)"],
    },
}
PUT_LATER = {
    "op": "add_action",
    "action": {
        "name": "put_later",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}, {"name": "run", "type": "text"}],
        "statements": ["insert or replace into note (id, body) values ($id, 'soon')"],
        "emits": [{"start": "later", "run_id": {"from": "args.run"}, "args": {"id": {"from": "args.id"}}}],
    },
}


def later(seconds: float, name: str = "later") -> dict[str, Any]:
    """A workflow that sleeps, then writes a note."""
    return {
        "op": "add_workflow",
        "workflow": {
            "name": name,
            "params": [{"name": "id", "type": "integer"}],
            "steps": [
                {"name": "wait", "kind": "sleep", "seconds": seconds},
                {
                    "name": "write",
                    "kind": "action",
                    "action": "put",
                    "args": {"id": {"from": "input.id"}, "body": "later"},
                },
            ],
        },
    }


def buttress(
    project: Path, *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args, "--project", str(project)],
        capture_output=True,
        text=True,
        env={**os.environ, **source_env()},
        timeout=120,
        stdin=stdin,
    )


def deploy(project: Path, operations: list[dict[str, Any]]) -> None:
    """Propose, dry-run and deploy on the file itself (no process owns the project yet)."""
    runtime = Project.load(project).open()
    try:
        deploy_ops(runtime, operations)
    finally:
        runtime.close()


def status(project: Path) -> dict[str, Any]:
    found: dict[str, Any] = owner_status(socket_path(project / "app.duckdb"))
    return found


def eventually(check: Callable[[], Any], seconds: float = 30.0, every: float = 0.1) -> Any:
    """``check()``'s first truthy value within ``seconds`` (the test fails with the last one otherwise)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"not within {seconds} s: {value!r}"
            return value
        time.sleep(every)


def run_status(project: Path, run_id: str) -> str:
    """The run's status, asked of the owner (or read from the file when none runs)."""
    runtime, _ = connect(Project.load(project))
    try:
        return runtime.get_run(run_id).status
    finally:
        runtime.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = init(tmp_path / "shop", agent="claude").root
    configure(root, approvals={"severity": "none"})
    return root


def agent_parameters(project: Path, pidfile: Path, *extra: str) -> StdioServerParameters:
    serve = " ".join(serve_command(project, *extra))
    env = {**source_env(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return StdioServerParameters(command="sh", args=["-c", f"echo $$ > {pidfile}; exec {serve}"], env=env)


async def test_killing_an_agents_serve_never_stops_the_work_the_daemon_carries_it_on(project: Path) -> None:
    pidfile = project / "agent.pid"
    async with Client(agent_parameters(project, pidfile)) as client:
        await ship(client, [NOTE, PUT, later(2)])
        await call(client, "start_workflow", workflow="later", args={"id": 7}, run_id="r7")
        serve = int(pidfile.read_text())
        owner = status(project)["owner"]
        assert owner["kind"] == "daemon" and owner["pid"] != serve  # the agent's serve is not the owner
        os.kill(serve, signal.SIGKILL)  # the editor crashes while the run sleeps
        await anyio.sleep(0.5)
    assert not alive(serve)
    assert eventually(lambda: run_status(project, "r7") == "completed")
    assert status(project)["owner"]["pid"] == owner["pid"]  # the same owner carried it to the end


async def test_a_session_whose_stdin_closes_exits_0_and_the_daemon_keeps_running(project: Path) -> None:
    serve = subprocess.Popen(
        serve_command(project),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **source_env()},
    )
    assert serve.stdin is not None and serve.stdout is not None
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
    ]
    try:
        for request in requests:
            serve.stdin.write(json.dumps(request).encode() + b"\n")
            serve.stdin.flush()
        answers = [json.loads(serve.stdout.readline()) for _ in range(2)]
        tools = {tool["name"] for tool in answers[1]["result"]["tools"]}
        attached = status(project)
        serve.stdin.close()  # the editor quits
        assert serve.wait(30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        stderr = serve.stderr.read().decode() if serve.stderr else ""
        for stream in (serve.stdout, serve.stderr):
            if stream is not None:
                stream.close()
    assert "describe_app" in tools and "propose_change" in tools
    assert [(s["pid"], s["transport"]) for s in attached["sessions"]] == [(serve.pid, "stdio")]
    assert "Traceback" not in stderr and "terminate called" not in stderr
    after = eventually(lambda: (found := status(project))["sessions"] == [] and found)
    assert after["owner"]["pid"] == attached["owner"]["pid"] and alive(after["owner"]["pid"])


def test_serve_with_stdin_closed_exits_0_at_once_and_leaves_the_data_intact(project: Path) -> None:
    deploy(project, [NOTE, PUT])
    assert buttress(project, "run", "put", "--arg", "id=1", "--arg", "body=kept").returncode == 0
    serves = [  # five at once, as an editor retrying would
        subprocess.Popen(
            serve_command(project),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **source_env()},
        )
        for _ in range(5)
    ]
    for serve in serves:
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err
        assert "terminate called" not in err.decode() and "Traceback" not in err.decode()
    for pid in daemons_under(project):  # the sessions were empty; stop whatever they started
        os.kill(pid, signal.SIGTERM)
    eventually(lambda: not daemons_under(project))
    runtime = Project.load(project).open()
    try:
        assert runtime.query("select id, body from note").rows == [[1, "kept"]]
        assert runtime.verify_audit().ok
    finally:
        runtime.close()


def test_serves_started_together_end_with_one_owner_that_every_one_attaches_to(project: Path) -> None:
    serves = [
        subprocess.Popen(
            serve_command(project, "--agent", "claude"),
            stdin=subprocess.PIPE,  # held open: a stdio serve ends with its input
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **source_env()},
        )
        for _ in range(4)
    ]
    try:
        attached = eventually(
            lambda: (found := _status_or_none(project)) and len(found["sessions"]) == 4 and found, seconds=90
        )
        owners = daemons_under(project)
    finally:
        for serve in serves:
            assert serve.stdin is not None
            serve.stdin.close()
        for serve in serves:
            assert serve.wait(30) == 0
    assert list(owners) == [attached["owner"]["pid"]] and attached["owner"]["kind"] == "daemon"
    assert sorted(s["pid"] for s in attached["sessions"]) == sorted(s.pid for s in serves)


@contextmanager
def http_serve(project: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        serve_command(project, "--http", "--port", str(free_port())),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **source_env()},
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def test_serve_http_owns_the_project_when_alone_and_attaches_to_a_running_daemon(project: Path) -> None:
    with http_serve(project) as http:
        owner = eventually(lambda: (found := _status_or_none(project)) and found["owner"])
        assert (owner["pid"], owner["kind"]) == (http.pid, "http")
    eventually(lambda: _status_or_none(project) is None)  # it let go of the project when it stopped

    started = buttress(project, "status")
    assert started.returncode == 0 and "owner: none" in started.stdout
    deploy(project, [NOTE, PUT, later(0.1)])
    assert buttress(project, "runs", "start", "later", "--arg", "id=1", "--run-id", "r1").returncode == 0
    daemon = status(project)["owner"]  # the command that set work in motion started the daemon
    assert daemon["kind"] == "daemon"
    with http_serve(project) as http:
        found = eventually(lambda: [s for s in status(project)["sessions"] if s["transport"] == "http"])
        assert found[0]["pid"] == http.pid
        shown = buttress(project, "status")
    assert status(project)["owner"]["pid"] == daemon["pid"]  # the http serve only attached
    assert shown.returncode == 0, shown.stderr
    assert f"owner: pid {daemon['pid']}, daemon" in shown.stdout
    assert f"pid {http.pid}" in shown.stdout and "http" in shown.stdout
    assert eventually(lambda: run_status(project, "r1") == "completed")


def _status_or_none(project: Path) -> dict[str, Any] | None:
    from runtime.errors import ButtressError

    try:
        return status(project)
    except ButtressError:
        return None


def test_reading_commands_open_the_file_and_commands_that_set_work_in_motion_start_the_daemon(
    project: Path,
) -> None:
    deploy(project, [NOTE, PUT, later(0.1), PUT_LATER])
    assert buttress(project, "query", "select count(*) from note").returncode == 0
    assert buttress(project, "run", "put", "--arg", "id=1", "--arg", "body=x").returncode == 0
    assert daemons_under(project) == {}  # nothing left due: no daemon

    handed = buttress(
        project, "run", "put_later", "--arg", "id=2", "--arg", "run=r2"
    )  # its emit starts a run
    assert handed.returncode == 0, handed.stderr
    assert "the project daemon carries it on" in handed.stderr
    assert eventually(lambda: run_status(project, "r2") == "completed")
    first = status(project)["owner"]["pid"]
    os.kill(first, signal.SIGTERM)
    eventually(lambda: not daemons_under(project))

    assert buttress(project, "runs", "start", "later", "--arg", "id=3", "--run-id", "r3").returncode == 0
    assert status(project)["owner"]["kind"] == "daemon"
    assert eventually(lambda: run_status(project, "r3") == "completed")


def test_the_daemon_stops_when_idle_but_not_while_a_timer_falls_within_its_idle_time(project: Path) -> None:
    configure(project, server={"idle_stop_s": 3.0})
    deploy(project, [NOTE, PUT, later(5), later(3600, name="much_later")])
    with (project / ".buttress" / "owner.log").open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mcp_server", "owner", "--project", str(project)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **source_env()},
        )
    try:
        eventually(lambda: _status_or_none(project))
        remote = RemoteRuntime.attach(socket_path(project / "app.duckdb"))
        remote.start_workflow("later", {"id": 1}, run_id="soon")
        remote.start_workflow("much_later", {"id": 2}, run_id="far")
        # The last call ends now: idle from here, the daemon may stop 3 s on; the first timer is 5 s
        # away, within its idle time by then, so it must wait for it, and stop after it (not for "far").
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert "with nothing due" in (project / ".buttress" / "owner.log").read_text()
    runtime = Project.load(project).open()
    try:
        assert runtime.get_run("soon").status == "completed"
        assert runtime.get_run("far").status == "waiting"  # an hour away: the next owner will see to it
    finally:
        runtime.close()


def test_a_dry_run_through_the_daemon_builds_every_actions_tool_from_the_first_request(project: Path) -> None:
    """The daemon registers the tool check before its socket serves anyone: a dry-run proposed by any
    attached process (a CLI, a serve), even the very first, builds each action's tool."""
    runtime, owner = connect(Project.load(project), spawn=True)
    try:
        assert owner is None and isinstance(runtime, RemoteRuntime)
        proposal = runtime.propose([NOTE, PUT])
        checks = {c.name: c for c in runtime.dry_run(proposal.proposal_id).checks}
    finally:
        runtime.close()
    assert checks["tools"].passed and checks["tools"].detail == "1 action tools build"


def test_a_daemon_killed_before_it_listened_is_an_owner_gone_and_one_that_exited_an_error(
    tmp_path: Path,
) -> None:
    """A daemon killed while it started (a crash, the OOM killer) is like an owner that died: the caller
    is told to call again (``engine.owner_gone``); one that exited on its own without saying why is an
    ``engine.error`` pointing at its log."""
    from mcp_server.owner import _daemon_failed

    project = init(tmp_path / "proj", agent="claude")
    log = tmp_path / "owner.log"
    log.write_text("starting\n")
    killed = _daemon_failed(project, log, 0, -signal.SIGKILL)
    assert (killed.code, killed.details["signal"]) == ("engine.owner_gone", 9)
    assert "Call again" in (killed.hint or "")
    exited = _daemon_failed(project, log, 0, 1)
    assert exited.code == "engine.error" and str(log) in (exited.hint or "")


def test_a_session_whose_daemon_died_starting_starts_another_on_its_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's ``serve`` answers the call that met the dead daemon with ``engine.owner_gone``; its
    next call resolves the project again instead of repeating that error for the rest of the session."""
    from mcp_server import project as project_module
    from runtime.errors import Code, EngineError

    project = init(tmp_path / "proj", agent="claude")
    real = project_module.connect
    tries: list[int] = []

    def dies_once(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise EngineError(
                Code.ENGINE_OWNER_GONE, "the project daemon was killed (signal 9) before it listened"
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(project_module, "connect", dies_once)
    background = project_module.BackgroundRuntime(project, own="http")
    try:
        background.start()
        first = background._future.exception(timeout=30)  # what the call that met the dead daemon got
        assert isinstance(first, EngineError) and first.code == "engine.owner_gone"
        assert background.get().describe().version == 0
        assert len(tries) == 2
    finally:
        background.close()
