"""The system schema ``_buttress``: versions, proposals, dry-run reports, retained data,
idempotency records, approvals and the audit log. No agent SQL can name it.

Proposals, versions and dry-run reports are written once and never updated; a proposal's status
is derived (deployed when a version names it, stale when its base is not current).
"""

from __future__ import annotations

import json
from typing import Any, Final

from runtime.errors import NotFound
from runtime.migrate.ddl import qs
from runtime.migrate.plan import Plan, Retention
from runtime.results import DryRunState
from runtime.schema.spec import AppSpec, canonical_json
from runtime.sql.dialect import support_functions
from runtime.store import migrations
from runtime.store.audit import now_iso
from runtime.store.engine import Session, Tx

VERSION_COLUMNS: Final = (
    "number",
    "hash",
    "kind",
    "parent",
    "restores",
    "proposal_id",
    "note",
    "deployed_at",
    "deployed_by",
)
"""The columns of ``_buttress.versions`` a version is read with, in order."""


def install(tx: Tx) -> bool:
    """Bring the system schema up to date (``migrations``) and seed version 0. Returns True on a fresh
    database."""
    if migrations.upgrade(tx):
        for statement in support_functions(tx.dialect):  # PostgreSQL's try-casts; none on DuckDB
            tx.execute(statement)
    if tx.scalar("SELECT count(*) FROM _buttress.versions") == 0:
        empty = AppSpec(checked_by="buttress")  # new projects: references checked by the runtime
        tx.execute(
            "INSERT INTO _buttress.versions (number, hash, spec, kind, deployed_at, deployed_by) VALUES (0, ?, ?, 'init', ?, 'buttress')",
            [empty.hash(), empty.canonical_json(), now_iso()],
        )
        return True
    return False


# ----------------------------------------------------------------------------------------- versions


def current_number(cursor: Session) -> int:
    """The current version's number alone (one indexed read)."""
    return int(cursor.scalar("SELECT max(number) FROM _buttress.versions"))


def current_version(cursor: Session) -> tuple[int, AppSpec]:
    row = cursor.execute(
        "SELECT number, spec FROM _buttress.versions ORDER BY number DESC LIMIT 1"
    ).fetchone()
    assert row is not None, "the system schema has no version 0"
    return int(row[0]), AppSpec.model_validate_json(row[1])


def version_row(cursor: Session, number: int) -> dict[str, Any]:
    row = cursor.execute(
        "SELECT number, hash, spec, kind, parent, restores, proposal_id, plan, note, deployed_at, deployed_by "
        "FROM _buttress.versions WHERE number = ?",
        [number],
    ).fetchone()
    if row is None:
        raise NotFound("version", number)
    keys = (
        "number",
        "hash",
        "spec",
        "kind",
        "parent",
        "restores",
        "proposal_id",
        "plan",
        "note",
        "deployed_at",
        "deployed_by",
    )
    out = dict(zip(keys, row, strict=True))
    out["spec"] = json.loads(out["spec"])
    out["plan"] = json.loads(out["plan"]) if out["plan"] else None
    return out


def versions(cursor: Session) -> list[dict[str, Any]]:
    rows = cursor.execute(
        f"SELECT {', '.join(VERSION_COLUMNS)} FROM _buttress.versions ORDER BY number"
    ).fetchall()
    return [dict(zip(VERSION_COLUMNS, r, strict=True)) for r in rows]


def insert_version(
    tx: Tx,
    *,
    number: int,
    spec: AppSpec,
    kind: str,
    parent: int,
    restores: int | None,
    proposal_id: str | None,
    plan: Plan,
    note: str | None,
    actor: str,
) -> None:
    tx.execute(
        "INSERT INTO _buttress.versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            number,
            spec.hash(),
            spec.canonical_json(),
            kind,
            parent,
            restores,
            proposal_id,
            canonical_json(plan.model_dump(mode="json")),
            note,
            now_iso(),
            actor,
        ],
    )


# ---------------------------------------------------------------------------------------- proposals


def next_proposal_id(tx: Tx) -> tuple[str, int]:
    seq = int(tx.scalar("SELECT coalesce(max(seq), 0) + 1 FROM _buttress.proposals"))
    return f"p{seq}", seq


def insert_proposal(
    tx: Tx,
    *,
    proposal_id: str,
    seq: int,
    base_version: int,
    operations: list[dict[str, Any]],
    target: AppSpec,
    plan: Plan,
    note: str | None,
    actor: str,
) -> None:
    tx.execute(
        "INSERT INTO _buttress.proposals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            proposal_id,
            seq,
            base_version,
            canonical_json(operations),
            target.canonical_json(),
            target.hash(),
            canonical_json(plan.model_dump(mode="json")),
            plan.hash(),
            note,
            now_iso(),
            actor,
        ],
    )


def proposal(cursor: Session, proposal_id: str) -> dict[str, Any]:
    row = cursor.execute(
        "SELECT p.id, p.base_version, p.operations, p.target_spec, p.plan, p.plan_hash, p.note, p.created_at, "
        "p.created_by, (SELECT min(number) FROM _buttress.versions v WHERE v.proposal_id = p.id) "
        "FROM _buttress.proposals p WHERE p.id = ?",
        [proposal_id],
    ).fetchone()
    if row is None:
        raise NotFound(
            "proposal",
            proposal_id,
            hint="propose_change returns a proposal_id; describe_app lists pending ones.",
        )
    return {
        "id": row[0],
        "base_version": int(row[1]),
        "operations": json.loads(row[2]),
        "target": AppSpec.model_validate_json(row[3]),
        "plan": Plan.model_validate_json(row[4]),
        "plan_hash": row[5],
        "note": row[6],
        "created_at": row[7],
        "created_by": row[8],
        "deployed_as": row[9],
    }


