"""The real ``buttress serve`` processes of an evaluation run, and the transports that reach them.

A run's server is a subprocess the runner owns, so that a fault can SIGKILL it and the next
connection restarts it:

* over HTTP, ``HttpServer`` is one ``buttress serve --http`` process on a free 127.0.0.1 port;
  every session of the agent connects to it with the agent's bearer token, and a restart reuses
  the port;
* over stdio, every session spawns its own ``buttress serve``, which attaches to the project's owner
  (the project daemon, started by the first); ``StdioServers`` keeps the processes so a fault can
  kill them all with the owner, and a reconnecting session spawns a new one (and a new owner).

``StdioServers.transport`` is an MCP ``Transport`` (what ``mcp.Client`` accepts): the SDK's own
``stdio_client`` hides the process, and a fault needs it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import mcp_types
from anyio.streams.text import TextReceiveStream
from mcp.shared.message import SessionMessage

from runtime.errors import ButtressError, Code

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
        """SIGKILL the server (a fault); returns how many processes were killed (0 or 1)."""
        if self._process is None or self._process.returncode is not None:
            return 0
        await _sigkill(self._process)
        return 1

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
        """SIGKILL every live server of the run and the project's owner (a fault); returns how many
        processes were killed."""
        from mcp_server.owner import alive

        victims = [p for p in self._live if p.returncode is None]
        owner = await anyio.to_thread.run_sync(_owner_pid, self.project)
        if owner is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(owner, signal.SIGKILL)
        for process in victims:
            await _sigkill(process)
        if owner is not None:
            with anyio.move_on_after(STOP_GRACE_S):
                while await anyio.to_thread.run_sync(alive, owner):
                    await anyio.sleep(0.02)
        return len(victims) + (owner is not None)

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


def _owner_pid(project: Path) -> int | None:
    """The pid of the process that owns ``project`` now, or None."""
    from mcp_server.channel import owner_status, socket_path
    from mcp_server.project import Project

    try:
        return int(owner_status(socket_path(Project.load(project).database))["owner"]["pid"])
    except (ButtressError, KeyError, TypeError, ValueError):
        return None


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
