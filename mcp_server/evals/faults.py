"""Fault injection: SIGKILL the run's server at a named step or at a random one.

A step is one tool call of the agent, counted from 1 across all its sessions (retries are not new
steps). A fault is written ``kill@STEP[:WHEN]``:

* ``kill@3`` — at the agent's third call;
* ``kill@deploy`` / ``kill@deploy#2`` — at its first (second) call of ``deploy``;
* ``kill@random`` — at a call drawn from the first ``fault_horizon`` calls with the run's seed
  (each ``kill@random`` draws another one).

``WHEN`` is ``before`` (the call meets a dead server) or ``after`` (the call is answered — its
effect committed — and the server is killed before the agent reads the answer, which is lost). The
default is ``after``, the harder one; ``kill@random`` draws it too unless given. Either way the
server is restarted when the agent reconnects, and the agent retries (``agent.py`` says which
calls it retries by itself).

>>> plan = FaultPlan.of(["kill@deploy#2:before", "kill@3"], seed=1, horizon=10)
>>> [(k.step, k.tool, k.occurrence, k.when) for k in plan.kills]
[(None, 'deploy', 2, 'before'), (3, None, 1, 'after')]
>>> kill = plan.due(step=3, tool="query", occurrence=1, when="after")
>>> kill.spec
'kill@3'
>>> plan.record(kill, step=3, tool="query", killed=1)
>>> plan.due(step=3, tool="query", occurrence=1, when="after") is None
True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True)
class Fired:
    """A kill that happened: at which step, on which call, how many server processes died."""

    spec: str
    step: int
    tool: str
    when: When
    killed: int


def check(spec: str) -> None:
    """Refuse a malformed fault (``config.invalid``)."""
    if not _SPEC.match(spec.strip()):
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"fault {spec!r} is not kill@STEP[:before|:after]",
            hint="Write kill@3, kill@deploy, kill@deploy#2, kill@random, optionally with :before or :after.",
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
