"""The audit log as people read it: filtered and paged by ``seq``, its facets (the values there are to
filter on), its latest entries, and its activity counted by time bucket, all in the database.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Final

from runtime.results import ActivityBucket, AuditEntry, AuditFacets, AuditPage, AuditStats, Facet
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


def page_size(limit: int) -> int:
    return min(max(int(limit), 1), MAX_PAGE)


def audit_entry(row: tuple[Any, ...]) -> AuditEntry:
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
    size = page_size(limit)
    paged = where + (" AND seq < ?" if before_seq is not None else "")
    rows = session.fetchall(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM _buttress.audit WHERE {paged} ORDER BY seq DESC LIMIT ?",
        [*params, *([before_seq] if before_seq is not None else []), size + 1],
    )
    entries = [audit_entry(row) for row in rows[:size]]
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
        [operator, page_size(limit)],
    )
    return [audit_entry(row) for row in rows]


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
