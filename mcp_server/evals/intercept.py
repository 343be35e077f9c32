"""Faults for an external agent: the runner stands between the agent and its server, counts the
agent's tool calls and kills the server when the fault plan says so.

An external agent's calls are its own, so the runner cannot count them from inside; it sees them on
the way instead, and only when the run has faults to inject (otherwise the agent reaches the server
directly):

* over HTTP, ``HttpTap`` is a reverse proxy on 127.0.0.1 (the URL the agent is given) in front of
  the run's ``buttress serve --http`` (``HttpServer``, restarted on its own port after a kill). A
  request carrying ``tools/call`` is a step;
* over stdio, the agent's server command is ``python -m mcp_server.evals.relay SOCKET``, which joins
  its standard input and output to ``StdioTap``'s Unix socket; for each such connection the tap
  starts a real ``buttress serve`` (``StdioServers``) and passes JSON-RPC lines both ways.

Each ``tools/call`` goes through the ``Injector`` shared with the scripted agents (``faults.py``): a
kill ``before`` happens as the request arrives, which then never reaches a server; a kill ``after``
happens once the server has answered, and the answer is dropped. Either way the agent's connection
ends as a dead server's would; the server starts again when the agent reconnects. Every ``tools/call``
the agent sends is a step, its own retries included.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import mcp_types
from mcp.shared.message import SessionMessage

from mcp_server.evals.faults import Injector
from mcp_server.evals.servers import HttpServer, StdioServers, free_port

MAX_BODY = 64 * 1024 * 1024
"""The largest request or response the tap holds (the server's own limits are far lower)."""
READ_SIZE = 65536


def called_tool(message: Any) -> tuple[Any, str] | None:
    """``(id, tool name)`` of a JSON-RPC ``tools/call`` request, else None."""
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return message.get("id"), str(name)


async def _step(injector: Injector, tool: str) -> tuple[int, int, bool]:
    """A new call of ``tool``: its step, its occurrence, and whether a kill fired before it."""
    step, occurrence = injector.next_step(tool)
    return step, occurrence, await injector.fault(step, tool, occurrence, "before")


# ------------------------------------------------------------------------------------------- HTTP


class HttpTap:
    """A reverse proxy in front of the run's HTTP server that counts ``tools/call`` requests."""

    def __init__(self, server: HttpServer, injector: Injector) -> None:
        self.server = server
        self.injector = injector
        self.port = 0

    @property
    def url(self) -> str:
        """What the agent connects to."""
        return f"http://127.0.0.1:{self.port}/mcp"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HttpTap]:
        """Listen on a free port of 127.0.0.1 for the length of the block."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=free_port())
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        async with listener, anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, self._connection)
            try:
                yield self
            finally:
                tasks.cancel_scope.cancel()

    async def _connection(self, agent: anyio.abc.SocketStream) -> None:
        """One connection of the agent: requests in turn (keep-alive), each over its own
        connection to the server."""
        side = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        async with agent:
            with contextlib.suppress(
                OSError, anyio.BrokenResourceError, anyio.EndOfStream, h11.ProtocolError
            ):
                while True:
                    request = await _read_message(agent, side, h11.Request)
                    if request is None:
                        return
                    head, body = request
                    assert isinstance(head, h11.Request)
                    if not await self._exchange(agent, side, head, body):
                        return  # a kill ended the connection, as the server's death would
                    if side.our_state is h11.MUST_CLOSE or side.their_state is h11.MUST_CLOSE:
                        return
                    side.start_next_cycle()

    async def _exchange(
        self, agent: anyio.abc.SocketStream, side: h11.Connection, head: h11.Request, body: bytes
    ) -> bool:
        """Forward one request and its answer; False when a fault ended the connection."""
        call = None
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            call = called_tool(json.loads(body)) if body else None
        step = occurrence = 0
        if call is not None:
            step, occurrence, killed = await _step(self.injector, call[1])
            if killed:
                return False
        await self.server.ensure_running()
        backend = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_BODY)
        host = f"127.0.0.1:{self.server.port}".encode()
        headers = [(k, v) for k, v in head.headers if k.lower() not in {b"host", b"connection"}]
        async with await anyio.connect_tcp("127.0.0.1", self.server.port) as upstream:
            outgoing = h11.Request(
                method=head.method,
                target=head.target,
                headers=[(b"host", host), (b"connection", b"close"), *headers],
            )
            await _send(upstream, backend, outgoing, h11.Data(data=body), h11.EndOfMessage())
            if call is None:  # streamed through as it comes (a GET stream may last the whole session)
                return await _relay(upstream, backend, agent, side)
            answer = await _read_message(upstream, backend, h11.Response)
        if answer is None:
            return False
        if await self.injector.fault(step, call[1], occurrence, "after"):
            return False  # the answer is lost with the server
        response, content = answer
        assert isinstance(response, h11.Response)
        kept = [(k, v) for k, v in response.headers if k.lower() not in {b"connection", b"transfer-encoding"}]
        if not any(k.lower() == b"content-length" for k, _ in kept):
            kept.append((b"content-length", str(len(content)).encode()))
        reply = h11.Response(status_code=response.status_code, headers=kept, reason=response.reason)
        await _send(agent, side, reply, h11.Data(data=content), h11.EndOfMessage())
        return True


async def _send(stream: anyio.abc.ByteSendStream, side: h11.Connection, *events: h11.Event) -> None:
    for event in events:
        data = side.send(event)
        if data:
            await stream.send(data)


async def _read_message(
    stream: anyio.abc.ByteReceiveStream, side: h11.Connection, kind: type
) -> tuple[h11.Request | h11.Response, bytes] | None:
    """One whole HTTP message (its head and body) of ``kind``, or None when the peer closed first."""
    head: h11.Request | h11.Response | None = None
    body = bytearray()
    while True:
        event = side.next_event()
        if event is h11.NEED_DATA:
            try:
                chunk = await stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                chunk = b""
            side.receive_data(chunk)
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, kind) and isinstance(event, h11.Request | h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return (head, bytes(body)) if head is not None else None


async def _relay(
    upstream: anyio.abc.SocketStream,
    backend: h11.Connection,
    agent: anyio.abc.SocketStream,
    side: h11.Connection,
) -> bool:
    """Pass the server's answer to the agent as it arrives; False when the server went away first."""
    while True:
        event = backend.next_event()
        if event is h11.NEED_DATA:
            try:
                chunk = await upstream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                chunk = b""
            backend.receive_data(chunk)
            continue
        if isinstance(event, h11.ConnectionClosed) or not isinstance(event, h11.Event):
            return False
        if isinstance(event, h11.Response):
            headers = [(k, v) for k, v in event.headers if k.lower() != b"connection"]
            event = h11.Response(status_code=event.status_code, headers=headers, reason=event.reason)
        elif isinstance(event, h11.InformationalResponse):
            continue
        await _send(agent, side, event)
        if isinstance(event, h11.EndOfMessage):
            return True


