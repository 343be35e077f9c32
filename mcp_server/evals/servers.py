"""The ``buttress serve`` processes of an evaluation run, and the transports that reach them.

A run's server is a subprocess the runner owns, so that a fault can SIGKILL it and the next
connection restarts it:

* over HTTP, ``HttpServer`` is one ``buttress serve --http`` process on a free 127.0.0.1 port;
  every session of the agent connects to it with the agent's bearer token, and a restart reuses
  the port;
* over stdio, every session spawns its own ``buttress serve``, which attaches to the project's owner
  (the project daemon, started by the first); ``StdioServers`` keeps the processes so a fault can
  kill them all with the owner, and a reconnecting session spawns a new one (and a new owner);
* in process (``InProcessServer``, the test suite's fast path for scripted agents): the project is
  opened here as ``buttress serve`` opens it, and each session is an in-memory MCP connection to
  the server object; a fault closes every connection and the runtime, and the next session opens
  it again.

A fault kills the process that owns the project's database, and ``kill_owner`` is the one place
that finds and kills it (the project daemon, or the ``buttress serve --http`` that owns it).

``StdioServers.transport`` and ``InProcessServer.transport`` are MCP ``Transport``s (what
``mcp.Client`` accepts): the SDK's own ``stdio_client`` hides the process, and a fault needs it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.abc
import mcp_types
from anyio.streams.text import TextReceiveStream
from mcp.shared.message import SessionMessage

from runtime.errors import ButtressError, Code

if TYPE_CHECKING:
    from mcp_server.project import BackgroundRuntime
    from mcp_server.server import ButtressServer

START_TIMEOUT_S = 60.0
"""How long a server may take to listen (a loaded CI machine starts Python slowly)."""
STOP_GRACE_S = 10.0


def server_env() -> dict[str, str]:
    """What a ``buttress serve`` child needs besides the inherited environment: this installation on
    the import path (also when run from a checkout) and the operator secret the project was seeded
    with (``BUTTRESS_OPERATOR_KEY``, when set), so the audit anchor it signs stays valid."""
    source = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path}
    if "BUTTRESS_OPERATOR_KEY" in os.environ:
        env["BUTTRESS_OPERATOR_KEY"] = os.environ["BUTTRESS_OPERATOR_KEY"]
    return env


def serve_argv(project: Path, agent: str, *extra: str) -> list[str]:
    """``buttress serve`` for ``project`` speaking for ``agent``, run by this interpreter."""
    return [sys.executable, "-m", "mcp_server", "serve", "--project", str(project), "--agent", agent, *extra]


def shell_command(argv: list[str], env: dict[str, str]) -> str:
    """``argv`` as one shell command line that sets ``env`` itself (``env K=V … argv``), for agents
    that take a server command as a string."""
    prefix = ["env", *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []
    return shlex.join([*prefix, *argv])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_of(project: Path) -> Path:
    """The database file of the project in ``project`` (as its ``buttress.toml`` names it)."""
    from mcp_server.project import Project

    return Project.load(project).database


def owner_pid(database: Path) -> int | None:
    """The pid of the process that owns ``database``: the one listening on its socket
    (``channel.socket_path``), named by the socket's peer credentials. None when no process serves
    it (not open yet, or its owner is gone), and where peer credentials are not available (Linux
    has them)."""
    from mcp_server.channel import socket_path

    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(socket_path(database)))
            raw = probe.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
        except OSError:
            return None
    pid, _, _ = struct.unpack("3i", raw)
    return int(pid) or None


async def kill_owner(database: Path, started: Iterable[anyio.abc.Process]) -> int:
    """SIGKILL the process that owns ``database`` and wait until it is gone: the one place a fault
    kills. ``started`` are the server processes the runner started (reaped here); while none of
    them owns the database yet (one is still opening after an earlier kill), the kill waits a
    bounded time for one to, and only then kills every one of them. Returns how many processes
    died."""
    live = [process for process in started if process.returncode is None]
    pid = await anyio.to_thread.run_sync(_wait_owner, database, live)
    if pid is None:
        victims = live
    else:
        victims = [process for process in live if process.pid == pid]
        if not victims:  # an owner the runner did not start: killed by pid, gone once its socket closes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(_wait_closed, database)
            return 1
    for process in victims:
        await _sigkill(process)
    return len(victims)


def _wait_owner(database: Path, live: list[anyio.abc.Process]) -> int | None:
    """The owner's pid, waiting (a bounded time) while a started server is still opening."""
    deadline = time.monotonic() + STOP_GRACE_S
    while (pid := owner_pid(database)) is None and live and time.monotonic() < deadline:
        if all(process.returncode is not None for process in live):
            return None
        time.sleep(0.02)
    return pid


