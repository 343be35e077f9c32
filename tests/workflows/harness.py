"""The crash harness for the workflow stories: a fake provider in its own process, a project whose
``buttress.toml`` declares connectors to it, and server *lives*: a real ``buttress serve`` over stdio,
driven by the MCP SDK's client, that ends in a SIGKILL — at a named crash point (``BUTTRESS_FAULTS``,
the process kills itself there) or at a random moment (the test kills it).

The server is started as ``sh -c 'echo $$ > PIDFILE; exec python -m mcp_server serve …'`` so that the
test knows the server's own process id (``exec`` keeps it) and can kill exactly that process.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from mcp_server.project import init
from tests.mcp_server.helpers import configure, source_env

POINTS = (
    "step.before_commit",
    "step.after_commit",
    "effect.before_send",
    "effect.after_send",
    "delivery.after_commit",
)
"""Every named crash point (runtime/workflows/faults.py): step boundaries and inside effects."""
STEP_AND_EFFECT_POINTS = POINTS[:4]
"""The points of an app without subscriptions."""


@dataclass
class Provider:
    """The fake payment provider and mail sink (tests/fakes/provider.py) as its own process."""

    process: subprocess.Popen[str]
    url: str

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/state", timeout=10) as response:
            state: dict[str, Any] = json.loads(response.read())
            return state


@contextlib.contextmanager
def provider(
    *, seed: int, fail_rate: float = 0.0, drop_rate: float = 0.0, decline_over: int = 10_000
) -> Iterator[Provider]:
    command = [
        sys.executable,
        "-m",
        "tests.fakes.provider",
        "--seed",
        str(seed),
        "--fail-rate",
        str(fail_rate),
        "--drop-rate",
        str(drop_rate),
        "--decline-over",
        str(decline_over),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **source_env()},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield Provider(process, line.split()[-1])
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def project(root: Path, base_url: str) -> Path:
    """A project whose agent may do everything but the operator's acts, with connectors to the provider
    and approvals off (the stories are about crashes, not about reviews)."""
    path = init(root, agent="agent").root
    configure(
        path,
        connectors={
            "payments": {"url": f"{base_url}/charges", "timeout_s": 2},
            "refunds": {"url": f"{base_url}/refunds", "timeout_s": 2},
            "mail": {"url": f"{base_url}/mail", "timeout_s": 2},
        },
        approvals={"severity": "none"},
    )
    return path


@dataclass
class Life:
    """One server process: the client talking to it, and how to kill it."""

    client: Client
    pidfile: Path
    killed: bool = False
    fired: bool = False
    """Whether the process died by itself (its crash point fired) before the test killed it."""

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        if self.killed:
            return
        pid = self.pid()
        self.fired = not self.alive()
        if pid is not None and not self.fired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.killed = True

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return True  # not started yet
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(") ")[-1][0] not in "ZX"
        except OSError:
            return False


def parameters(root: Path, pidfile: Path, faults: str | None) -> StdioServerParameters:
    serve = " ".join([sys.executable, "-m", "mcp_server", "serve", "--project", str(root)])
    env = {**source_env(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if faults:
        env["BUTTRESS_FAULTS"] = faults
    return StdioServerParameters(command="sh", args=["-c", f"echo $$ > {pidfile}; exec {serve}"], env=env)


@contextlib.asynccontextmanager
async def life(root: Path, faults: str | None = None) -> AsyncIterator[Life]:
    """A server life; it always ends killed (SIGKILL), whether or not its fault fired first."""
    pidfile = root / ".buttress" / "serve.pid"
    pidfile.unlink(missing_ok=True)
    current: Life | None = None
    try:
        async with Client(parameters(root, pidfile, faults)) as client:
            current = Life(client, pidfile)
            yield current
            current.kill()
    except Exception:  # the client's exit after the server was killed or died: expected here
        if current is None or not current.killed:
            raise
    finally:
        if current is not None:
            current.kill()
        await wait_gone(pidfile)


async def wait_gone(pidfile: Path) -> None:
    """Wait until the killed server's process is gone (its database lock released)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    with anyio.fail_after(20):
        while True:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().split(") ")[-1][0] in "ZX":
                        return
            except OSError:
                return
            await anyio.sleep(0.02)


async def attempt(call: Callable[[], Awaitable[Any]]) -> Any | None:
    """A call to a server that may die under it: its result, or None if the server went away (an
    error the server answered with still fails the test)."""
    try:
        return await call()
    except AssertionError:  # the server answered, with an error: a real failure
        raise
    except Exception:
        return None


@dataclass
class Trials:
    """The kill schedule of a story: a seeded mix of named crash points and random moments."""

    seed: int
    points: tuple[str, ...] = POINTS
    kills: int = 0
    cycle: int = 0
    by_point: dict[str, int] = field(default_factory=dict)
    random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def next_faults(self) -> tuple[str | None, float]:
        """The fault plan for the next life and the moment (s after start) to kill it if it is alive."""
        if self.random.random() < 0.6:
            point = self.points[self.cycle % len(self.points)]  # each point in turn
            self.cycle += 1
            return f"{point}:{self.random.randint(1, 3)}", 1.2
        return None, self.random.uniform(0.05, 0.8)

    def count(self, faults: str | None, *, fired: bool) -> None:
        self.kills += 1
        name = faults.split(":")[0] if faults and fired else "random"
        self.by_point[name] = self.by_point.get(name, 0) + 1


async def until(condition: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return True
        await anyio.sleep(0.05)
    return False
