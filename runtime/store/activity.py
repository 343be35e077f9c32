"""What the people who run an application read about it: the audit log filtered, paged and counted;
versions and proposals a page at a time; approval requests and where each stands; the work in
flight (runs by state, unknown effects, undelivered messages) counted.

Every function takes a snapshot session and returns result models; none writes. Paging and counting
happen in the database, by ``seq`` (the audit log and proposals) or ``number`` (versions), so a page
costs the same with a hundred entries or a million. Filters are fixed clauses with bound values:
no text from a request ever becomes SQL.

The control room (``buttress ui``) reads through these, each page one audited ``Runtime`` read.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Final

from runtime.boundary import approvals
from runtime.errors import NotFound
from runtime.migrate.hazards import Hazard
from runtime.migrate.plan import Plan
from runtime.results import (
    ActivityBucket,
    ApprovalRequest,
    AuditEntry,
    AuditFacets,
    AuditPage,
    AuditStats,
    DryRunReport,
    Facet,
    Loss,
    ProposalDetail,
    ProposalPage,
    ProposalSummary,
    VersionInfo,
    VersionPage,
    WorkflowSummary,
)
from runtime.store import catalog
from runtime.store.engine import Session

AUDIT_COLUMNS: Final = (
    "seq",
    "time",
    "actor",
    "operation",
    "arguments",
    "outcome",
    "error_code",
    "version_before",
    "version_after",
    "proposal_id",
    "prev_hash",
    "hash",
)
MAX_PAGE: Final = 500
MAX_FACET_VALUES: Final = 200
MAX_BUCKETS: Final = 60
GRANULARITIES: Final[tuple[tuple[str, int, datetime.timedelta], ...]] = (
    ("minute", 16, datetime.timedelta(minutes=1)),
    ("hour", 13, datetime.timedelta(hours=1)),
    ("day", 10, datetime.timedelta(days=1)),
)
"""Bucket sizes, finest first: name, length of the ISO 8601 prefix that names a bucket, width."""


def _page_size(limit: int) -> int:
    return min(max(int(limit), 1), MAX_PAGE)


# ------------------------------------------------------------------------------------------ audit


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    item = dict(zip(AUDIT_COLUMNS, row, strict=True))
    item["arguments"] = json.loads(item["arguments"])
    return AuditEntry.model_validate(item)


def audit_filter(
    *,
    actor: str | None = None,
    operation: str | None = None,
    outcome: str | None = None,
    code: str | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed text) and bound values for the filters that are set."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("actor", actor),
        ("operation", operation),
        ("outcome", outcome),
        ("error_code", code),
    ):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses) or "TRUE", params


def audit_page(
    session: Session,
    *,
    actor: str | None = None,
    operation: str | None = None,
    outcome: str | None = None,
    code: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """Entries matching every filter that is set, newest first, older than ``before_seq`` if given."""
    where, params = audit_filter(actor=actor, operation=operation, outcome=outcome, code=code)
    size = _page_size(limit)
    paged = where + (" AND seq < ?" if before_seq is not None else "")
    rows = session.fetchall(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM _buttress.audit WHERE {paged} ORDER BY seq DESC LIMIT ?",
        [*params, *([before_seq] if before_seq is not None else []), size + 1],
    )
    entries = [_entry(row) for row in rows[:size]]
    total = audit_count(session)
    matching = (
        total
        if where == "TRUE"
        else int(session.scalar(f"SELECT count(*) FROM _buttress.audit WHERE {where}", params))
    )
    return AuditPage(
        entries=entries,
        matching=matching,
        total=total,
        next_before=entries[-1].seq if len(rows) > size else None,
        facets=audit_facets(session),
    )


def audit_facets(session: Session) -> AuditFacets:
    """Each filterable column's values with their counts, most frequent first."""
    found: dict[str, list[Facet]] = {"actor": [], "operation": [], "outcome": [], "error_code": []}
    for column in found:
        rows = session.fetchall(
            f"SELECT {column}, count(*) AS n FROM _buttress.audit WHERE {column} IS NOT NULL "
            f"GROUP BY {column} ORDER BY n DESC, {column} LIMIT {MAX_FACET_VALUES}"
        )
        found[column] = [Facet(value=str(value), count=int(count)) for value, count in rows]
    return AuditFacets(
        actors=found["actor"],
        operations=found["operation"],
        outcomes=found["outcome"],
        codes=found["error_code"],
    )


def audit_count(session: Session) -> int:
    """How many entries the audit log holds."""
    return int(session.scalar("SELECT count(*) FROM _buttress.audit"))


def recent(session: Session, *, operator: str, limit: int = 10) -> list[AuditEntry]:
    """The newest entries by agents (anyone but ``operator``), newest first."""
    rows = session.fetchall(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM _buttress.audit WHERE actor <> ? ORDER BY seq DESC LIMIT ?",
        [operator, _page_size(limit)],
    )
    return [_entry(row) for row in rows]