def _wait_closed(database: Path) -> None:
    """Wait (a bounded time) until nothing listens on the database's socket."""
    deadline = time.monotonic() + STOP_GRACE_S
    while owner_pid(database) is not None and time.monotonic() < deadline:
        time.sleep(0.02)


async def _sigkill(process: anyio.abc.Process) -> None:
    """SIGKILL ``process`` (a no-op once it has exited) and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
    with anyio.move_on_after(STOP_GRACE_S):
        await process.wait()


async def _stop(process: anyio.abc.Process) -> None:
    """SIGTERM, a grace period to close the database cleanly, then SIGKILL."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with anyio.move_on_after(STOP_GRACE_S):
            await process.wait()
    await _sigkill(process)


@dataclass
class HttpServer:
    """``buttress serve --http`` on 127.0.0.1 for one run; killed and restarted by faults."""

    project: Path
    agent: str
    log: Path
    port: int = field(default_factory=free_port)
    starts: int = 0
    _process: anyio.abc.Process | None = None
    _logfile: IO[bytes] | None = None
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def argv(self) -> list[str]:
        return serve_argv(self.project, self.agent, "--http", "--port", str(self.port))

    async def ensure_running(self) -> None:
        """Start the server unless it runs; return once it accepts connections."""
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                await self._start()

    async def _start(self) -> None:
        if self._logfile is None:
            self._logfile = self.log.open("ab")
        self._process = await anyio.open_process(
            self.argv,
            env={**os.environ, **server_env()},
            stdin=subprocess.DEVNULL,
            stdout=self._logfile,
            stderr=self._logfile,
        )
        self.starts += 1
        await self._wait_listening(self._process)

    async def _wait_listening(self, process: anyio.abc.Process) -> None:
        with anyio.move_on_after(START_TIMEOUT_S):
            while process.returncode is None:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", self.port)
                except OSError:
                    await anyio.sleep(0.05)
                    continue
                await stream.aclose()
                return
        raise ButtressError(
            Code.INTERNAL,
            f"buttress serve --http did not listen on port {self.port}"
            + (f" (it exited with {process.returncode})" if process.returncode is not None else ""),
            hint=f"Read the server's log: {self.log}",
            details={"log": str(self.log)},
        )

    async def kill(self) -> int:
        """SIGKILL the process owning the database (a fault); how many processes died (0 or 1)."""
        if self._process is None:
            return 0
        return await kill_owner(database_of(self.project), [self._process])

    async def stop(self) -> None:
        """Stop the server cleanly (it checkpoints the database and writes the audit anchor)."""
        if self._process is not None:
            await _stop(self._process)
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None


@dataclass
class StdioServers:
    """The ``buttress serve`` processes spawned by the stdio sessions of one run."""

    project: Path
    agent: str
    log: Path
    starts: int = 0
    _live: set[anyio.abc.Process] = field(default_factory=set)

    @property
    def argv(self) -> list[str]:
        return serve_argv(self.project, self.agent)

    async def kill(self) -> int:
        """SIGKILL the process owning the database (a fault): the servers attached to it answer
        ``engine.owner_gone`` and open the project again on their next call. How many died."""
        return await kill_owner(database_of(self.project), list(self._live))

    async def stop(self) -> None:
        """Stop the project's owner cleanly (the sessions' servers have ended with their sessions)."""
        from mcp_server.owner import stop_owner
        from mcp_server.project import Project

        await anyio.to_thread.run_sync(lambda: stop_owner(Project.load(self.project), timeout=STOP_GRACE_S))

    @asynccontextmanager
    async def transport(self) -> AsyncIterator[tuple[Any, Any]]:
        """Spawn one server and yield the MCP read and write streams of its stdio (a ``Transport``)."""
        with self.log.open("ab") as logfile:
            process = await anyio.open_process(self.argv, env={**os.environ, **server_env()}, stderr=logfile)
            self.starts += 1
            self._live.add(process)
            try:
                async with _pipes(process) as streams:
                    yield streams
            finally:
                self._live.discard(process)
                await _close_stdio(process)


