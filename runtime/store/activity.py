"""What the people who run an application read about it: the audit log filtered, paged and counted;
versions and proposals a page at a time, each proposal with its latest dry-run and approval request;
approval requests and where each stands; the work in flight (runs by state, unknown effects,
undelivered messages) counted; runs searched and paged, failures grouped, and one run's whole history.

Every function takes a snapshot session and returns result models; none writes. Paging and counting
happen in the database, by ``seq`` (the audit log and proposals) or ``number`` (versions), so a page
costs the same with a hundred entries or a million. Filters are fixed clauses with bound values:
no text from a request ever becomes SQL.

The control room (``buttress ui``) reads through these, each page one audited ``Runtime`` read.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    FailureGroup,
    Loss,
    PlannedStep,
    ProposalDetail,
    ProposalPage,
    ProposalRow,
    RunDetail,
    RunEvent,
    RunHistory,
    RunPage,
    RunRow,
    SignalInfo,
    VersionInfo,
    VersionPage,
    VersionRow,
    WorkflowSummary,
)
from runtime.schema.spec import StepSpec, WorkflowSpec
from runtime.store import catalog
from runtime.store.engine import Session
from runtime.workflows import effects as effect_store
from runtime.workflows import store as workflow_store
from runtime.workflows.status import ACTIVE, TERMINAL, RunStatus, status_in

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


OPERATOR_READS: Final = (
    "overview",
    "version_page",
    "diff_versions",
    "proposal_page",
    "read_proposal",
    "list_approvals",
    "audit_page",
    "query",
    "browse_data",
    "read_row",
    "export_data",
    "list_runs",
    "search_runs",
    "workflow_summary",
    "get_run",
    "run_history",
    "list_messages",
    "list_effects",
    "describe_app",
    "list_versions",
    "read_audit",
    "check_sql",
    "list_proposals",
    "version_spec",
)
"""The reads the operator's pages and commands make: what "hide the operator's reads" leaves out
(the operator's acts, approvals to retries, stay in)."""

WORK_ACTOR: Final = "(actor LIKE '% via %' OR actor LIKE 'workflow:%' OR actor LIKE 'subscription:%')"
"""SQL: an entry written by work done on someone's behalf (a run's step, a subscription's delivery),
not by a caller."""


def like_pattern(text: str) -> str:
    """``text`` as a pattern matching it anywhere, its own ``%``, ``_`` and ``\\`` taken literally
    (with ``ESCAPE '\\'``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def audit_filter(
    *,
    actor: str | None = None,
    operation: str | None = None,
    outcome: str | None = None,
    code: str | None = None,
    since: str | None = None,
    until: str | None = None,
    search: str | None = None,
    hide_operator_reads: bool = False,
    operator: str = "operator",
) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed text) and bound values for the filters that are set: equal columns,
    a time range (ISO 8601 prefixes, ``until`` inclusive to its precision), text found (as written)
    in the arguments or the actor, or naming the proposal, and the operator's own reads left out."""
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
    if since:
        clauses.append("time >= ?")
        params.append(since)
    if until:
        clauses.append("time < ?")
        params.append(until + "\uffff")  # every time that starts with ``until`` is in
    if search:  # as written, case and all: an id is found four times faster than by ILIKE
        clauses.append("(contains(CAST(arguments AS VARCHAR), ?) OR proposal_id = ? OR contains(actor, ?))")
        params += [search, search, search]
    if hide_operator_reads:
        marks = ", ".join("?" for _ in OPERATOR_READS)
        clauses.append(f"NOT (actor = ? AND outcome = 'ok' AND operation IN ({marks}))")
        params += [operator, *OPERATOR_READS]
    return " AND ".join(clauses) or "TRUE", params


def audit_page(
    session: Session,
    *,
    actor: str | None = None,
    operation: str | None = None,
    outcome: str | None = None,
    code: str | None = None,
    since: str | None = None,
    until: str | None = None,
    search: str | None = None,
    hide_operator_reads: bool = False,
    before_seq: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """Entries matching every filter that is set, newest first, older than ``before_seq`` if given."""
    where, params = audit_filter(
        actor=actor,
        operation=operation,
        outcome=outcome,
        code=code,
        since=since,
        until=until,
        search=search,
        hide_operator_reads=hide_operator_reads,
    )
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


def recent(session: Session, *, operator: str, limit: int = 10, work: bool = False) -> list[AuditEntry]:
    """The newest entries by agents (anyone but ``operator``), newest first: their own calls, or
    (``work``) the work runs and subscriptions do on their behalf."""
    rows = session.fetchall(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM _buttress.audit WHERE actor <> ? AND "
        f"{'' if work else 'NOT '}{WORK_ACTOR} ORDER BY seq DESC LIMIT ?",
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
    """Versions older than ``before`` (all when None), newest first, each with the first earlier
    version of the same spec hash (looked up for the page's hashes only)."""
    size = _page_size(limit)
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


# -------------------------------------------------------------------------------------- proposals

PROPOSAL_STATUS: Final = ("deployed", "pending", "stale")

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
            CASE WHEN NOT l.passed THEN json_extract_string(l.report, '$.error.code') END AS latest_error,
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


def _latest_requests(session: Session, database: str, proposal_ids: list[str]) -> dict[str, ApprovalRequest]:
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
    database: str,
    *,
    current: int,
    status: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> ProposalPage:
    """Proposals newest first, optionally only those with ``status`` (deployed, pending, stale): the
    page is chosen and counted by status alone, then its proposals are read in full."""
    size = _page_size(limit)
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
                _PROPOSALS.format(where=f"WHERE p.id IN ({marks})") + " ORDER BY seq DESC",
                [*ids, *ids, current],
            )
        )
    requests = _latest_requests(session, database, ids)
    return ProposalPage(
        proposals=[_proposal_row(row, requests.get(str(row["id"]))) for row in rows],
        matching=matching,
        next_before=int(page[size - 1][1]) if len(page) > size else None,
    )


def pending_proposals(session: Session, database: str, *, current: int) -> list[ProposalRow]:
    """Proposals made on the current version and not deployed, oldest first, each with its latest
    dry-run and approval request."""
    rows = _rows(
        session.execute(
            _PROPOSALS.format(where="WHERE p.base_version = ?") + " WHERE deployed_as IS NULL ORDER BY seq",
            [current, current, current],
        )
    )
    requests = _latest_requests(session, database, [str(row["id"]) for row in rows])
    return [_proposal_row(row, requests.get(str(row["id"]))) for row in rows]


def proposal_detail(session: Session, database: str, proposal_id: str, *, current: int) -> ProposalDetail:
    """A proposal with its plan, its latest dry-run report and its approval requests."""
    found = catalog.proposal(session, proposal_id)  # not_found when there is none
    (row,) = _rows(
        session.execute(_PROPOSALS.format(where="WHERE p.id = ?"), [proposal_id, proposal_id, current])
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
            "SELECT proposal_id, plan_hash, arg_max(passed, id) FROM _buttress.dry_runs "
            f"WHERE base_version = (SELECT max(number) FROM _buttress.versions) AND proposal_id IN ({marks}) "
            "GROUP BY proposal_id, plan_hash",
            proposals,
        )
        dry_runs = {(str(pid), str(plan)): "passed" if passed else "failed" for pid, plan, passed in ran}
        return cls(notes, dry_runs)


def _request(
    session: Session,
    row: dict[str, Any],
    database: str,
    losses: dict[tuple[str, str], list[Loss]],
    context: _RequestContext | None = None,
) -> ApprovalRequest:
    status, decision = approvals.request_status(database, row)
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
    context = _RequestContext.read(session, rows)
    return [_request(session, row, database, losses, context) for row in rows]


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


# -------------------------------------------------------------------------------------------- runs

Definitions = Callable[[int, str], WorkflowSpec | None]
"""The definition a run follows: its workflow as deployed in its pinned version (None when unknown)."""

RUN_FAILURES: Final = ("failed", "blocked")
MAX_RUN_EVENTS: Final = 500
MAX_FAILURE_GROUPS: Final = 12


def _seconds(start: str | None, end: str | datetime.datetime | None) -> float | None:
    """Seconds between two ISO 8601 times (``end`` may be a datetime), None when either is missing."""
    if not start or end is None:
        return None
    try:
        first = datetime.datetime.fromisoformat(start)
        last = end if isinstance(end, datetime.datetime) else datetime.datetime.fromisoformat(end)
    except ValueError:
        return None
    if first.tzinfo is None:
        first = first.replace(tzinfo=datetime.UTC)
    if last.tzinfo is None:
        last = last.replace(tzinfo=datetime.UTC)
    return round(max((last - first).total_seconds(), 0.0), 3)


def _run_duration(row: workflow_store.RunRow, now: datetime.datetime) -> float:
    end: str | datetime.datetime = row.updated_at if row.status in TERMINAL else now
    return _seconds(row.created_at, end) or 0.0


def _step_positions(
    session: Session, definitions: Definitions, workflow: str | None, step: str
) -> list[tuple[str, int, int]]:
    """(workflow, version, index) of every pinned definition whose step ``step`` is at ``index``."""
    where, params = ("WHERE workflow = ?", [workflow]) if workflow else ("", [])
    found = []
    for name, version in session.fetchall(
        f"SELECT DISTINCT workflow, version FROM _buttress.runs {where}", params
    ):
        definition = definitions(int(version), str(name))
        if definition is None:
            continue
        for index, spec in enumerate(definition.steps):
            if spec.name == step:
                found.append((str(name), int(version), index))
    return found


def run_filter(
    session: Session,
    definitions: Definitions,
    *,
    workflow: str | None = None,
    status: str | None = None,
    search: str | None = None,
    step: str | None = None,
    code: str | None = None,
    runs: Sequence[str] | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed text) and bound values selecting runs: by workflow, state (``active``
    for every unfinished one), the step it is at or stopped at, its error's code, text found in its
    id, arguments, error, starter or origin, and among the ids ``runs``."""
    clauses: list[str] = []
    params: list[Any] = []
    if runs is not None:
        clauses.append(f"run_id IN ({', '.join('?' for _ in runs) or 'NULL'})")
        params += list(runs)
    if workflow:
        clauses.append("workflow = ?")
        params.append(workflow)
    if status == "active":
        clauses.append(status_in(ACTIVE))
    elif status:
        clauses.append("status = ?")
        params.append(status)
    if code:
        clauses.append("json_extract_string(error, '$.code') = ?")
        params.append(code)
    if search:  # as written, case and all (like the audit's)
        clauses.append(
            "(contains(run_id, ?) OR contains(CAST(args AS VARCHAR), ?) OR contains(coalesce(CAST(error AS "
            "VARCHAR), ''), ?) OR contains(created_by, ?) OR contains(coalesce(acting_for, ''), ?) OR "
            "contains(coalesce(origin, ''), ?))"
        )
        params += [search] * 6
    if step:
        positions = _step_positions(session, definitions, workflow, step)
        clauses.append(
            "("
            + (" OR ".join("(workflow = ? AND version = ? AND step = ?)" for _ in positions) or "FALSE")
            + ")"
        )
        params += [value for position in positions for value in position]
    return " AND ".join(clauses) or "TRUE", params


_RUN_LIST: Final = (
    f"SELECT {workflow_store.RUN_COLUMNS}, (SELECT s.name FROM _buttress.steps AS s WHERE s.run_id = r.run_id "
    "AND s.status = 'failed' AND s.kind <> 'compensation' ORDER BY s.seq DESC LIMIT 1) AS failed_step "
    "FROM _buttress.runs AS r"
)


def _run_row(row: tuple[Any, ...], definitions: Definitions, now: datetime.datetime) -> RunRow:
    *columns, failed_step = row
    parsed = workflow_store.RunRow.of(columns)
    definition = definitions(parsed.version, parsed.workflow)
    info = workflow_store.run_info(parsed, definition)
    steps = definition.steps if definition is not None else ()
    index = parsed.step
    at = info.step
    if at is None and 0 <= index < len(steps) and parsed.status != RunStatus.COMPLETED:
        at = steps[index].name
    if at is None and failed_step is not None:
        at = str(failed_step)
    return RunRow(
        **info.model_dump(),
        at_step=at,
        step_index=index,
        steps_total=len(steps),
        duration_s=_run_duration(parsed, now),
    )


def failure_groups(
    session: Session, definitions: Definitions, *, workflow: str | None = None
) -> list[FailureGroup]:
    """Failed and blocked runs grouped by workflow, the step they stopped at and their error's code,
    largest group first."""
    where, params = ("AND workflow = ?", [workflow]) if workflow else ("", [])
    rows = session.fetchall(
        "SELECT workflow, version, status, step, json_extract_string(error, '$.code') AS code, count(*), "
        "max(updated_at), arg_max(json_extract_string(error, '$.message'), updated_at) FROM _buttress.runs "
        f"WHERE status IN ('failed', 'blocked') {where} GROUP BY ALL",
        params,
    )
    merged: dict[tuple[str, str, str | None, str | None], FailureGroup] = {}
    for name, version, status, index, code, count, latest, message in rows:
        definition = definitions(int(version), str(name))
        steps = definition.steps if definition is not None else ()
        step = steps[int(index)].name if 0 <= int(index) < len(steps) else None
        key = (str(name), str(status), step, None if code is None else str(code))
        found = merged.get(key)
        if found is None:
            merged[key] = FailureGroup(
                workflow=key[0],
                status=key[1],
                step=step,
                code=key[3],
                count=int(count),
                latest_at=str(latest),
                message=message,
            )
        else:
            newer = str(latest) > found.latest_at
            merged[key] = found.model_copy(
                update={
                    "count": found.count + int(count),
                    "latest_at": max(found.latest_at, str(latest)),
                    "message": message if newer else found.message,
                }
            )
    ordered = sorted(merged.values(), key=lambda g: (-g.count, g.workflow, g.step or "", g.code or ""))
    return ordered[:MAX_FAILURE_GROUPS]


def search_runs(
    session: Session,
    definitions: Definitions,
    *,
    workflow: str | None = None,
    status: str | None = None,
    search: str | None = None,
    step: str | None = None,
    code: str | None = None,
    runs: Sequence[str] | None = None,
    before: tuple[str, str] | None = None,
    limit: int = 50,
    failures: bool = True,
) -> RunPage:
    """Runs matching every filter that is set, newest first (then by id), continuing after
    ``before`` ([created_at, run_id] of the last run of the previous page); how many match; and
    the failure groups (``failures``)."""
    size = _page_size(limit)
    where, params = run_filter(
        session, definitions, workflow=workflow, status=status, search=search, step=step, code=code, runs=runs
    )
    paged = where + (" AND (created_at < ? OR (created_at = ? AND run_id > ?))" if before else "")
    after = [before[0], before[0], before[1]] if before else []
    rows = session.fetchall(
        f"{_RUN_LIST} WHERE {paged} ORDER BY created_at DESC, run_id LIMIT ?", [*params, *after, size + 1]
    )
    now = datetime.datetime.now(datetime.UTC)
    shown = [_run_row(row, definitions, now) for row in rows[:size]]
    matching = int(session.scalar(f"SELECT count(*) FROM _buttress.runs WHERE {where}", params))
    return RunPage(
        runs=shown,
        matching=matching,
        next_before=[shown[-1].created_at, shown[-1].run_id] if len(rows) > size else None,
        failures=failure_groups(session, definitions, workflow=workflow) if failures else [],
    )


def _does(step: StepSpec) -> str:
    """What a step does, in words."""
    if step.kind == "action":
        return f"runs action {step.action}"
    if step.kind == "effect":
        return f"sends a request through connector {step.connector}"
    if step.kind == "publish":
        return f"publishes a message on topic {step.topic}"
    if step.kind == "wait":
        what = f"signal {step.signal}" if step.signal else f"a message on topic {step.topic}"
        return f"waits for {what}" + (f" (at most {step.timeout_s:g} s)" if step.timeout_s else "")
    if step.seconds is not None:
        return f"sleeps {step.seconds:g} s"
    return "sleeps until a time"


def _undoes(step: StepSpec) -> str | None:
    undo = step.compensated_by()
    if undo is None:
        return None
    if undo.action:
        return f"action {undo.action}"
    return f"a request through connector {undo.connector}"


def run_events(
    session: Session, run: workflow_store.RunRow, effect_ids: list[str]
) -> tuple[list[RunEvent], bool]:
    """The audited moments of a run, oldest first (at most ``MAX_RUN_EVENTS``, the newest kept):
    its start, each step's attempts, effects sent and answered, signals, and the operator's acts on
    it. Reads (anyone's ``get_run``) are left out. The second value: older events were left out."""
    marks = ", ".join("?" for _ in OPERATOR_READS)
    matches = "json_extract_string(arguments, '$.run_id') = ?"
    params: list[Any] = [run.created_at[:19], *OPERATOR_READS, run.run_id]
    if effect_ids:
        matches += (
            f" OR json_extract_string(arguments, '$.effect_id') IN ({', '.join('?' for _ in effect_ids)})"
        )
        params += effect_ids
    rows = session.fetchall(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM _buttress.audit WHERE time >= ? "
        f"AND operation NOT IN ({marks}) AND ({matches}) ORDER BY seq DESC LIMIT ?",
        [*params, MAX_RUN_EVENTS + 1],
    )
    events = [
        RunEvent(
            seq=entry.seq,
            time=entry.time,
            actor=entry.actor,
            operation=entry.operation,
            outcome=entry.outcome,
            error_code=entry.error_code,
            arguments=entry.arguments,
            by_operator=entry.actor == "operator",
        )
        for entry in (_entry(row) for row in rows[:MAX_RUN_EVENTS])
    ]
    return events[::-1], len(rows) > MAX_RUN_EVENTS


def run_history(session: Session, definitions: Definitions, run_id: str) -> RunHistory:
    """A run with every step of its pinned definition (completed, failed, current, to come), each
    step's attempts from the audit log, its compensations, signals, effects and events."""
    row = workflow_store.require_run(session, run_id)
    recorded = workflow_store.steps_of(session, run_id)
    effects = effect_store.list_effects(session, state=None, run_id=run_id, limit=1000)
    definition = definitions(row.version, row.workflow)
    info = workflow_store.run_info(row, definition)
    detail = RunDetail(**info.model_dump(), steps=recorded, effects=effects)
    events, more = run_events(session, row, [e.effect_id for e in effects])
    signals = [
        SignalInfo(
            seq=int(seq),
            name=str(name),
            payload=workflow_store.parse_json(payload),
            consumed=bool(consumed),
            created_at=str(at),
            created_by=str(by),
        )
        for seq, name, payload, consumed, at, by in session.fetchall(
            "SELECT seq, name, payload, consumed, created_at, created_by FROM _buttress.signals "
            "WHERE run_id = ? ORDER BY seq",
            [run_id],
        )
    ]
    now = datetime.datetime.now(datetime.UTC)
    effect_steps = {e.effect_id: e.step for e in effects}

    def step_of(event: RunEvent) -> str | None:
        named = event.arguments.get("step")
        if isinstance(named, str):
            return named
        effect = event.arguments.get("effect_id")
        return effect_steps.get(effect) if isinstance(effect, str) else None

    by_step: dict[str, list[RunEvent]] = {}
    for event in events:
        name = step_of(event)
        if name is not None and event.operation not in {"retry_run", "cancel_run", "signal_run"}:
            by_step.setdefault(name, []).append(event)
    forward = {s.name: s for s in recorded if s.kind != "compensation"}
    undone = {s.name.removesuffix(".compensation"): s for s in recorded if s.kind == "compensation"}
    status, index = row.status, row.step
    planned: list[PlannedStep] = []
    specs = definition.steps if definition is not None else ()
    for position, spec in enumerate(specs):
        done = forward.get(spec.name)
        compensation = undone.get(spec.name)
        current = done is None and position == index and status in {"running", "waiting", "blocked"}
        if done is not None:
            state = (
                "compensated"
                if compensation is not None and compensation.status == "completed"
                else done.status
            )
        elif current:
            state = "current"
        elif status in TERMINAL or status == "compensating":
            state = "not run"
        else:
            state = "to come"
        started = done.started_at if done else (row.step_started_at if current else None)
        finished = done.finished_at if done else None
        planned.append(
            PlannedStep(
                index=position,
                name=spec.name,
                kind=spec.kind,
                does=_does(spec),
                state=state,
                attempts=done.attempts if done else (row.attempts if current else 0),
                started_at=started,
                finished_at=finished,
                duration_s=_seconds(started, finished or (now if current else None)),
                output=done.output if done else None,
                error=done.error if done else (row.error if current and row.error else None),
                compensation=_undoes(spec),
                compensation_state=compensation.status if compensation else None,
                events=by_step.get(spec.name, []),
            )
        )
    known = {spec.name for spec in specs}
    for extra in recorded:  # a record whose step the definition no longer names (or no definition)
        base = extra.name.removesuffix(".compensation")
        if base not in known and extra.kind != "compensation":
            planned.append(
                PlannedStep(
                    index=extra.seq,
                    name=extra.name,
                    kind=extra.kind,
                    does="(not in the definition it follows)",
                    state=extra.status,
                    attempts=extra.attempts,
                    started_at=extra.started_at,
                    finished_at=extra.finished_at,
                    duration_s=_seconds(extra.started_at, extra.finished_at),
                    output=extra.output,
                    error=extra.error,
                    events=by_step.get(extra.name, []),
                )
            )
    compensations = [
        PlannedStep(
            index=s.seq,
            name=s.name,
            kind=s.kind,
            does=f"undoes {s.name.removesuffix('.compensation')}",
            state=s.status,
            attempts=s.attempts,
            started_at=s.started_at,
            finished_at=s.finished_at,
            duration_s=_seconds(s.started_at, s.finished_at),
            output=s.output,
            error=s.error,
            events=by_step.get(s.name, []),
        )
        for s in recorded
        if s.kind == "compensation"
    ]
    return RunHistory(
        run=detail,
        steps=planned,
        compensations=compensations,
        events=events,
        events_more=more,
        signals=signals,
        waits_for=[s.signal for s in specs if s.kind == "wait" and s.signal],
        duration_s=_run_duration(row, now),
    )