def agent_head(session: Session, *, operator: str) -> int:
    """The sequence number of the newest entry by an agent (0 when there is none)."""
    return int(
        session.scalar("SELECT coalesce(max(seq), 0) FROM _buttress.audit WHERE actor <> ?", [operator])
    )


def _bucket_start(time: str, granularity: str) -> datetime.datetime:
    prefix = {name: size for name, size, _ in GRANULARITIES}[granularity]
    text = time[:prefix]
    if granularity == "day":
        return datetime.datetime.fromisoformat(text + "T00:00:00+00:00")
    if granularity == "hour":
        return datetime.datetime.fromisoformat(text + ":00:00+00:00")
    return datetime.datetime.fromisoformat(text + ":00+00:00")


def audit_stats(session: Session, *, operator: str) -> AuditStats:
    """Agent calls over time (at most ``MAX_BUCKETS`` consecutive buckets ending with the newest
    call, at the finest granularity that spans them) and the agents' refusals by error code, over
    all time. The operator's own entries are left out."""
    codes = [
        Facet(value=str(code), count=int(count))
        for code, count in session.fetchall(
            "SELECT error_code, count(*) AS n FROM _buttress.audit WHERE outcome = 'refused' AND actor <> ? "
            "AND error_code IS NOT NULL GROUP BY error_code ORDER BY n DESC, error_code LIMIT 12",
            [operator],
        )
    ]
    first, last = session.fetchone(
        "SELECT min(time), max(time) FROM _buttress.audit WHERE actor <> ?", [operator]
    ) or (None, None)
    if first is None or last is None:
        return AuditStats(granularity="hour", buckets=[], refusals_by_code=codes)
    name, prefix, width = next(
        (
            (name, prefix, width)
            for name, prefix, width in GRANULARITIES
            if _bucket_start(str(last), name) - _bucket_start(str(first), name) < width * MAX_BUCKETS
        ),
        GRANULARITIES[-1],
    )
    end = _bucket_start(str(last), name)
    start = max(_bucket_start(str(first), name), end - width * (MAX_BUCKETS - 1))
    rows = session.fetchall(
        "SELECT substr(time, 1, ?) AS bucket, "
        "count(*) FILTER (WHERE outcome IN ('ok', 'passed', 'replayed')), "
        "count(*) FILTER (WHERE outcome = 'refused'), count(*) FILTER (WHERE outcome = 'failed') "
        "FROM _buttress.audit WHERE actor <> ? AND time >= ? GROUP BY bucket",
        [prefix, operator, start.isoformat()],
    )
    counted = {str(bucket): (int(a), int(r), int(f)) for bucket, a, r, f in rows}
    buckets: list[ActivityBucket] = []
    moment = start
    while moment <= end:
        label = moment.isoformat()[:prefix]
        allowed, refused, failed = counted.get(label, (0, 0, 0))
        buckets.append(ActivityBucket(start=label, allowed=allowed, refused=refused, failed=failed))
        moment += width
    return AuditStats(granularity=name, buckets=buckets, refusals_by_code=codes)


# --------------------------------------------------------------------------------------- versions


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
    """Versions older than ``before`` (all when None), newest first."""
    size = _page_size(limit)
    rows = session.fetchall(
        f"SELECT {', '.join(catalog.VERSION_COLUMNS)} FROM _buttress.versions "
        + ("WHERE number < ? " if before is not None else "")
        + "ORDER BY number DESC LIMIT ?",
        [*([before] if before is not None else []), size + 1],
    )
    versions = [_version(row) for row in rows[:size]]
    return VersionPage(
        versions=versions,
        total=int(session.scalar("SELECT count(*) FROM _buttress.versions")),
        next_before=versions[-1].number if len(rows) > size else None,
    )


# -------------------------------------------------------------------------------------- proposals

PROPOSAL_STATUS: Final = ("deployed", "pending", "stale")

_PROPOSALS = """
    WITH listed AS (
        SELECT p.id, p.seq, p.base_version, p.note, p.created_by, p.created_at, p.plan,
            (SELECT min(number) FROM _buttress.versions v WHERE v.proposal_id = p.id) AS deployed_as,
            (SELECT bool_or(passed) FROM _buttress.dry_runs d WHERE d.proposal_id = p.id
                AND d.base_version = p.base_version AND d.plan_hash = p.plan_hash) AS passed
        FROM _buttress.proposals p {where}
    )
    SELECT *, CASE WHEN deployed_as IS NOT NULL THEN 'deployed' WHEN base_version = ? THEN 'pending'
        ELSE 'stale' END AS status
    FROM listed
"""


def _summary(row: dict[str, Any]) -> ProposalSummary:
    plan = json.loads(row["plan"]) if isinstance(row["plan"], str) else row["plan"]
    hazards = sorted({h["code"] for step in plan["steps"] for h in step["hazards"]})
    return ProposalSummary(
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
    )