# ------------------------------------------------------------------------------------------ stdio


class StdioTap:
    """The Unix socket the agent's relays connect to; a real ``buttress serve`` behind each one."""

    def __init__(self, servers: StdioServers, injector: Injector) -> None:
        self.servers = servers
        self.injector = injector
        self._directory = Path(tempfile.mkdtemp(prefix="buttress-tap-"))  # short: a socket path
        self.path = self._directory / "tap.sock"

    def argv(self, python: str) -> list[str]:
        """The server command the agent is given: the relay, joined to this tap."""
        return [python, "-m", "mcp_server.evals.relay", str(self.path)]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[StdioTap]:
        """Listen for the length of the block."""
        listener = await anyio.create_unix_listener(self.path)
        try:
            async with listener, anyio.create_task_group() as tasks:
                tasks.start_soon(listener.serve, self._connection)
                try:
                    yield self
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)

    async def _connection(self, relay: anyio.abc.SocketStream) -> None:
        async with relay, self.servers.transport() as (incoming, outgoing):
            pending: dict[Any, tuple[int, str, int]] = {}
            async with anyio.create_task_group() as tasks:

                async def up() -> None:
                    try:
                        await self._up(relay, outgoing, pending)
                    finally:  # either side ending ends the connection
                        tasks.cancel_scope.cancel()

                async def down() -> None:
                    try:
                        await self._down(relay, incoming, pending)
                    finally:
                        tasks.cancel_scope.cancel()

                tasks.start_soon(up)
                tasks.start_soon(down)

    async def _up(
        self,
        relay: anyio.abc.SocketStream,
        outgoing: anyio.abc.ObjectSendStream[SessionMessage],
        pending: dict[Any, tuple[int, str, int]],
    ) -> None:
        """The agent's lines to the server; a kill before a call ends the connection instead."""
        buffer = b""
        with contextlib.suppress(
            anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError
        ):
            while True:
                buffer += await relay.receive(READ_SIZE)
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except ValueError:
                        continue  # not JSON-RPC: a server would not answer it either
                    call = called_tool(message.model_dump(by_alias=True, exclude_unset=True))
                    if call is not None:
                        step, occurrence, killed = await _step(self.injector, call[1])
                        if killed:
                            return
                        pending[call[0]] = (step, call[1], occurrence)
                    await outgoing.send(SessionMessage(message))

    async def _down(
        self,
        relay: anyio.abc.SocketStream,
        incoming: anyio.abc.ObjectReceiveStream[SessionMessage | Exception],
        pending: dict[Any, tuple[int, str, int]],
    ) -> None:
        """The server's lines to the agent; a kill after a call drops its answer and ends the connection."""
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for item in incoming:
                if isinstance(item, Exception):
                    continue
                identifier = getattr(item.message, "id", None)
                answered = pending.pop(identifier, None) if identifier is not None else None
                if answered is not None:
                    step, tool, occurrence = answered
                    if await self.injector.fault(step, tool, occurrence, "after"):
                        return
                text = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                await relay.send(text.encode() + b"\n")
