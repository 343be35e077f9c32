"""Fault injection: SIGKILL the process that owns the run's database at a named step or at a random one.

A step is one tool call of the agent, counted from 1 across all its sessions (a scripted agent's
retries are not new steps; an external agent's are, as the runner cannot tell them apart). A fault
is written ``kill@STEP[:WHEN]``:

* ``kill@3`` — at the agent's third call;
* ``kill@deploy`` / ``kill@deploy#2`` — at its first (second) call of ``deploy``;
* ``kill@random`` — at a call drawn from the first ``fault_horizon`` calls with the run's seed
  (each ``kill@random`` draws another one).

``WHEN`` is ``before`` (the call meets a dead server) or ``after`` (the call is answered — its
effect committed — and the server is killed before the agent reads the answer, which is lost). The
default is ``after``, the harder one; ``kill@random`` draws it too unless given. Either way the
server is restarted when the agent reconnects, and the agent retries (``agent.py`` says which
calls it retries by itself).

A kill that names no step the server could ever see (step 0, occurrence 0, a tool the server does
not have) is refused before the run (``check``). One that names a step the agent never reached
does not fire: ``FaultPlan.missed`` lists it, and the run fails saying so.

>>> plan = FaultPlan.of(["kill@deploy#2:before", "kill@3"], seed=1, horizon=10)
>>> [(k.step, k.tool, k.occurrence, k.when) for k in plan.kills]
[(None, 'deploy', 2, 'before'), (3, None, 1, 'after')]
>>> kill = plan.due(step=3, tool="query", occurrence=1, when="after")
>>> kill.spec
'kill@3'
>>> plan.record(kill, step=3, tool="query", killed=1)
>>> plan.due(step=3, tool="query", occurrence=1, when="after") is None
True
>>> [k.spec for k in plan.missed()]
['kill@deploy#2:before']
"""

from __future__ import annotations

import datetime
import itertools
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import anyio

from runtime.errors import Code, ConfigError

When = Literal["before", "after"]
WHENS: tuple[When, ...] = ("before", "after")
_SPEC = re.compile(r"^kill@(?P<at>random|\d+|[a-z_][a-z0-9_]*(?:#\d+)?)(?::(?P<when>before|after))?$")


@dataclass(frozen=True)
class Kill:
    """One kill, resolved to a step number or a tool's occurrence."""

    spec: str
    when: When
    step: int | None = None
    tool: str | None = None
    occurrence: int = 1

    def matches(self, step: int, tool: str, occurrence: int) -> bool:
        if self.step is not None:
            return step == self.step
        return tool == self.tool and occurrence == self.occurrence

    def describe(self) -> str:
        """Where it was due, in words (``call 3``, ``call 2 of deploy``)."""
        if self.step is not None:
            return f"call {self.step}"
        return f"call {self.occurrence} of {self.tool}"


@dataclass(frozen=True)
class Fired:
    """A kill that happened: at which step, on which call, how many server processes died, when."""

    spec: str
    step: int
    tool: str
    when: When
    killed: int
    at: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat())
    """The moment of the kill (UTC, as the audit log writes times): calls after it are the recovery."""


def check(spec: str, tools: Iterable[str] | None = None) -> None:
    """Refuse a fault that is malformed or can never fire (``config.invalid``): step 0, occurrence 0,
    or — given the server's ``tools`` — a tool it does not have (``app_`` tools come with deploys,
    so any ``app_<name>`` is taken)."""
    found = _SPEC.match(spec.strip())
    if not found:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"fault {spec!r} is not kill@STEP[:before|:after]",
            hint="Write kill@3, kill@deploy, kill@deploy#2, kill@random, optionally with :before or :after.",
            details={"fault": spec},
        )
    at = found["at"]
    tool, _, nth = at.partition("#")
    never = None
    if at.isdigit() and int(at) == 0:
        never = "steps count from 1"
    elif nth and int(nth) == 0:
        never = "a tool's calls count from 1"
    elif tools is not None and at != "random" and not at.isdigit():
        known = set(tools)
        if tool not in known and not tool.startswith("app_"):
            never = f"the server has no tool {tool!r}"
    if never is not None:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"fault {spec!r} can never fire: {never}",
            hint="Name a step from 1, a tool the server has (tools/list; app_<action> for an action's "
            "tool) with an occurrence from 1, or kill@random.",
            details={"fault": spec},
        )


@dataclass
class FaultPlan:
    """The kills of one run, and those that fired."""

    kills: list[Kill]
    fired: list[Fired] = field(default_factory=list)

    @classmethod
    def of(cls, specs: list[str] | tuple[str, ...], *, seed: int, horizon: int) -> FaultPlan:
        """Resolve ``specs``; ``kill@random`` draws distinct steps in 1..horizon from ``seed``."""
        rng = random.Random(seed)
        kills: list[Kill] = []
        taken: set[int] = set()
        for raw in specs:
            spec = raw.strip()
            check(spec)
            found = _SPEC.match(spec)
            assert found is not None
            at = found["at"]
            when: When | None = "before" if found["when"] == "before" else "after" if found["when"] else None
            if at == "random":
                free = [n for n in range(1, horizon + 1) if n not in taken]
                if not free:
                    continue
                step = rng.choice(free)
                taken.add(step)
                drawn: When = rng.choice(WHENS)
                kills.append(Kill(spec=f"{spec} -> kill@{step}", when=when or drawn, step=step))
            elif at.isdigit():
                kills.append(Kill(spec=spec, when=when or "after", step=int(at)))
            else:
                tool, _, nth = at.partition("#")
                kills.append(Kill(spec=spec, when=when or "after", tool=tool, occurrence=int(nth or 1)))
        return cls(kills=kills)

    def due(self, *, step: int, tool: str, occurrence: int, when: When) -> Kill | None:
        """The kill due at this moment of this call, if any (each kill fires once)."""
        fired = {f.spec for f in self.fired}
        for kill in self.kills:
            if kill.when == when and kill.spec not in fired and kill.matches(step, tool, occurrence):
                return kill
        return None

    def record(self, kill: Kill, *, step: int, tool: str, killed: int) -> None:
        self.fired.append(Fired(spec=kill.spec, step=step, tool=tool, when=kill.when, killed=killed))

    def missed(self) -> list[Kill]:
        """The kills that did not fire (the agent never reached their call)."""
        fired = {f.spec for f in self.fired}
        return [kill for kill in self.kills if kill.spec not in fired]


@dataclass
class Injector:
    """Counts the agent's calls and kills the server when the plan says so: what a scripted agent's
    sessions share, and what the runner puts between an external agent and its server."""

    plan: FaultPlan
    kill: Callable[[], Awaitable[int]]
    """Kills the process that owns the database; how many processes died."""
    steps: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    per_tool: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    def next_step(self, tool: str) -> tuple[int, int]:
        """A new call of ``tool``: its step number and which call of that tool it is."""
        self.per_tool[tool] = self.per_tool.get(tool, 0) + 1
        self.calls += 1
        return next(self.steps), self.per_tool[tool]

    async def fault(self, step: int, tool: str, occurrence: int, when: When) -> bool:
        """Kill the server if a fault is due at this moment of this call; True when one fired."""
        kill = self.plan.due(step=step, tool=tool, occurrence=occurrence, when=when)
        if kill is None:
            return False
        with anyio.CancelScope(shield=True):  # the connection it ends may cancel its caller: record it still
            killed = await self.kill()
            self.plan.record(kill, step=step, tool=tool, killed=killed)
        return True
