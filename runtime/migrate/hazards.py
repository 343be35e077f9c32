"""The hazard catalogue: stable codes, severities and the advice that goes with them (pure).

A hazard is raised by the planner for one step and names the objects concerned; dry-run fills in
row counts and samples. Codes are stable: agents and the approval policy branch on them.
The H-numbers refer to the migration hazard checklist the planner was built against.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["info", "low", "medium", "high"]
SEVERITY_ORDER: Final[dict[str, int]] = {"info": 0, "low": 1, "medium": 2, "high": 3}


class HazardCode(StrEnum):
    DROP_ENTITY = "data.drop_entity"  # H03
    DROP_FIELD = "data.drop_field"  # H04
    LOSSY_TYPE_CHANGE = "data.lossy_type_change"  # H07, H45
    REQUIRED_FIELD = "data.required_field"  # H14
    VOLATILE_DEFAULT = "data.volatile_default"  # H42
    SET_NOT_NULL = "constraint.set_not_null"  # H16
    ADD_UNIQUE = "constraint.add_unique"  # H17
    ADD_CHECK = "constraint.add_check"  # H20
    DROP_CONSTRAINT = "constraint.dropped"  # H08
    RENAME_ENTITY = "compat.rename_entity"  # H09
    RENAME_FIELD = "compat.rename_field"  # H10
    DROP_NOT_NULL = "compat.drop_not_null"  # H13
    DEFAULT_CHANGED = "compat.default_changed"  # H15
    DROP_VIEW = "compat.drop_view"
    DROP_INVARIANT = "compat.drop_invariant"
    DROP_ACTION = "compat.drop_action"
    ACTION_BROKEN = "action.broken"
    TABLE_REBUILD = "rebuild.table_copy"  # H37, H43
    INDEX_FREEZES = "index.freezes_alters"  # H48
    TABLE_LOCK = "lock.table_exclusive"
    INVARIANT_TOO_SLOW = "invariant.too_slow"
    RUNS_IN_FLIGHT = "workflow.in_flight"
    RUNS_STRANDED = "workflow.stranded"
    MESSAGES_CONVERTED = "message.converted"
    MESSAGES_HELD = "message.held"
    MESSAGES_STRANDED = "message.stranded"
    SUBSCRIPTION_DROPPED = "subscription.dropped"


ADVICE: Final[dict[HazardCode, tuple[Severity, str]]] = {
    HazardCode.DROP_ENTITY: (
        "high",
        "Its rows are retained until finalize; read the dry-run's row count before deploying.",
    ),
    HazardCode.DROP_FIELD: (
        "high",
        "Its values are retained until finalize; check the dry-run's loss report first.",
    ),
    HazardCode.LOSSY_TYPE_CHANGE: (
        "high",
        "Values that do not convert fail the deploy; values that convert with loss are retained. Prefer a widening type.",
    ),
    HazardCode.REQUIRED_FIELD: (
        "high",
        "Give the field a default, or add it nullable, backfill, then make it NOT NULL.",
    ),
    HazardCode.VOLATILE_DEFAULT: ("info", "Existing rows all get the value computed at deploy time."),
    HazardCode.SET_NOT_NULL: ("medium", "Fails if NULLs exist; pass backfill to fill them in the same step."),
    HazardCode.ADD_UNIQUE: ("medium", "Fails if duplicates exist; the dry-run lists them."),
    HazardCode.ADD_CHECK: ("medium", "Fails if existing rows violate the check; the dry-run lists them."),
    HazardCode.DROP_CONSTRAINT: ("low", "Rows that the constraint kept out can be written afterwards."),
    HazardCode.RENAME_ENTITY: (
        "medium",
        "Readers using the old name (clients, queries) break; views and actions must be updated.",
    ),
    HazardCode.RENAME_FIELD: (
        "medium",
        "Readers using the old name (clients, queries) break; views and actions must be updated.",
    ),
    HazardCode.DROP_NOT_NULL: ("low", "Readers may now see NULLs; rolling back fails if NULLs were written."),
    HazardCode.DEFAULT_CHANGED: (
        "low",
        "Only future rows get the new default; writers relying on the old one change behaviour.",
    ),
    HazardCode.DROP_VIEW: ("low", "Readers of the view break."),
    HazardCode.DROP_INVARIANT: ("low", "The rule stops being enforced."),
    HazardCode.DROP_ACTION: ("low", "Callers of the action (and its app_ tool) break."),
    HazardCode.ACTION_BROKEN: (
        "high",
        "The engine does not bind the action against the target schema (or binds it with other types): "
        "replace the action in the same proposal (replace_action).",
    ),
    HazardCode.TABLE_REBUILD: (
        "info",
        "The table is copied in one transaction; writers to it wait for the deploy.",
    ),
    HazardCode.INVARIANT_TOO_SLOW: (
        "high",
        "Every mutation it meets would pay this check; rewrite it to touch few rows, or raise the budget.",
    ),
    HazardCode.RUNS_IN_FLIGHT: (
        "low",
        "Runs already started finish on the definition they started with; cancel them if they must not.",
    ),
    HazardCode.RUNS_STRANDED: (
        "high",
        "Runs in flight would next call an action, a topic or a connector the target cannot serve as "
        "their definition calls it: keep it compatible, or let the runs (the dry-run lists them) finish "
        "or cancel them first.",
    ),
    HazardCode.MESSAGES_CONVERTED: (
        "medium",
        "Undelivered messages lose the dropped payload fields; their values are retained, and a rollback "
        "or a redeploy restores them.",
    ),
    HazardCode.MESSAGES_HELD: (
        "medium",
        "Undelivered messages of the topic are held back, not delivered; re-adding the topic (or rolling "
        "back) releases them.",
    ),
    HazardCode.MESSAGES_STRANDED: (
        "high",
        "Undelivered messages cannot take the new payload shape (the dry-run lists them): make the new "
        "field nullable, keep the type, or let them be delivered first.",
    ),
    HazardCode.SUBSCRIPTION_DROPPED: (
        "low",
        "Messages it has not processed stay undelivered to it; adding it again resumes where it stopped.",
    ),
    HazardCode.INDEX_FREEZES: (
        "info",
        "DuckDB refuses most ALTERs on an indexed table; later changes to it rebuild it.",
    ),
    HazardCode.TABLE_LOCK: (
        "low",
        "On PostgreSQL the change holds an ACCESS EXCLUSIVE lock on these tables until it commits: every "
        "server's reads and writes of them wait behind it. It waits at most [limits] lane_wait_s for the "
        "lock (then engine.busy, nothing changed); deploy while the tables are quiet.",
    ),
}


MEASURED: Final[frozenset[HazardCode]] = frozenset(
    {HazardCode.INVARIANT_TOO_SLOW, HazardCode.ACTION_BROKEN, HazardCode.RUNS_STRANDED}
)
"""Hazards the dry-run raises from what it finds, not the planner from what could be: an invariant
timed on the real data, a statement the engine does not bind against the target schema, runs in
flight whose next steps the target cannot run."""


class Hazard(BaseModel):
    """One hazard of one step."""

    model_config = ConfigDict(frozen=True)

    code: HazardCode
    severity: Severity
    message: str
    hint: str
    objects: tuple[str, ...] = ()


def hazard(code: HazardCode, message: str, *objects: str) -> Hazard:
    severity, hint = ADVICE[code]
    return Hazard(code=code, severity=severity, message=message, hint=hint, objects=objects)


def at_least(hazards: list[Hazard], severity: Severity) -> list[Hazard]:
    """Hazards at or above a severity (for approval rules)."""
    floor = SEVERITY_ORDER[severity]
    return [h for h in hazards if SEVERITY_ORDER[h.severity] >= floor]