def proposal_page(
    session: Session,
    *,
    current: int,
    status: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> ProposalPage:
    """Proposals newest first, optionally only those with ``status`` (deployed, pending, stale)."""
    size = _page_size(limit)
    wanted = status if status in PROPOSAL_STATUS else None
    listed = _PROPOSALS.format(where="")
    filtered = f"SELECT * FROM ({listed}) WHERE " + ("status = ?" if wanted else "TRUE")
    params: list[Any] = [current, *([wanted] if wanted else [])]
    cursor = session.execute(
        filtered + (" AND seq < ?" if before_seq is not None else "") + " ORDER BY seq DESC LIMIT ?",
        [*params, *([before_seq] if before_seq is not None else []), size + 1],
    )
    names = [d[0] for d in cursor.description or []]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    matching = int(session.scalar(f"SELECT count(*) FROM ({filtered})", params))
    return ProposalPage(
        proposals=[_summary(row) for row in rows[:size]],
        matching=matching,
        next_before=int(rows[size - 1]["seq"]) if len(rows) > size else None,
    )


def proposal_detail(session: Session, database: str, proposal_id: str, *, current: int) -> ProposalDetail:
    """A proposal with its plan, its latest dry-run report and its approval requests."""
    found = catalog.proposal(session, proposal_id)  # not_found when there is none
    cursor = session.execute(_PROPOSALS.format(where="WHERE p.id = ?"), [proposal_id, current])
    names = [d[0] for d in cursor.description or []]
    row = dict(zip(names, cursor.fetchone() or (), strict=True))
    plan: Plan = found["plan"]
    ran = session.fetchone(
        "SELECT report, created_at FROM _buttress.dry_runs WHERE proposal_id = ? ORDER BY id DESC LIMIT 1",
        [proposal_id],
    )
    return ProposalDetail(
        summary=_summary(row),
        operations=list(found["operations"]),
        target_hash=found["target"].hash(),
        plan_hash=found["plan_hash"],
        steps=list(plan.steps),
        hazards=plan.all_hazards(),
        dry_run=DryRunReport.model_validate_json(ran[0]) if ran else None,
        dry_run_at=str(ran[1]) if ran else None,
        approvals=approval_requests(session, database, proposal_id=proposal_id),
    )


# -------------------------------------------------------------------------------------- approvals


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


def _request(
    session: Session, row: dict[str, Any], database: str, losses: dict[tuple[str, str], list[Loss]]
) -> ApprovalRequest:
    status, decision = approvals.request_status(database, row)
    stale = approvals.stale_reason(session, row) if status in {"pending", "approved"} else None
    if stale is not None:
        status = "stale"
    decision = decision or {}
    rollback = str(row["proposal_id"]).startswith("rollback:")
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
    )


def approval_requests(
    session: Session, database: str, *, proposal_id: str | None = None, limit: int = 100
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
            row for row in approvals.request_rows(session, limit=_page_size(limit)) if row["id"] not in seen
        ][: max(_page_size(limit) - len(rows), 0)]
    losses = _losses(session, rows)
    return [_request(session, row, database, losses) for row in rows]


def open_requests(session: Session, database: str) -> int:
    """How many requests wait for the operator's decision."""
    now = datetime.datetime.now(datetime.UTC).isoformat()
    rows = approvals.request_rows(session, "WHERE used_at IS NULL AND expires_at > ?", [now])
    return sum(
        1
        for row in rows
        if approvals.request_status(database, row)[0] == "pending"
        and approvals.stale_reason(session, row) is None
    )


def approval_request(session: Session, database: str, request_id: str) -> ApprovalRequest:
    """One request and where it stands (``not_found`` when there is none)."""
    rows = approvals.request_rows(session, "WHERE id = ?", [request_id])
    if not rows:
        raise NotFound("approval request", request_id)
    return _request(session, rows[0], database, _losses(session, rows))


UNDELIVERED: Final = (
    "m.held IS NOT NULL OR (m.external AND m.acked_at IS NULL) OR EXISTS (SELECT 1 FROM _buttress.cursors "
    "AS c WHERE c.active AND c.topic = m.topic AND c.last_seq < m.seq)"
)
"""A message some consumer has still to receive, or one held back (as ``list_messages(undelivered=True)``)."""


def unknown_effects(session: Session) -> int:
    """How many effects have no answer after every attempt (the operator retries or resolves them)."""
    return int(session.scalar("SELECT count(*) FROM _buttress.effects WHERE state = 'unknown'"))


def workflow_summary(session: Session) -> WorkflowSummary:
    """Runs by state (most first), unknown effects and undelivered messages, counted in the database."""
    states = session.fetchall(
        "SELECT status, count(*) AS n FROM _buttress.runs GROUP BY status ORDER BY n DESC, status"
    )
    return WorkflowSummary(
        runs_by_status=[Facet(value=str(status), count=int(count)) for status, count in states],
        unknown_effects=unknown_effects(session),
        undelivered_messages=int(
            session.scalar(f"SELECT count(*) FROM _buttress.messages AS m WHERE {UNDELIVERED}")
        ),
    )