@dataclass
class InProcessServer:
    """The project served in this process: its runtime opened as ``buttress serve`` opens it (the
    owner, with its socket and its scheduler) and one MCP server object over it, reached through an
    in-memory transport per session. A fault ends every session's connection (the client sees the
    connection close, as when a process dies) and closes the runtime; the next session opens the
    project again. What a scripted run needs, without starting a Python process per session."""

    project: Path
    agent: str
    starts: int = 0
    _runtime: BackgroundRuntime | None = None
    _server: ButtressServer | None = None
    _sessions: set[anyio.CancelScope] = field(default_factory=set)
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def _serving(self) -> ButtressServer:
        async with self._lock:
            if self._server is None:
                from mcp_server.project import BackgroundRuntime, Project
                from mcp_server.server import build_server

                project = Project.load(self.project)
                runtime = BackgroundRuntime(project)
                runtime.start()
                self._runtime = runtime
                self._server = build_server(runtime, agent=self.agent, policy=project.policy())
                self.starts += 1
            return self._server

    @asynccontextmanager
    async def transport(self) -> AsyncIterator[tuple[Any, Any]]:
        """One in-memory connection to the server (started first if needed): the client's read and
        write streams. The connection ends when the client leaves or a fault kills the server."""
        from mcp.shared.memory import create_client_server_memory_streams

        lowlevel = (await self._serving())._lowlevel_server  # as the SDK's own InMemoryTransport does
        async with (
            create_client_server_memory_streams() as (client, server),
            anyio.create_task_group() as tasks,
        ):
            scope = anyio.CancelScope()
            self._sessions.add(scope)

            async def serve() -> None:
                with scope:
                    await lowlevel.run(server[0], server[1], lowlevel.create_initialization_options())
                for stream in server:  # the server is gone: the client's reads end, its writes fail
                    await stream.aclose()

            tasks.start_soon(serve)
            try:
                yield client
            finally:
                self._sessions.discard(scope)
                scope.cancel()

    async def kill(self) -> int:
        """End every connection and close the runtime (a fault); 1 when a server was running."""
        return await self.stop()

    async def stop(self) -> int:
        """Close the connections and the runtime (checkpointing the database); 1 when it ran."""
        async with self._lock:
            for scope in list(self._sessions):
                scope.cancel()
            self._sessions.clear()
            runtime, self._runtime, self._server = self._runtime, None, None
        if runtime is None:
            return 0
        await anyio.to_thread.run_sync(_close_opened, runtime)
        return 1


def _close_opened(runtime: BackgroundRuntime) -> None:
    """Close a runtime, once it has finished opening (one still opening would be left open)."""
    with contextlib.suppress(Exception):  # it could not open: there is nothing to close
        runtime.get()
    runtime.close()


@asynccontextmanager
async def _pipes(process: anyio.abc.Process) -> AsyncIterator[tuple[Any, Any]]:
    """Newline-delimited JSON-RPC over the process's stdin and stdout, as the SDK's memory streams.
    When the process dies the read stream ends, so a waiting request fails instead of hanging."""
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    incoming_writer, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def read() -> None:
        buffer = ""
        async with incoming_writer:
            with contextlib.suppress(
                anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError
            ):
                async for chunk in TextReceiveStream(stdout):
                    lines = (buffer + chunk).split("\n")
                    buffer = lines.pop()
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            message: SessionMessage | Exception = SessionMessage(
                                mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                            )
                        except ValueError as error:
                            message = error
                        await incoming_writer.send(message)

    async def write() -> None:
        try:
            async with outgoing_reader:
                async for item in outgoing_reader:
                    text = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send((text + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await incoming_writer.aclose()  # the server is gone: end the session's reads too

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        tasks.start_soon(write)
        try:
            yield incoming, outgoing
        finally:
            tasks.cancel_scope.cancel()
            for stream in (incoming, outgoing, incoming_writer, outgoing_reader):
                await stream.aclose()


async def _close_stdio(process: anyio.abc.Process) -> None:
    """Close the server's stdin (it shuts down cleanly), then escalate if it lingers."""
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
        with anyio.move_on_after(STOP_GRACE_S):
            await process.wait()
        await _stop(process)
