"""The project's socket is bounded: a request line larger than ``max_request_bytes`` (and its envelope)
is refused with ``limit.exceeded`` and never read whole; connections beyond the cap are refused politely;
clients that vanish mid-request or mid-answer cost a thread and nothing else (pytest fails a test on any
unhandled thread exception). In this process, then against a real project daemon."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.channel import (
    ENVELOPE_BYTES,
    MAX_CONNECTIONS,
    ChannelServer,
    RemoteRuntime,
    owner_status,
    socket_path,
)
from mcp_server.project import Project, init
from mcp_server.server import build_server
from runtime.boundary.policy import Limits, Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import deploy_ops
from tests.mcp_server.helpers import error_of, source_env

WIDE = [
    {
        "op": "add_entity",
        "entity": {
            "name": "wide",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "fill",
            "kind": "mutation",
            "params": [],
            "statements": ["insert into wide select i, repeat('x', 1000) from range(1000) t(i)"],
        },
    },
]


def connect(path: Path) -> socket.socket:
    """A raw connection to the owner (waiting while its accept queue is full)."""
    deadline = time.monotonic() + 20
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(30)
        try:
            connection.connect(str(path))
            return connection
        except BlockingIOError:
            connection.close()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        except BaseException:
            connection.close()
            raise


def send_until_refused(connection: socket.socket, total: int, chunk: int = 1 << 20) -> int:
    """Send ``total`` bytes with no newline, a chunk at a time; the bytes sent before the owner hung up."""
    block = b"x" * chunk
    sent = 0
    try:
        while sent < total:
            connection.sendall(block)
            sent += chunk
    except OSError:
        pass
    return sent


def answer(connection: socket.socket) -> dict[str, Any]:
    """The one line the owner answered, and that it then closed the connection."""
    data = b""
    while not data.endswith(b"\n"):
        part = connection.recv(65536)
        assert part, f"closed without an answer: {data!r}"
        data += part
    with contextlib.suppress(ConnectionResetError):  # a reset, when it left part of the request unread
        assert connection.recv(65536) == b""  # and then it closed
    message: dict[str, Any] = json.loads(data)
    return message


def request(method: str, **params: Any) -> bytes:
    return json.dumps({"method": method, "actor": "operator", "params": params}).encode() + b"\n"


def send(connection: socket.socket, line: bytes) -> None:
    """Send a request; an owner that refused the connection may have hung up before reading it."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        connection.sendall(line)


# ------------------------------------------------------------------------------ in this process


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Runtime, ChannelServer]]:
    runtime = Runtime.open(tmp_path / "app.duckdb", policy=Policy(limits=Limits(max_request_bytes=4096)))
    deploy_ops(runtime, WIDE)
    runtime.run_action("fill")
    channel = ChannelServer(runtime, socket_path(runtime.engine.path), max_connections=4)
    try:
        yield runtime, channel
    finally:
        channel.close()
        runtime.close()


def test_a_request_line_over_the_cap_is_refused_unread_and_the_owner_serves_on(
    served: tuple[Runtime, ChannelServer],
) -> None:
    _, channel = served
    with connect(channel.path) as connection:
        sent = send_until_refused(connection, 64 << 20, chunk=64 << 10)
        refused = answer(connection)
    assert refused["error"]["code"] == "limit.exceeded"
    assert refused["error"]["details"]["max_bytes"] == 4096 + ENVELOPE_BYTES
    assert sent < 64 << 20  # the owner hung up long before the end: it never read the line whole
    remote = RemoteRuntime.attach(channel.path)
    assert remote.query("select count(*) from wide").rows == [[1000]]


