"""The system tables of workflows, messages and effects, and the SQL the planner writes over them (pure).

Every row records the spec version it was created under. A run keeps the version whose definition it
follows (``runs.version``) and the actions that definition calls (``runs.calls``), so a proposal
that drops or changes one of them can find the runs it would strand. A message keeps its topic's
delivery (``external``) as it was when published; ``held`` says why a message is held back (its
topic was dropped), and ``cursors`` hold each subscription's position in its topic.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from runtime.migrate.ddl import string

TERMINAL: Final = ("completed", "compensated", "failed", "cancelled")
"""Run states that never change again."""
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
"""A run's status, or ``active`` for every run not finished: what runs are listed by."""
RUN_FILTERS: Final[tuple[str, ...]] = get_args(RunFilter)
EFFECT_STATES: Final = ("unknown", "pending", "succeeded", "rejected", "resolved")
RESOLUTIONS: Final = ("succeeded", "rejected")
"""What the operator may say an effect with an unknown outcome did."""

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS _buttress.runs (
        run_id VARCHAR PRIMARY KEY, workflow VARCHAR NOT NULL, version INTEGER NOT NULL,
        args JSON NOT NULL, args_hash VARCHAR NOT NULL, status VARCHAR NOT NULL, step INTEGER NOT NULL,
        calls VARCHAR[] NOT NULL, wake_at TIMESTAMP, attempts INTEGER NOT NULL, step_started_at VARCHAR,
        message_cursor BIGINT NOT NULL, error JSON, outputs JSON NOT NULL, created_by VARCHAR NOT NULL,
        created_at VARCHAR NOT NULL, updated_at VARCHAR NOT NULL, origin VARCHAR, waiting_on VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS _buttress.steps (
        run_id VARCHAR NOT NULL, seq INTEGER NOT NULL, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
        status VARCHAR NOT NULL, attempts INTEGER NOT NULL, output JSON, error JSON,
        version INTEGER NOT NULL, started_at VARCHAR NOT NULL, finished_at VARCHAR NOT NULL,
        PRIMARY KEY (run_id, seq))""",
    """CREATE TABLE IF NOT EXISTS _buttress.effects (
        effect_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, step VARCHAR NOT NULL,
        connector VARCHAR NOT NULL, request JSON NOT NULL, request_hash VARCHAR NOT NULL,
        state VARCHAR NOT NULL, attempts INTEGER NOT NULL, response JSON, status_code INTEGER,
        error JSON, version INTEGER NOT NULL, created_at VARCHAR NOT NULL, sent_at VARCHAR,
        settled_at VARCHAR, compensates VARCHAR)""",
    "CREATE SEQUENCE IF NOT EXISTS _buttress.message_seq",
    """CREATE TABLE IF NOT EXISTS _buttress.messages (
        seq BIGINT PRIMARY KEY, message_id VARCHAR NOT NULL UNIQUE, topic VARCHAR NOT NULL, key VARCHAR,
        payload JSON NOT NULL, version INTEGER NOT NULL, external BOOLEAN NOT NULL, held VARCHAR,
        lease_owner VARCHAR, lease_until TIMESTAMP, deliveries INTEGER NOT NULL, acked_at VARCHAR,
        acked_by VARCHAR, created_at VARCHAR NOT NULL, created_by VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS _buttress.cursors (
        subscription VARCHAR PRIMARY KEY, topic VARCHAR NOT NULL, last_seq BIGINT NOT NULL,
        active BOOLEAN NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS _buttress.dead_letters (
        subscription VARCHAR NOT NULL, seq BIGINT NOT NULL, error JSON NOT NULL, version INTEGER NOT NULL,
        created_at VARCHAR NOT NULL, PRIMARY KEY (subscription, seq))""",
    # Columns added after the first release: runs and messages carry on whose behalf they run, under
    # what grant, how many hops down a chain (a database written before gets them here, empty).
    "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS acting_for VARCHAR",
    "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS grant_json JSON",
    "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS depth INTEGER DEFAULT 0",
    "ALTER TABLE _buttress.messages ADD COLUMN IF NOT EXISTS acting_for VARCHAR",
    "ALTER TABLE _buttress.messages ADD COLUMN IF NOT EXISTS grant_json JSON",
    "ALTER TABLE _buttress.messages ADD COLUMN IF NOT EXISTS depth INTEGER DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS _buttress.signals (
        run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, name VARCHAR NOT NULL, payload JSON NOT NULL,
        consumed BOOLEAN NOT NULL, created_at VARCHAR NOT NULL, created_by VARCHAR NOT NULL,
        PRIMARY KEY (run_id, seq))""",
)


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
    terminal = ", ".join(string(s) for s in TERMINAL)
    return (
        "SELECT run_id, workflow, version, status, step FROM _buttress.runs "
        f"WHERE status NOT IN ({terminal}) AND ({condition})"
    )
