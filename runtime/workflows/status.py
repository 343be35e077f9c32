"""The statuses of runs and steps, declared once, with the sets the code asks about and their SQL (pure).

A run is ``running`` (a step to take now, or after a retry's backoff), ``waiting`` (for a signal, a
message or a timer), ``compensating`` (undoing its completed steps, newest first) or ``blocked`` (an
effect's outcome is unknown: the operator retries or resolves it); then, for good, ``completed``,
``compensated``, ``failed`` or ``cancelled``. The sets below name what each caller means, and
``status_in`` / ``status_not_in`` write them into SQL, so a status is spelled only here.
"""

from __future__ import annotations

from collections.abc import Set
from enum import StrEnum
from typing import Final, Literal, get_args

from runtime.migrate.ddl import string


class RunStatus(StrEnum):
    """Where a run stands (``_buttress.runs.status``)."""

    RUNNING = "running"
    WAITING = "waiting"
    COMPENSATING = "compensating"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """How a step's (or a compensation's) record ended (``_buttress.steps.status``)."""

    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL: Final = frozenset(
    {RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED, RunStatus.CANCELLED}
)
"""Run states that never change again."""
ACTIVE: Final = frozenset(RunStatus) - TERMINAL
"""Runs not finished: what ``status='active'`` lists, and what a deploy must let carry on."""
SCHEDULABLE: Final = frozenset({RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPENSATING})
"""Runs the scheduler may advance (a blocked run waits for the operator)."""
READY: Final = frozenset({RunStatus.RUNNING, RunStatus.COMPENSATING})
"""Runs with a step to take as soon as their backoff (if any) is over; a waiting one is due only when
what it waits for comes, or its deadline passes."""
RETRYABLE: Final = frozenset({RunStatus.FAILED, RunStatus.BLOCKED})
"""Runs the operator's retry takes up again at their step."""

RunFilter = Literal[
    "active",
    "running",
    "waiting",
    "compensating",
    "blocked",
    "completed",
    "compensated",
    "failed",
    "cancelled",
]
"""A run's status, or ``active`` for every run not finished: what runs are listed by (spelled out for
the tools' JSON schema; a test holds it to ``RunStatus``)."""
RUN_FILTERS: Final[tuple[str, ...]] = get_args(RunFilter)


def literal(status: RunStatus | StepStatus) -> str:
    """A status as an SQL string literal (``'waiting'``)."""
    return string(status.value)


def status_in(statuses: Set[RunStatus], column: str = "status") -> str:
    """SQL condition: ``column`` holds one of ``statuses`` (``status IN ('running', 'waiting')``), listed
    in the order ``RunStatus`` declares them, so the same set always gives the same text."""
    return f"{column} IN ({_listed(statuses)})"


def status_not_in(statuses: Set[RunStatus], column: str = "status") -> str:
    """SQL condition: ``column`` holds none of ``statuses`` (``status NOT IN ('completed', …)``)."""
    return f"{column} NOT IN ({_listed(statuses)})"


def _listed(statuses: Set[RunStatus]) -> str:
    if not statuses:
        raise ValueError("an SQL status set needs at least one status")
    return ", ".join(literal(status) for status in RunStatus if status in statuses)
