"""The system tables of workflows, messages and effects (declared in ``store/migrations.py``), and
the SQL the planner writes over them (pure).

Every row records the spec version it was created under. A run keeps the version whose definition it
follows (``runs.version``) and the actions that definition calls (``runs.calls``), so a proposal
that drops or changes one of them can find the runs it would strand. A message keeps its topic's
delivery (``external``) as it was when published; ``held`` says why a message is held back (its
topic was dropped), and ``cursors`` hold each subscription's position in its topic.
"""

from __future__ import annotations

from typing import Final

from runtime.migrate.ddl import string

# Run statuses are declared in ``status``; these stay importable from here for older importers.
from runtime.workflows.status import RUN_FILTERS as RUN_FILTERS
from runtime.workflows.status import TERMINAL as TERMINAL
from runtime.workflows.status import RunFilter as RunFilter
from runtime.workflows.status import status_not_in

EFFECT_STATES: Final = ("unknown", "pending", "succeeded", "rejected", "resolved")
RESOLUTIONS: Final = ("succeeded", "rejected")
"""What the operator may say an effect with an unknown outcome did."""


def undelivered(topic: str, alias: str = "m") -> str:
    """SQL condition: a message of ``topic`` some consumer still has to receive (an external consumer
    has not acknowledged it, or an active subscription has not reached it), and not held back."""
    return (
        f"{alias}.topic = {string(topic)} AND {alias}.held IS NULL AND (({alias}.external AND "
        f"{alias}.acked_at IS NULL) OR EXISTS (SELECT 1 FROM _buttress.cursors AS c WHERE c.active AND "
        f"c.topic = {alias}.topic AND c.last_seq < {alias}.seq))"
    )


def in_flight(condition: str = "TRUE") -> str:
    """SQL: the runs not yet in a terminal state that meet ``condition``."""
    return (
        "SELECT run_id, workflow, version, status, step FROM _buttress.runs "
        f"WHERE {status_not_in(TERMINAL)} AND ({condition})"
    )
