"""Versions and proposals a page at a time, each proposal with its latest dry-run and approval request;
approval requests and where each stands (with the losses their plans would cause).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Final

from runtime.boundary import approvals
from runtime.errors import NotFound
from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Plan
from runtime.results import (
    ApprovalRequest,
    DryRunReport,
    Loss,
    ProposalDetail,
    ProposalPage,
    ProposalRow,
    VersionInfo,
    VersionPage,
    VersionRow,
)
from runtime.store import catalog
from runtime.store.audit_view import page_size
from runtime.store.engine import Session


def _version(row: tuple[Any, ...]) -> VersionInfo:
    return VersionInfo.model_validate(dict(zip(catalog.VERSION_COLUMNS, row, strict=True)))


def latest_version(session: Session) -> tuple[VersionInfo, int]:
    """The newest version and how many versions there are."""
    row = session.fetchone(
        f"SELECT {', '.join(catalog.VERSION_COLUMNS)} FROM _buttress.versions ORDER BY number DESC LIMIT 1"
    )
    assert row is not None, "the system schema has no version 0"
    return _version(row), int(session.scalar("SELECT count(*) FROM _buttress.versions"))


def version_info(session: Session, number: int) -> VersionInfo:
    row = session.fetchone(
        f"SELECT {', '.join(catalog.VERSION_COLUMNS)} FROM _buttress.versions WHERE number = ?", [number]
    )
    if row is None:
        raise NotFound("version", number)
    return _version(row)


def version_page(session: Session, *, before: int | None = None, limit: int = 100) -> VersionPage:
    """Versions older than ``before`` (all when None), newest first, each with the first earlier
    version of the same spec hash (looked up for the page's hashes only)."""
    size = page_size(limit)
    rows = session.fetchall(
        f"SELECT {', '.join(catalog.VERSION_COLUMNS)} FROM _buttress.versions "
        + ("WHERE number < ? " if before is not None else "")
        + "ORDER BY number DESC LIMIT ?",
        [*([before] if before is not None else []), size + 1],
    )
    shown = [_version(row) for row in rows[:size]]
    hashes = sorted({v.hash for v in shown})
    first: dict[str, int] = {}
    if hashes:
        first = {
            str(h): int(n)
            for h, n in session.fetchall(
                f"SELECT hash, min(number) FROM _buttress.versions WHERE hash IN ({', '.join('?' for _ in hashes)}) "
                "GROUP BY hash",
                hashes,
            )
        }
    versions = [
        VersionRow(
            **v.model_dump(), same_as=first[v.hash] if first.get(v.hash, v.number) < v.number else None
        )
        for v in shown
    ]
    return VersionPage(
        versions=versions,
        total=int(session.scalar("SELECT count(*) FROM _buttress.versions")),
        next_before=versions[-1].number if len(rows) > size else None,
    )


PROPOSAL_STATUS: Final = ("deployed", "pending", "stale")


def _latest_error(session: Session) -> str:
    return session.dialect.json_path_text("l.report", "error", "code")


_PROPOSALS = """
    WITH runs AS (
        SELECT d.proposal_id, max(d.id) AS latest_id, bool_or(d.passed) AS passed
        FROM _buttress.dry_runs d JOIN _buttress.proposals p ON d.proposal_id = p.id
            AND d.base_version = p.base_version AND d.plan_hash = p.plan_hash
        {where}
        GROUP BY d.proposal_id
    ), deployed AS (
        SELECT proposal_id, min(number) AS deployed_as FROM _buttress.versions
        WHERE proposal_id IS NOT NULL GROUP BY proposal_id
    ), listed AS (
        SELECT p.id, p.seq, p.base_version, p.note, p.created_by, p.created_at, p.plan, p.plan_hash,
            v.deployed_as, r.passed,
            CASE WHEN l.passed THEN 'passed' WHEN l.id IS NOT NULL THEN 'failed' END AS latest,
            CASE WHEN NOT l.passed THEN {latest_error} END AS latest_error,
            l.created_at AS latest_at
        FROM _buttress.proposals p
            LEFT JOIN runs r ON r.proposal_id = p.id
            LEFT JOIN _buttress.dry_runs l ON l.id = r.latest_id
            LEFT JOIN deployed v ON v.proposal_id = p.id
        {where}
    )
    SELECT *, CASE WHEN deployed_as IS NOT NULL THEN 'deployed' WHEN base_version = ? THEN 'pending'
        ELSE 'stale' END AS status
    FROM listed
"""
"""Every proposal with where it stands and its latest dry-run (the one a deploy goes by). ``{where}``
(a condition on ``p``, the proposals) appears twice: its parameters are bound twice, then the current
version's number."""


def _rows(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _proposal_row(row: dict[str, Any], approval: ApprovalRequest | None) -> ProposalRow:
    plan = json.loads(row["plan"]) if isinstance(row["plan"], str) else row["plan"]
    hazards = sorted({h["code"] for step in plan["steps"] for h in step["hazards"]})
    return ProposalRow(
        proposal_id=row["id"],
        base_version=int(row["base_version"]),
        note=row["note"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        status=row["status"],
        deployed_as=row["deployed_as"],
        dry_run_passed=bool(row["passed"]),
        dry_run=catalog.dry_run_state(row["passed"], stale=row["status"] == "stale"),
        hazards=hazards,
        latest_dry_run=row["latest"] or "none",
        dry_run_error=row["latest_error"] if row["latest"] == "failed" else None,
        dry_run_at=row["latest_at"],
        approval=approval.status if approval else None,
        approval_id=approval.request_id if approval else None,
        approval_reason=approval.reason if approval else None,
    )


def _latest_requests(
    session: Session, database: approvals.Where, proposal_ids: list[str]
) -> dict[str, ApprovalRequest]:
    """The newest approval request of each proposal that has one, where it stands."""
    if not proposal_ids:
        return {}
    marks = ", ".join("?" for _ in proposal_ids)
    rows = approvals.request_rows(session, f"WHERE proposal_id IN ({marks})", list(proposal_ids))
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first
        newest.setdefault(str(row["proposal_id"]), row)
    bare = _RequestContext({}, {})  # a proposal's row needs the request's status, not its note
    return {pid: _request(session, row, database, {}, bare) for pid, row in newest.items()}


_PROPOSAL_STATUS = """
    SELECT p.id, p.seq, CASE WHEN v.proposal_id IS NOT NULL THEN 'deployed' WHEN p.base_version = ? THEN 'pending'
        ELSE 'stale' END AS status
    FROM _buttress.proposals p
        LEFT JOIN (SELECT DISTINCT proposal_id FROM _buttress.versions WHERE proposal_id IS NOT NULL) v
        ON v.proposal_id = p.id
"""
"""Every proposal's status alone: what a page of proposals is chosen and counted by."""


def proposal_page(
    session: Session,
    database: approvals.Where,
    *,
    current: int,
    status: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> ProposalPage:
    """Proposals newest first, optionally only those with ``status`` (deployed, pending, stale): the
    page is chosen and counted by status alone, then its proposals are read in full."""
    size = page_size(limit)
    wanted = status if status in PROPOSAL_STATUS else None
    chosen = f"SELECT * FROM ({_PROPOSAL_STATUS}) WHERE " + ("status = ?" if wanted else "TRUE")
    params: list[Any] = [current, *([wanted] if wanted else [])]
    page = session.fetchall(
        f"SELECT id, seq FROM ({chosen})"
        + (" WHERE seq < ?" if before_seq is not None else "")
        + " ORDER BY seq DESC LIMIT ?",
        [*params, *([before_seq] if before_seq is not None else []), size + 1],
    )
    matching = int(session.scalar(f"SELECT count(*) FROM ({chosen})", params))
    ids = [str(row[0]) for row in page[:size]]
    rows: list[dict[str, Any]] = []
    if ids:
        marks = ", ".join("?" for _ in ids)
        rows = _rows(
            session.execute(
                _PROPOSALS.format(where=f"WHERE p.id IN ({marks})", latest_error=_latest_error(session))
                + " ORDER BY seq DESC",
                [*ids, *ids, current],
            )
        )
    requests = _latest_requests(session, database, ids)
    return ProposalPage(
        proposals=[_proposal_row(row, requests.get(str(row["id"]))) for row in rows],
        matching=matching,
        next_before=int(page[size - 1][1]) if len(page) > size else None,
    )


def pending_proposals(session: Session, database: approvals.Where, *, current: int) -> list[ProposalRow]:
    """Proposals made on the current version and not deployed, oldest first, each with its latest
    dry-run and approval request."""
    rows = _rows(
        session.execute(
            _PROPOSALS.format(where="WHERE p.base_version = ?", latest_error=_latest_error(session))
            + " WHERE deployed_as IS NULL ORDER BY seq",
            [current, current, current],
        )
    )
    requests = _latest_requests(session, database, [str(row["id"]) for row in rows])
    return [_proposal_row(row, requests.get(str(row["id"]))) for row in rows]


def proposal_detail(
    session: Session, database: approvals.Where, proposal_id: str, *, current: int
) -> ProposalDetail:
    """A proposal with its plan, its latest dry-run report and its approval requests."""
    found = catalog.proposal(session, proposal_id)  # not_found when there is none
    (row,) = _rows(
        session.execute(
            _PROPOSALS.format(where="WHERE p.id = ?", latest_error=_latest_error(session)),
            [proposal_id, proposal_id, current],
        )
    )
    plan: Plan = found["plan"]
    ran = session.fetchone(
        "SELECT report, created_at FROM _buttress.dry_runs WHERE proposal_id = ? ORDER BY id DESC LIMIT 1",
        [proposal_id],
    )
    requests = approval_requests(session, database, proposal_id=proposal_id)
    return ProposalDetail(
        summary=_proposal_row(row, requests[0] if requests else None),
        operations=list(found["operations"]),
        target_hash=found["target"].hash(),
        plan_hash=found["plan_hash"],
        steps=list(plan.steps),
        hazards=plan.all_hazards(),
        dry_run=DryRunReport.model_validate_json(ran[0]) if ran else None,
        dry_run_at=str(ran[1]) if ran else None,
        approvals=requests,
    )


def _losses(session: Session, rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[Loss]]:
    """What the latest passed dry-run of each request's plan found it would remove."""
    proposals = sorted({row["proposal_id"] for row in rows})
    if not proposals:
        return {}
    marks = ", ".join("?" for _ in proposals)
    found: dict[tuple[str, str], list[Loss]] = {}
    for proposal_id, plan_hash, report in session.fetchall(
        f"SELECT proposal_id, plan_hash, report FROM _buttress.dry_runs WHERE passed "
        f"AND proposal_id IN ({marks}) ORDER BY id DESC",
        proposals,
    ):
        key = (str(proposal_id), str(plan_hash))
        if key not in found:
            steps = json.loads(report)["steps"]
            found[key] = [Loss.model_validate(loss) for step in steps for loss in step.get("losses", [])]
    return found


@dataclass(frozen=True)
class _RequestContext:
    """What the requests' proposals say, read once for a list of requests: the agent's note and the
    latest dry-run of each plan on the current version."""

    notes: dict[str, str | None]
    dry_runs: dict[tuple[str, str], str]

    @classmethod
    def read(cls, session: Session, rows: list[dict[str, Any]]) -> _RequestContext:
        proposals = sorted(
            {str(r["proposal_id"]) for r in rows if not str(r["proposal_id"]).startswith("rollback:")}
        )
        if not proposals:
            return cls({}, {})
        marks = ", ".join("?" for _ in proposals)
        notes = {
            str(pid): note
            for pid, note in session.fetchall(
                f"SELECT id, note FROM _buttress.proposals WHERE id IN ({marks})", proposals
            )
        }
        ran = session.fetchall(
            f"SELECT proposal_id, plan_hash, {session.dialect.arg_max('passed', 'id')} FROM _buttress.dry_runs "
            f"WHERE base_version = (SELECT max(number) FROM _buttress.versions) AND proposal_id IN ({marks}) "
            "GROUP BY proposal_id, plan_hash",
            proposals,
        )
        dry_runs = {(str(pid), str(plan)): "passed" if passed else "failed" for pid, plan, passed in ran}
        return cls(notes, dry_runs)


def _request(
    session: Session,
    row: dict[str, Any],
    database: approvals.Where,
    losses: dict[tuple[str, str], list[Loss]],
    context: _RequestContext | None = None,
) -> ApprovalRequest:
    status, decision = approvals.request_status(database, row, session)
    stale = approvals.stale_reason(session, row) if status in {"pending", "approved"} else None
    if stale is not None:
        status = "stale"
    decision = decision or {}
    rollback = str(row["proposal_id"]).startswith("rollback:")
    context = context or _RequestContext.read(session, [row])
    return ApprovalRequest(
        request_id=row["id"],
        subject=approvals.subject(row),
        proposal_id=None if rollback else row["proposal_id"],
        plan_hash=row["plan_hash"],
        hazards=[Hazard.model_validate(h) for h in row["hazards"]],
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        expires_at=row["expires_at"],
        status=status,
        decided_by=decision.get("refused_by") or decision.get("approved_by"),
        decided_at=decision.get("refused_at") or decision.get("approved_at"),
        reason=decision.get("reason") or stale,
        losses=losses.get((row["proposal_id"], row["plan_hash"]), []),
        note=None if rollback else context.notes.get(str(row["proposal_id"])),
        dry_run=None
        if rollback
        else context.dry_runs.get((str(row["proposal_id"]), str(row["plan_hash"])), "none"),
    )


def approval_requests(
    session: Session, database: approvals.Where, *, proposal_id: str | None = None, limit: int = 100
) -> list[ApprovalRequest]:
    """Requests newest first: every open one (not used, not expired), then the latest decided ones
    up to ``limit`` in all; or every request made for ``proposal_id``."""
    if proposal_id is not None:
        rows = approvals.request_rows(session, "WHERE proposal_id = ?", [proposal_id])
    else:
        now = datetime.datetime.now(datetime.UTC).isoformat()
        rows = approvals.request_rows(session, "WHERE used_at IS NULL AND expires_at > ?", [now])
        seen = {row["id"] for row in rows}
        rows += [
            row for row in approvals.request_rows(session, limit=page_size(limit)) if row["id"] not in seen
        ][: max(page_size(limit) - len(rows), 0)]
    losses = _losses(session, rows)
    context = _RequestContext.read(session, rows)
    return [_request(session, row, database, losses, context) for row in rows]


def open_requests(session: Session, database: approvals.Where) -> int:
    """How many requests wait for the operator's decision."""
    now = datetime.datetime.now(datetime.UTC).isoformat()
    rows = approvals.request_rows(session, "WHERE used_at IS NULL AND expires_at > ?", [now])
    return sum(
        1
        for row in rows
        if approvals.request_status(database, row, session)[0] == "pending"
        and approvals.stale_reason(session, row) is None
    )


def approval_request(session: Session, database: approvals.Where, request_id: str) -> ApprovalRequest:
    """One request and where it stands (``not_found`` when there is none)."""
    rows = approvals.request_rows(session, "WHERE id = ?", [request_id])
    if not rows:
        raise NotFound("approval request", request_id)
    return _request(session, rows[0], database, _losses(session, rows))
