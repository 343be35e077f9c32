"""The system schema ``_buttress``, declared once, as numbered migrations.

A database records the last migration applied to it under ``schema_version`` in ``_buttress.meta``.
Opening one applies, in one transaction, every migration after that number, in order, and records the
new number; a database already at the last number is left alone (no statement runs). A database
written by a newer release (a number this one does not know) is refused rather than guessed at.

The statements are written once for both engines (DuckDB and PostgreSQL read each of them the
same); what differs is asked of the session's dialect.

Migration 1 is the system schema of the first release, as it wrote it; each later one changes it the
way an application's migration would (``ALTER``, never a rewrite). Add a migration at the end; never
edit one that has shipped: databases in the field have run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from runtime.errors import Code, EngineError
from runtime.store.engine import Session, Tx


@dataclass(frozen=True)
class Migration:
    number: int
    does: str
    """What it changes, in one line (``buttress status`` and the tests name it)."""
    statements: tuple[str, ...]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "the system schema of the first release: versions, proposals, dry-runs, retained data, "
        "idempotency, approvals, the audit log, runs, steps, effects, messages, cursors, dead letters, "
        "signals",
        (
            "CREATE SCHEMA IF NOT EXISTS _buttress",
            "CREATE TABLE IF NOT EXISTS _buttress.meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
            """CREATE TABLE IF NOT EXISTS _buttress.versions (
            number INTEGER PRIMARY KEY, hash VARCHAR NOT NULL, spec JSON NOT NULL, kind VARCHAR NOT NULL,
            parent INTEGER, restores INTEGER, proposal_id VARCHAR, plan JSON, note VARCHAR,
            deployed_at VARCHAR NOT NULL, deployed_by VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.proposals (
            id VARCHAR PRIMARY KEY, seq INTEGER NOT NULL, base_version INTEGER NOT NULL,
            operations JSON NOT NULL, target_spec JSON NOT NULL, target_hash VARCHAR NOT NULL,
            plan JSON NOT NULL, plan_hash VARCHAR NOT NULL, note VARCHAR, created_at VARCHAR NOT NULL,
            created_by VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.dry_runs (
            id INTEGER PRIMARY KEY, proposal_id VARCHAR NOT NULL, base_version INTEGER NOT NULL,
            plan_hash VARCHAR NOT NULL, passed BOOLEAN NOT NULL, report JSON NOT NULL,
            created_at VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.retained (
            table_name VARCHAR PRIMARY KEY, version INTEGER NOT NULL, step INTEGER NOT NULL,
            kind VARCHAR NOT NULL, entity VARCHAR NOT NULL, field VARCHAR, key JSON NOT NULL,
            origin VARCHAR NOT NULL, spec_hash VARCHAR NOT NULL, status VARCHAR NOT NULL,
            created_at VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.idempotency (
            action VARCHAR NOT NULL, key VARCHAR NOT NULL, args_hash VARCHAR NOT NULL,
            result JSON NOT NULL, version INTEGER NOT NULL, created_at VARCHAR NOT NULL,
            PRIMARY KEY (action, key))""",
            """CREATE TABLE IF NOT EXISTS _buttress.approvals (
            id VARCHAR PRIMARY KEY, proposal_id VARCHAR NOT NULL, plan_hash VARCHAR NOT NULL,
            hazards JSON NOT NULL, requested_by VARCHAR NOT NULL, requested_at VARCHAR NOT NULL,
            expires_at VARCHAR NOT NULL, approved_by VARCHAR, approved_at VARCHAR, used_at VARCHAR)""",
            """CREATE TABLE IF NOT EXISTS _buttress.audit (
            seq BIGINT PRIMARY KEY, time VARCHAR NOT NULL, actor VARCHAR NOT NULL,
            operation VARCHAR NOT NULL, arguments JSON NOT NULL, outcome VARCHAR NOT NULL,
            error_code VARCHAR, version_before INTEGER, version_after INTEGER, proposal_id VARCHAR,
            prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.runs (
            run_id VARCHAR PRIMARY KEY, workflow VARCHAR NOT NULL, version INTEGER NOT NULL,
            args JSON NOT NULL, args_hash VARCHAR NOT NULL, status VARCHAR NOT NULL, step INTEGER NOT NULL,
            calls VARCHAR[] NOT NULL, wake_at TIMESTAMP, attempts INTEGER NOT NULL,
            step_started_at VARCHAR, message_cursor BIGINT NOT NULL, error JSON, outputs JSON NOT NULL,
            created_by VARCHAR NOT NULL, created_at VARCHAR NOT NULL, updated_at VARCHAR NOT NULL,
            origin VARCHAR, waiting_on VARCHAR)""",
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
            seq BIGINT PRIMARY KEY, message_id VARCHAR NOT NULL UNIQUE, topic VARCHAR NOT NULL,
            key VARCHAR, payload JSON NOT NULL, version INTEGER NOT NULL, external BOOLEAN NOT NULL,
            held VARCHAR, lease_owner VARCHAR, lease_until TIMESTAMP, deliveries INTEGER NOT NULL,
            acked_at VARCHAR, acked_by VARCHAR, created_at VARCHAR NOT NULL, created_by VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.cursors (
            subscription VARCHAR PRIMARY KEY, topic VARCHAR NOT NULL, last_seq BIGINT NOT NULL,
            active BOOLEAN NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS _buttress.dead_letters (
            subscription VARCHAR NOT NULL, seq BIGINT NOT NULL, error JSON NOT NULL,
            version INTEGER NOT NULL, created_at VARCHAR NOT NULL, PRIMARY KEY (subscription, seq))""",
            """CREATE TABLE IF NOT EXISTS _buttress.signals (
            run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, name VARCHAR NOT NULL, payload JSON NOT NULL,
            consumed BOOLEAN NOT NULL, created_at VARCHAR NOT NULL, created_by VARCHAR NOT NULL,
            PRIMARY KEY (run_id, seq))""",
        ),
    ),
    Migration(
        2,
        "runs and messages carry on whose behalf they run, under what grant, how many hops down a chain",
        (
            "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS acting_for VARCHAR",
            "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS grant_json JSON",
            "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS depth INTEGER DEFAULT 0",
            "ALTER TABLE _buttress.messages ADD COLUMN IF NOT EXISTS acting_for VARCHAR",
            "ALTER TABLE _buttress.messages ADD COLUMN IF NOT EXISTS grant_json JSON",
            "ALTER TABLE _buttress.messages ADD COLUMN IF NOT EXISTS depth INTEGER DEFAULT 0",
        ),
    ),
    Migration(
        3,
        "runs carry a lease: the server advancing them, until when, and an epoch that grows when it "
        "changes hands",
        (
            "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS lease_owner VARCHAR",
            "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS lease_until TIMESTAMP",
            "ALTER TABLE _buttress.runs ADD COLUMN IF NOT EXISTS lease_epoch BIGINT DEFAULT 0",
        ),
    ),
    Migration(
        4,
        "approval requests and the operator's signed decisions, and the audit anchor, can be kept in the "
        "database, where every server sharing it sees them",
        (
            """CREATE TABLE IF NOT EXISTS _buttress.filed (
            drawer VARCHAR NOT NULL, name VARCHAR NOT NULL, record JSON NOT NULL, filed_at VARCHAR NOT NULL,
            PRIMARY KEY (drawer, name))""",
            """CREATE TABLE IF NOT EXISTS _buttress.anchors (
            name VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR NOT NULL, time VARCHAR NOT NULL,
            mac VARCHAR NOT NULL)""",
        ),
    ),
)

LATEST: Final = MIGRATIONS[-1].number


def schema_version(session: Session) -> int:
    """The last migration applied to this database: 0 for one without the system schema (the first
    release recorded 1 when it created one)."""
    present = session.scalar(session.dialect.table_exists("_buttress", "versions"))
    if not present:
        return 0
    found = session.execute("SELECT value FROM _buttress.meta WHERE key = 'schema_version'").fetchone()
    return int(found[0]) if found is not None else 1


def upgrade(tx: Tx) -> list[int]:
    """Apply every migration this database has not had, in order, in ``tx``; the numbers applied."""
    at = schema_version(tx)
    if at > LATEST:
        raise EngineError(
            Code.ENGINE_NEWER_SCHEMA,
            f"the database's system schema is at migration {at}; this Buttress knows those up to {LATEST}",
            hint="A newer Buttress wrote this database: run that release (or a later one) on it. Nothing was "
            "changed.",
            details={"schema_version": at, "latest": LATEST},
        )
    applied = []
    for migration in MIGRATIONS:
        if migration.number <= at:
            continue
        for statement in migration.statements:
            tx.execute(statement)
        applied.append(migration.number)
    if applied:
        tx.execute(
            "INSERT INTO _buttress.meta VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(LATEST)],
        )
    return applied