def pending_proposals(cursor: Session, current: int) -> list[dict[str, Any]]:
    rows = cursor.execute(
        "SELECT id, note, created_by, created_at, (SELECT bool_or(passed) FROM _buttress.dry_runs d "
        "WHERE d.proposal_id = p.id AND d.base_version = p.base_version AND d.plan_hash = p.plan_hash) "
        "FROM _buttress.proposals p WHERE base_version = ? "
        "AND NOT EXISTS (SELECT 1 FROM _buttress.versions v WHERE v.proposal_id = p.id) ORDER BY seq",
        [current],
    ).fetchall()
    return [
        {
            "proposal_id": r[0],
            "note": r[1],
            "created_by": r[2],
            "created_at": r[3],
            "dry_run_passed": bool(r[4]),
            "dry_run": dry_run_state(r[4], stale=False),
        }
        for r in rows
    ]


def dry_run_state(passed: bool | None, *, stale: bool) -> DryRunState:
    """Where a proposal's dry-run stands, from ``bool_or(passed)`` over its dry-runs on its base version
    (NULL: none) and whether that base is still current: passed, failed, stale or not_dry_run."""
    if passed is None:
        return "not_dry_run"
    if not passed:
        return "failed"
    return "stale" if stale else "passed"


def proposal_list(cursor: Session, current: int) -> list[dict[str, Any]]:
    """Every proposal, newest first, with its status derived (deployed, pending, stale)."""
    rows = cursor.execute(
        "SELECT p.id, p.base_version, p.note, p.created_by, p.created_at, p.plan, "
        "(SELECT min(number) FROM _buttress.versions v WHERE v.proposal_id = p.id), "
        "(SELECT bool_or(passed) FROM _buttress.dry_runs d WHERE d.proposal_id = p.id "
        "AND d.base_version = p.base_version AND d.plan_hash = p.plan_hash) "
        "FROM _buttress.proposals p ORDER BY p.seq DESC"
    ).fetchall()
    out = []
    for pid, base, note, by, at, plan, deployed, passed in rows:
        status = "deployed" if deployed is not None else ("pending" if base == current else "stale")
        hazards = sorted({h["code"] for step in json.loads(plan)["steps"] for h in step["hazards"]})
        out.append(
            {
                "proposal_id": pid,
                "base_version": int(base),
                "note": note,
                "created_by": by,
                "created_at": at,
                "status": status,
                "deployed_as": deployed,
                "dry_run_passed": bool(passed),
                "dry_run": dry_run_state(passed, stale=status == "stale"),
                "hazards": hazards,
            }
        )
    return out


# ----------------------------------------------------------------------------------------- dry runs


def insert_dry_run(
    tx: Tx, *, proposal_id: str, base_version: int, plan_hash: str, passed: bool, report: dict[str, Any]
) -> int:
    run_id = int(tx.scalar("SELECT coalesce(max(id), 0) + 1 FROM _buttress.dry_runs"))
    tx.execute(
        "INSERT INTO _buttress.dry_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
        [run_id, proposal_id, base_version, plan_hash, passed, canonical_json(report), now_iso()],
    )
    return run_id


def passed_dry_run(
    cursor: Session, proposal_id: str, base_version: int, plan_hash: str
) -> dict[str, Any] | None:
    row = cursor.execute(
        "SELECT id, passed, report FROM _buttress.dry_runs WHERE proposal_id = ? AND base_version = ? AND plan_hash = ? "
        "ORDER BY id DESC LIMIT 1",
        [proposal_id, base_version, plan_hash],
    ).fetchone()
    if row is None:
        return None
    return {"id": row[0], "passed": bool(row[1]), "report": json.loads(row[2])}


# ------------------------------------------------------------------------------------ retained data


def record_retention(
    tx: Tx, retention: Retention, *, version: int, step: int, origin: str, spec_hash: str
) -> None:
    tx.execute(
        "INSERT INTO _buttress.retained VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)",
        [
            retention.table,
            version,
            step,
            retention.kind,
            retention.entity,
            retention.field,
            json.dumps(list(retention.key)),
            origin,
            spec_hash,
            now_iso(),
        ],
    )


def retentions(cursor: Session, where: str, params: list[Any]) -> list[dict[str, Any]]:
    rows = cursor.execute(
        "SELECT table_name, version, step, kind, entity, field, key, origin, spec_hash, status "
        f"FROM _buttress.retained WHERE {where} ORDER BY version DESC, step",
        params,
    ).fetchall()
    keys = (
        "table_name",
        "version",
        "step",
        "kind",
        "entity",
        "field",
        "key",
        "origin",
        "spec_hash",
        "status",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


def as_retention(row: dict[str, Any]) -> Retention:
    return Retention(
        table=row["table_name"],
        kind=row["kind"],
        entity=row["entity"],
        field=row["field"],
        key=tuple(json.loads(row["key"])),
    )


def consume_retention(tx: Tx, table: str) -> None:
    """Restored data now lives in the application table: drop the copy."""
    tx.execute("UPDATE _buttress.retained SET status = 'restored' WHERE table_name = ?", [table])
    tx.execute(f"DROP TABLE IF EXISTS {qs(table)}")