def test_connections_beyond_the_cap_are_refused_politely_and_served_again_once_one_ends(
    served: tuple[Runtime, ChannelServer],
) -> None:
    _, channel = served
    held = [connect(channel.path) for _ in range(4)]  # each waits for its request line
    try:
        deadline = time.monotonic() + 10
        while channel.status()["connections"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert channel.status()["connections"] == 4
        with connect(channel.path) as extra:
            send(extra, request("limits"))
            refused = answer(extra)
        assert refused["error"]["code"] == "limit.exceeded"
        assert refused["error"]["details"] == {"max_connections": 4}
        with pytest.raises(ButtressError) as caught:
            RemoteRuntime.attach(channel.path)
        assert caught.value.code == "limit.exceeded"  # an answer, not a gone owner
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 10
    while True:  # the held connections' threads end as they see their clients go
        try:
            assert RemoteRuntime.attach(channel.path).query("select 1").rows == [[1]]
            break
        except ButtressError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_clients_that_vanish_mid_request_or_mid_answer_leave_no_thread_error_behind(
    served: tuple[Runtime, ChannelServer],
) -> None:
    runtime, channel = served
    proposal = runtime.propose(
        [{"op": "add_field", "entity": "wide", "field": {"name": "n", "type": "integer", "nullable": True}}]
    )
    for line in (
        b'{"method": "query", "actor": "operator", "params": {"sql": "sel',  # mid-request
        request("query", sql="select * from wide"),  # ~1 MB answer, never read
        request("dry_run", proposal_id=proposal.proposal_id),  # progress lines, never read
        b"not json\n",
        request("no_such_method"),
    ):
        with connect(channel.path) as connection:
            connection.sendall(line)
        # closed at once: whatever the owner writes goes to a socket nobody reads
    deadline = time.monotonic() + 60
    while (
        channel.status()["accepted"] < 5 or channel.status()["connections"]
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert channel.status()["connections"] == 0, channel.status()  # every one taken in, every thread ended
    remote = RemoteRuntime.attach(channel.path)
    assert remote.query("select count(*) from wide").rows == [[1000]]
    assert remote.dry_run(proposal.proposal_id).passed


# ------------------------------------------------------------------------------ a real daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Project, subprocess.Popen[bytes]]]:
    project = Project.load(init(tmp_path / "shop").root)
    log = (project.root / ".buttress" / "owner.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "owner", "--project", str(project.root)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **source_env()},
    )
    log.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                owner_status(socket_path(project.database))
                break
            except ButtressError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        yield project, process
    finally:
        process.terminate()
        process.wait(30)


def test_a_daemon_refuses_three_200_mb_lines_and_more_connections_than_its_cap_and_stays_small(
    daemon: tuple[Project, subprocess.Popen[bytes]],
) -> None:
    project, process = daemon
    path = socket_path(project.database)
    before = owner_status(path)["owner"]
    for _ in range(3):
        with connect(path) as connection:
            send_until_refused(connection, 200 << 20)
            assert answer(connection)["error"]["code"] == "limit.exceeded"
    held: list[socket.socket] = []
    try:
        held.extend(connect(path) for _ in range(MAX_CONNECTIONS))
        refused = []
        deadline = time.monotonic() + 20
        while len(refused) < 5:  # once the owner has taken the held ones in, every other is refused
            with connect(path) as extra:
                send(extra, request("limits"))
                said = answer(extra)
            if "error" in said:
                refused.append(said["error"]["code"])
            assert time.monotonic() < deadline, said
    finally:
        for connection in held:
            connection.close()
    for connection_closed_early in range(3):  # and clients gone mid-answer
        # (a daemon still counting the held connections may close this one first: a broken pipe here)
        with connect(path) as connection, contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(request("describe"))
        del connection_closed_early
    deadline = time.monotonic() + 30
    while True:
        try:
            after = owner_status(path)
            break
        except ButtressError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert refused == ["limit.exceeded"] * 5
    assert after["owner"]["pid"] == process.pid == before["pid"]
    assert after["owner"]["peak_rss_mb"] - before["peak_rss_mb"] < 64, (before, after["owner"])
    log = (project.root / ".buttress" / "owner.log").read_text()
    assert "Traceback" not in log and "Exception in thread" not in log, log


@pytest.mark.anyio
async def test_a_server_whose_owner_went_away_answers_structured_errors_and_still_lists_its_tools(
    served: tuple[Runtime, ChannelServer],
) -> None:
    _, channel = served
    server = build_server(RemoteRuntime.attach(channel.path), agent="test-agent")
    async with Client(server) as client:
        channel.close()  # the owner is gone before this server learned its actions
        failed = await client.call_tool("app_fill", {})
        listed = {tool.name for tool in (await client.list_tools()).tools}
    assert error_of(failed)["code"] == "engine.owner_gone"
    assert "describe_app" in listed
