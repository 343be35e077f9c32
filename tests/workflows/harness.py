"""The crash harness for the workflow stories: a fake provider in its own process, a project whose
``buttress.toml`` declares connectors to it, an agent — a real ``buttress serve`` over stdio driven by
the MCP SDK's client, which never owns the project — and *owner lives*: the project daemon
(``buttress owner``) started by the test with a fault plan, each life ending in a SIGKILL — at a named
crash point (``BUTTRESS_FAULTS``: the daemon kills itself there) or at a random moment (the test
kills it). The agent's session outlives the owners: after each kill, its next call attaches to the
next owner.

``BUTTRESS_STORY_KILLS=N`` runs the long trial: N kills, a seeded mix of named points and random
moments. Unset, each named point is fired once and one random kill is made (the default run).
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

from mcp_server.channel import owner_status, socket_path
from mcp_server.project import init
from runtime.errors import ButtressError
from tests.daemons import alive, daemons_under
from tests.mcp_server.helpers import configure, source_env

STORY_KILLS = int(os.environ["BUTTRESS_STORY_KILLS"]) if os.environ.get("BUTTRESS_STORY_KILLS") else None
"""The long trial's number of kills; None: the default run (each named point once, one random kill)."""

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
    """One life of the project's owner: a ``buttress owner`` process, and how it ended."""

    process: subprocess.Popen[bytes]
    killed: bool = False
    fired: bool = False
    """Whether the owner died by itself (its crash point fired) before the test killed it."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the owner unless its crash point did first; wait until it is gone."""
        if self.killed:
            return
        if self.alive():
            self.process.kill()
        else:
            self.fired = self.process.returncode == -signal.SIGKILL
        self.process.wait(20)
        self.killed = True


@dataclass
class Owners:
    """The owner lives of one project: each started by the test with its fault plan, each ended by a
    SIGKILL, whoever else may have started one meanwhile (an agent's session starts a daemon when it
    finds none: the test kills that one too, so each life's owner is the one it started)."""

    root: Path
    lives: list[Life] = field(default_factory=list)

    async def start(self, faults: str | None = None) -> Life:
        self.kill_all()
        env = {**os.environ, **source_env()}
        env.pop("BUTTRESS_FAULTS", None)
        if faults:
            env["BUTTRESS_FAULTS"] = faults
        log = (self.root / ".buttress" / "owner.log").open("ab")
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mcp_server", "owner", "--project", str(self.root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        life = Life(process)
        self.lives.append(life)
        with anyio.fail_after(60):
            while life.alive() and owner_pid(self.root) != life.pid:
                await anyio.sleep(0.02)
        return life

    def kill_all(self) -> None:
        """SIGKILL every owner of the project (the lives started here and any other daemon)."""
        for life in self.lives:
            life.kill()
        for pid in daemons_under(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in daemons_under(self.root)) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        """End the last life cleanly (SIGTERM: it checkpoints and lets go of the file)."""
        for life in self.lives:
            if life.alive():
                life.process.terminate()
                life.process.wait(30)
                life.killed = True
        self.kill_all()


def owner_pid(root: Path) -> int | None:
    try:
        return int(owner_status(socket_path(root / "app.duckdb"))["owner"]["pid"])
    except (ButtressError, KeyError, TypeError, ValueError):
        return None


@dataclass
class Agent:
    """An agent's MCP session: its own ``buttress serve`` over stdio (never the owner)."""

    client: Client
    pidfile: Path

    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def kill(self) -> None:
        """SIGKILL the agent's serve: the editor crashed. The owner, and the work, go on."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid(), signal.SIGKILL)


@contextlib.asynccontextmanager
async def agent(root: Path, name: str = "agent") -> AsyncIterator[Agent]:
    """An agent session for the story; a session whose serve was killed ends quietly."""
    pidfile = root / ".buttress" / f"{name}.pid"
    serve = " ".join([sys.executable, "-m", "mcp_server", "serve", "--project", str(root)])
    env = {**source_env(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    parameters = StdioServerParameters(
        command="sh", args=["-c", f"echo $$ > {pidfile}; exec {serve}"], env=env
    )
    session: Agent | None = None
    finished = False
    try:
        async with Client(parameters) as client:
            session = Agent(client, pidfile)
            yield session
            finished = True
    except Exception:  # the client's exit after its serve was killed is expected; nothing else is
        if not (finished and session is not None and not alive(session.pid())):
            raise


async def attempt(call: Callable[[], Awaitable[Any]]) -> Any | None:
    """A call while the owner may die under it: its result, or None if the owner went away (the
    agent's serve answers ``engine.owner_gone``; any other error still fails the test)."""
    try:
        return await call()
    except AssertionError as error:
        if "'engine.owner_gone'" in str(error):
            return None
        raise


@dataclass
class Trials:
    """The kill schedule of a story. The default run fires each named point once (a life whose point
    did not fire is tried again, a few times) and makes one random kill; the long trial
    (``BUTTRESS_STORY_KILLS``) is a seeded mix of named points in turn and random moments."""

    seed: int
    points: tuple[str, ...] = POINTS
    target: int | None = STORY_KILLS
    kills: int = 0
    cycle: int = 0
    by_point: dict[str, int] = field(default_factory=dict)
    random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def done(self) -> bool:
        if self.target is not None:
            return self.kills >= self.target
        return set(self.by_point) >= {*self.points, "random"} or self.kills >= 4 * len(self.points) + 2

    def next_faults(self) -> tuple[str | None, float]:
        """The fault plan for the next life and the moment (s after it started) to kill it if it lives."""
        if self.target is None:
            for point in self.points:
                if point not in self.by_point:
                    return f"{point}:1", 10.0  # it fires once the life's work reaches it
            return None, self.random.uniform(0.3, 1.0)
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
