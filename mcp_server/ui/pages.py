"""The control room's pages and the operator's acts, as two registries.

A **page** is a path, a title, a template named after it (``templates/<name>.html``) and a loader:
a function from the request's parameters and the runtime to the template's variables. Each loader
makes audited runtime reads only (most exactly one; the Workflows page ``search_runs``, the Data
page ``browse_data`` for a table, ``read_row`` for a row, ``query`` for a SELECT). The navigation
lists the pages in registry order; a page may show a count beside its name (``badge``).

An **act** is something the operator does from a form: it posts to ``/act/<name>`` with the
session's CSRF token, runs the runtime function its command line counterpart runs (audited as the
operator; a bulk act runs it once per run it lists), and leaves a message for the page it returns to.
When it fails, what was typed is kept for that page (a *draft*, keyed by ``Act.draft``) and shown
again beside the message, which names the object it was about.

Adding a page is one ``Page`` here and one template; adding a form's act is one ``Act`` here.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_server.ui import charts, diffs, present
from runtime.api import RuntimeAPI
from runtime.errors import ButtressError
from runtime.results import ActivityHead, DataFilter, QueryResult, RunRow, VerifyResult
from runtime.schema.spec import NAME_PATTERN, AppSpec
from runtime.store.browse import FILTER_OPS
from runtime.workflows.tables import EFFECT_STATES, RESOLUTIONS, RUN_FILTERS, TERMINAL

PAGE_SIZE: Final = 50
PROPOSAL_STATUS: Final = ("pending", "deployed", "stale")
OUTCOMES: Final = ("ok", "refused", "passed", "failed", "replayed")
LIST_SIZE: Final = 100
BULK_SIZE: Final = 500
MAX_REASON: Final = 2000
MAX_ID: Final = 200
MAX_TEXT: Final = 200
TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d{1,6})?)?)?)?$")
FILTER_PARAM: Final = re.compile(r"^f\.([a-z][a-z0-9_]{0,62})\.([a-z]+)$")
KEY_PARAM: Final = re.compile(r"^k\.([a-z][a-z0-9_]{0,62})$")
OP_WORDS: Final = {
    "eq": "=",
    "ne": "≠",
    "lt": "<",
    "le": "≤",
    "gt": ">",
    "ge": "≥",
    "contains": "contains",
    "startswith": "starts with",
    "isnull": "is empty (NULL)",
    "notnull": "is not empty",
}
BULK: Final = ("retry", "cancel")
RETRYABLE: Final = ("failed", "blocked")


class BadRequest(Exception):
    """A page parameter or form field that cannot be read (a page answers 400 with the message)."""


@dataclass
class Room:
    """What the control room remembers between requests (not the runtime's business)."""

    verified: tuple[VerifyResult, str] | None = None
    """The last chain verification the operator ran here, and when."""


@dataclass(frozen=True)
class View:
    """What a loader or an act gets: the runtime, the request's parameters, the room's memory."""

    runtime: RuntimeAPI
    query: Mapping[str, str]
    params: Mapping[str, str]
    room: Room
    form: Mapping[str, str] = field(default_factory=dict)
    query_all: Sequence[tuple[str, str]] = ()
    """Every query parameter in order, repeated names included (``facet``, ``run``)."""
    form_all: Sequence[tuple[str, str]] = ()
    """Every form field in order, repeated names included (a bulk act's ``run_id``)."""

    def query_list(self, key: str) -> list[str]:
        return [v for k, v in self.query_all if k == key and v.strip()]

    def form_list(self, key: str) -> list[str]:
        return [v for k, v in self.form_all if k == key and v.strip()]


Loader = Callable[[View], dict[str, Any]]


@dataclass(frozen=True)
class Page:
    """One page: ``GET <path>`` renders ``templates/<name>.html`` with what ``load`` returns."""

    name: str
    path: str
    title: str
    load: Loader
    nav: bool = True
    badge: Callable[[ActivityHead], int] | None = None
    """A count shown beside the page's name in the navigation (nothing when zero)."""
    badge_label: str = "waiting"
    """What the badge's count counts, for screen readers ("3 waiting")."""
    parent: str | None = None
    """For a page outside the navigation: the page it belongs to (marked current while it shows)."""


@dataclass(frozen=True)
class Flash:
    """The outcome of an act, shown on the page the operator returns to."""

    kind: str  # "ok" or "error"
    text: str


@dataclass(frozen=True)
class Act:
    """One operator act: ``POST /act/<name>`` runs ``run`` with the form's fields.

    ``what`` names the object the form is about, for the message when it fails ("run hold-1");
    ``draft`` keys the typed fields kept for the page when it fails (None: nothing to keep)."""

    name: str
    run: Callable[[View], Flash]
    what: Callable[[Mapping[str, str]], str]
    draft: Callable[[Mapping[str, str]], str | None] = lambda form: None


# ------------------------------------------------------------------------------------ parameters


def number(values: Mapping[str, str], key: str) -> int | None:
    """An optional non-negative integer parameter."""
    raw = (values.get(key) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"{key} must be a non-negative whole number, not {raw[:40]!r}")
    return int(raw)


def choice(values: Mapping[str, str], key: str, allowed: tuple[str, ...] | None = None) -> str | None:
    """An optional text parameter (one of ``allowed`` when given)."""
    raw = (values.get(key) or "").strip()
    if not raw:
        return None
    if len(raw) > MAX_TEXT or (allowed is not None and raw not in allowed):
        raise BadRequest(f"{key} {raw[:40]!r} is not one of {', '.join(allowed or ())}")
    return raw


def name_param(values: Mapping[str, str], key: str, what: str) -> str | None:
    """An optional spec name (a workflow's, a step's, a topic's)."""
    raw = choice(values, key)
    if raw is not None and not NAME_PATTERN.match(raw):
        raise BadRequest(f"{raw[:40]!r} is not a {what} name")
    return raw


def moment(values: Mapping[str, str], key: str) -> str | None:
    """An optional time as an ISO 8601 prefix (a date, or a date and a time to the minute or second;
    a form's ``datetime-local`` value)."""
    raw = (values.get(key) or "").strip()
    if not raw:
        return None
    if not TIME.match(raw):
        raise BadRequest(f"{key} must be a date and time like 2025-01-31T14:30, not {raw[:40]!r}")
    return raw


def identifier(values: Mapping[str, str], key: str) -> str:
    """A required id (a run's, an effect's): non-empty, at most ``MAX_ID`` characters."""
    raw = (values.get(key) or "").strip()
    if not raw or len(raw) > MAX_ID:
        raise BadRequest(f"{key} must be given (at most {MAX_ID} characters)")
    return raw


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ pages


def load_overview(view: View) -> dict[str, Any]:
    overview = view.runtime.overview()
    return {
        "overview": overview,
        "activity_chart": charts.activity(overview.stats),
        "codes_chart": charts.counts(overview.stats.refusals_by_code, "bad"),
        "states_chart": charts.counts(overview.workflows.runs_by_status, _run_tone),
        "verified": view.room.verified,
    }


def _run_tone(status: str) -> str:
    return present.tone("run", status)


def load_versions(view: View) -> dict[str, Any]:
    page = view.runtime.version_page(before=number(view.query, "before"), limit=PAGE_SIZE)
    return {"page": page}


def load_diff(view: View) -> dict[str, Any]:
    current, _ = view.runtime.current
    after = number(view.query, "to")
    after = current if after is None else after
    before = number(view.query, "from")
    before = max(after - 1, 0) if before is None else before
    comparison = view.runtime.compare_versions(before, after)
    return {"comparison": comparison, "diff": diffs.readable(comparison)}


def load_proposals(view: View) -> dict[str, Any]:
    status = choice(view.query, "status", PROPOSAL_STATUS)
    page = view.runtime.proposal_page(status=status, before_seq=number(view.query, "before"), limit=PAGE_SIZE)
    return {"page": page, "status": status, "statuses": PROPOSAL_STATUS}


def load_proposal(view: View) -> dict[str, Any]:
    proposal_id = view.params["proposal_id"]
    if not re.fullmatch(r"p\d{1,18}", proposal_id):
        raise BadRequest(f"{proposal_id[:40]!r} is not a proposal id (p1, p2, ...)")
    return {"detail": view.runtime.proposal_detail(proposal_id)}


def load_approvals(view: View) -> dict[str, Any]:
    """Requests by where they stand: waiting for a decision, approved (the agent's retry goes through
    once), unable to deploy (stale: only a refusal is left), and decided, used or expired."""
    requests = view.runtime.approval_requests()
    return {
        "waiting": [r for r in requests if r.status == "pending"],
        "approved": [r for r in requests if r.status == "approved"],
        "stale": [r for r in requests if r.status == "stale"],
        "decided": [r for r in requests if r.status not in {"pending", "approved", "stale"}],
    }


def load_audit(view: View) -> dict[str, Any]:
    filters = {
        "agent": choice(view.query, "agent"),
        "operation": choice(view.query, "operation"),
        "outcome": choice(view.query, "outcome", OUTCOMES),
        "code": choice(view.query, "code"),
        "since": moment(view.query, "since"),
        "until": moment(view.query, "until"),
        "q": choice(view.query, "q"),
    }
    reads = view.query.get("reads") == "1"
    page = view.runtime.audit_page(
        agent=filters["agent"],
        operation=filters["operation"],
        outcome=filters["outcome"],
        code=filters["code"],
        since=filters["since"],
        until=filters["until"],
        search=filters["q"],
        hide_operator_reads=not reads,
        before_seq=number(view.query, "before"),
        limit=PAGE_SIZE,
    )
    return {
        "page": page,
        "filters": filters,
        "reads": reads,
        "filtered": any(filters.values()),
        "codes_chart": charts.counts(page.facets.codes, "bad"),
        "verified": view.room.verified,
    }


# ------------------------------------------------------------------------------------------- data


def relation_list(spec: AppSpec) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every entity (with its primary key) and view the current version holds: (name, kind, key)."""
    return [(e.name, "entity", tuple(e.primary_key)) for e in spec.entities] + [
        (v.name, "view", ()) for v in spec.views
    ]


def table_name(values: Mapping[str, str], spec: AppSpec) -> str | None:
    """The ``table`` parameter: an entity or a view of the current version."""
    table = choice(values, "table")
    if table is None:
        return None
    if table not in {name for name, _, _ in relation_list(spec)}:
        raise BadRequest(f"no entity or view named {table[:60]!r} at the current version")
    return table


def data_filters(view: View) -> list[DataFilter]:
    """The filters of a Data page's address (``f.<column>.<op>=<value>``), then the one being added
    with the filter form (``add_col``, ``add_op``, ``add_val``)."""
    found: list[DataFilter] = []
    for key, value in view.query_all:
        matched = FILTER_PARAM.match(key)
        if matched is None:
            continue
        column, op = matched.groups()
        if op not in FILTER_OPS:
            raise BadRequest(f"{op!r} is not a filter ({', '.join(FILTER_OPS)})")
        found.append(DataFilter(column=column, op=op, value=value))
    column = choice(view.query, "add_col")
    if column is not None:
        if not NAME_PATTERN.match(column):
            raise BadRequest(f"{column[:40]!r} is not a column name")
        op = choice(view.query, "add_op", FILTER_OPS) or "eq"
        found.append(DataFilter(column=column, op=op, value=view.query.get("add_val") or ""))
    return found


def filter_params(filters: Sequence[DataFilter], *, without: int | None = None) -> list[tuple[str, str]]:
    """The address parameters that say ``filters`` (all but the one at ``without``)."""
    return [(f"f.{f.column}.{f.op}", f.value or "") for n, f in enumerate(filters) if n != without]


def load_data(view: View) -> dict[str, Any]:
    """Without a table: every entity and view, the entities' rows counted. With ``table``: a page of
    its rows filtered, sorted and faceted (``browse_data``). With ``sql``: one SELECT, a page of its
    rows at a time (``query``)."""
    runtime = view.runtime
    _, spec = runtime.current
    relations = relation_list(spec)
    table = table_name(view.query, spec)
    sql = (view.query.get("sql") or "").strip()
    page = number(view.query, "page") or 0
    out: dict[str, Any] = {
        "relations": relations,
        "table": table,
        "sql": sql,
        "page": page,
        "size": PAGE_SIZE,
        "ops": OP_WORDS,
        "browse": None,
        "browse_error": None,
        "result": None,
        "draft_filter": None,
    }
    if table is not None:
        filters = data_filters(view)
        sort = name_param(view.query, "sort", "column")
        facets = [f for f in view.query_list("facet") if NAME_PATTERN.match(f)]
        descending = view.query.get("desc") == "1"
        out.update(
            filters=filters,
            sort=sort,
            descending=descending,
            facets=facets,
            table_pairs=[("table", table)],
            filter_pairs=filter_params(filters),
            facet_pairs=[("facet", f) for f in facets],
            sort_pairs=[("sort", sort or ""), ("desc", "1" if descending else "")],
        )
        try:
            out["browse"] = runtime.browse_data(
                table,
                filters=filters,
                sort=sort,
                descending=descending,
                offset=page * PAGE_SIZE,
                limit=PAGE_SIZE,
                facets=facets,
            )
        except ButtressError as error:
            # Say why, keep what was typed in the filter form, and show the table as it was before
            # (without the filter being added; or, from a stale address, without its filters).
            out["browse_error"] = present.for_people(error, f"show {table}")
            adding = choice(view.query, "add_col") is not None
            if adding:
                out["draft_filter"] = filters[-1]
            kept = filters[:-1] if adding else []
            out.update(filters=kept, filter_pairs=filter_params(kept))
            out["browse"] = runtime.browse_data(table, filters=kept, limit=PAGE_SIZE)
    elif sql:
        out["result"] = paged_query(runtime, sql, page, PAGE_SIZE)
    elif any(kind == "entity" for _, kind, _ in relations):
        counted = " UNION ALL ".join(
            f"SELECT '{name}' AS entity, count(*) AS row_count FROM {_ident(name)}"
            for name, kind, _ in relations
            if kind == "entity"
        )
        result = runtime.query(counted)
        out["counts"] = {str(row[0]): row[1] for row in result.rows}
    return out


def _ident(name: str) -> str:
    """A spec name as a quoted identifier (spec names are validated; anything else is refused)."""
    if not NAME_PATTERN.match(name):
        raise BadRequest(f"{name[:40]!r} is not a name")
    return f'"{name}"'


@dataclass(frozen=True)
class Rows:
    """A page of a SELECT's answer for the Data page: the rows, where they start, whether more
    follow (and whether the query limits cut them), or the refusal."""

    result: QueryResult | None
    first: int
    more: bool
    limited: bool
    error: present.Problem | None


def paged_query(runtime: RuntimeAPI, sql: str, page: int, size: int) -> Rows:
    """Page ``page`` of the operator's SELECT, run as typed through ``query`` (the guard and its row
    limit: a page past ``max_rows`` rows says so rather than rewriting the statement)."""
    cap = runtime.limits.max_rows
    start = page * size
    if start >= cap:
        return Rows(None, start, False, True, None)
    try:
        result = runtime.query(sql, limit=min(cap, start + size + 1))
    except ButtressError as error:
        return Rows(None, start, False, False, present.for_people(error, "run the query"))
    rows = result.rows[start : start + size]
    more = len(result.rows) > start + size
    limited = result.truncated and not more
    shown = result.model_copy(update={"rows": rows, "row_count": len(rows)})
    return Rows(shown, start, more, limited, None)


def load_row(view: View) -> dict[str, Any]:
    """One row of an entity by its key (``k.<column>=<value>``), with its parents and children."""
    _, spec = view.runtime.current
    table = table_name(view.query, spec)
    if table is None:
        raise BadRequest("say which table: table=<entity>")
    key = {m.group(1): v for k, v in view.query_all if (m := KEY_PARAM.match(k))}
    return {"detail": view.runtime.read_row(table, key), "table": table}


# ------------------------------------------------------------------------ workflows, messages, effects


@dataclass(frozen=True)
class RunFilters:
    """What the Workflows page and a bulk act select runs by."""

    status: str | None = None
    workflow: str | None = None
    q: str | None = None
    step: str | None = None
    code: str | None = None

    def params(self) -> dict[str, str | None]:
        return {
            "status": self.status,
            "workflow": self.workflow,
            "q": self.q,
            "step": self.step,
            "code": self.code,
        }

    @property
    def any(self) -> bool:
        return any(self.params().values())


def run_filters(values: Mapping[str, str]) -> RunFilters:
    code = choice(values, "code")
    if code is not None and not re.fullmatch(r"[a-z_]+(\.[a-z_]+)?", code):
        raise BadRequest(f"{code[:40]!r} is not an error code")
    return RunFilters(
        status=choice(values, "status", RUN_FILTERS),
        workflow=name_param(values, "workflow", "workflow"),
        q=choice(values, "q"),
        step=name_param(values, "step", "step"),
        code=code,
    )


def load_workflows(view: View) -> dict[str, Any]:
    """Runs, newest first, searched and filtered, a page at a time (``search_runs``), with the counts
    by state and the failures grouped."""
    filters = run_filters(view.query)
    before_at, before_id = choice(view.query, "before"), choice(view.query, "before_id")
    _, spec = view.runtime.current
    page = view.runtime.search_runs(
        workflow=filters.workflow,
        status=filters.status,
        search=filters.q,
        step=filters.step,
        code=filters.code,
        before=[before_at, before_id] if before_at and before_id else None,
        limit=PAGE_SIZE,
    )
    summary = view.runtime.workflow_summary()
    return {
        "page": page,
        "filters": filters,
        "statuses": RUN_FILTERS,
        "workflows": tuple(w.name for w in spec.workflows),
        "summary": summary,
        "states_chart": charts.counts(summary.runs_by_status, _run_tone),
        "paged": bool(before_at),
        "retryable": RETRYABLE,
    }


def load_bulk(view: View) -> dict[str, Any]:
    """What a bulk retry or cancel would touch, before it runs: the runs chosen on the Workflows page
    (``run``) or every run matching the filters (up to ``BULK_SIZE``), split into those it applies
    to and those it does not (and why)."""
    what = choice(view.query, "do", BULK)
    if what is None:
        raise BadRequest("say what to do with the runs: do=retry or do=cancel")
    chosen = view.query_list("run")
    if len(chosen) > BULK_SIZE or any(len(r) > MAX_ID for r in chosen):
        raise BadRequest(f"at most {BULK_SIZE} runs at once")
    filters = run_filters(view.query)
    if not chosen and not filters.any:
        raise BadRequest("choose runs on the Workflows page, or filter them first")
    page = view.runtime.search_runs(
        workflow=filters.workflow,
        status=filters.status,
        search=filters.q,
        step=filters.step,
        code=filters.code,
        runs=chosen or None,
        limit=BULK_SIZE,
        failures=False,
    )
    applies: list[tuple[RunRow, str | None]] = []
    skipped: list[tuple[RunRow, str | None]] = []
    for run in page.runs:
        reason = bulk_refusal(what, run)
        (skipped if reason else applies).append((run, reason))
    return {
        "what": what,
        "filters": filters,
        "chosen": chosen,
        "applies": [run for run, _ in applies],
        "skipped": skipped,
        "matching": page.matching,
        "limit": BULK_SIZE,
    }


def bulk_refusal(what: str, run: RunRow) -> str | None:
    """Why ``what`` (retry or cancel) does not apply to ``run`` (None: it does)."""
    if what == "retry":
        if run.status not in RETRYABLE:
            return f"it is {run.status}: only a failed or blocked run is retried"
        if run.step_index < 0:
            return "it failed while compensating: repair its compensations by hand"
        return None
    if run.status in TERMINAL:
        return f"it is already {run.status}"
    return None


def load_run(view: View) -> dict[str, Any]:
    """One run's whole history (``run_history``)."""
    return {"history": view.runtime.run_history(identifier(view.params, "run_id"))}


def load_messages(view: View) -> dict[str, Any]:
    """Undelivered messages (or all, with ``all=1``), newest first, by topic (``list_messages``)."""
    topic = name_param(view.query, "topic", "topic")
    everything = view.query.get("all") == "1"
    _, spec = view.runtime.current
    messages = view.runtime.list_messages(topic=topic, undelivered=not everything, limit=LIST_SIZE)
    return {
        "messages": messages,
        "topic": topic,
        "topics": tuple(t.name for t in spec.topics),
        "everything": everything,
        "size": LIST_SIZE,
    }


def load_effects(view: View) -> dict[str, Any]:
    """Effects in one state (``unknown`` unless asked; ``any`` for all), unknown first (``list_effects``)."""
    raw = (view.query.get("state") or "").strip()
    state = None if raw == "any" else choice(view.query, "state", EFFECT_STATES) or "unknown"
    effects = view.runtime.list_effects(state=state, limit=LIST_SIZE)
    return {"effects": effects, "effect_state": state, "states": EFFECT_STATES, "size": LIST_SIZE}


# ------------------------------------------------------------------------------------------- acts


def act_approve(view: View) -> Flash:
    """``buttress approve``: sign the request with the operator secret (``approve_request``); the
    runtime refuses a request whose plan can no longer deploy (``approval.stale``)."""
    request = view.runtime.approve_request(_request_id(view.form))
    return Flash(
        "ok",
        f"Approved the {request.subject} (request {request.request_id}): the agent's next deploy of this "
        f"exact plan goes through once, until {request.expires_at[:16].replace('T', ' ')} UTC.",
    )


def act_refuse(view: View) -> Flash:
    """Refuse the request (``refuse_request``): the agent's retry of that plan is denied with the
    reason, which must be given (the agent is told it)."""
    reason = (view.form.get("reason") or "").strip()[:MAX_REASON]
    request_id = _request_id(view.form)
    if not reason:
        raise BadRequest("say why: the agent is told your reason when it retries, so it can do otherwise")
    request = view.runtime.refuse_request(request_id, reason=reason)
    return Flash(
        "ok", f"Refused the {request.subject} (request {request.request_id}). The agent will be told why."
    )


def act_verify_audit(view: View) -> Flash:
    """``buttress audit verify``: recompute the chain and check the anchor (``verify_audit``)."""
    result = view.runtime.verify_audit()
    view.room.verified = (result, now())
    if result.ok:
        return Flash("ok", f"Audit chain ok: {result.entries} entries verified.")
    where = f" at entry {result.first_bad_seq}" if result.first_bad_seq else ""
    return Flash("error", f"Audit chain BROKEN{where}: {result.problem}")


def act_cancel_run(view: View) -> Flash:
    """``buttress runs cancel``: compensate the run's completed steps, then mark it cancelled (``cancel_run``)."""
    reason = (view.form.get("reason") or "").strip()[:MAX_REASON] or None
    run = view.runtime.cancel_run(identifier(view.form, "run_id"), reason=reason)
    return Flash("ok", f"Cancelling run {run.run_id}: its completed steps are compensated ({run.status}).")


def act_retry_run(view: View) -> Flash:
    """``buttress runs retry``: a failed run tries its failed step again, a blocked one resends its
    effect with the same key (``retry_run``)."""
    run = view.runtime.retry_run(identifier(view.form, "run_id"))
    return Flash("ok", f"Retrying run {run.run_id} at step {run.step} ({run.status}).")


def act_signal_run(view: View) -> Flash:
    """``buttress runs signal``: send a named signal with a JSON payload to a run (``signal_run``);
    a run waiting for it goes on."""
    run_id = identifier(view.form, "run_id")
    name = (view.form.get("signal") or "").strip()
    if not NAME_PATTERN.match(name):
        raise BadRequest("name the signal: lowercase letters, digits and underscores, starting with a letter")
    payload = _json_object(view.form.get("payload"), "the signal's payload")
    run = view.runtime.signal_run(run_id, name, payload or {})
    return Flash("ok", f"Sent signal {name} to run {run.run_id} ({run.status}).")


def act_resolve_effect(view: View) -> Flash:
    """``buttress effects resolve``: record what the provider did with an effect whose outcome is
    unknown (``resolve_effect``): succeeded continues the run, rejected compensates it."""
    outcome = choice(view.form, "outcome", RESOLUTIONS)
    if outcome is None:
        raise BadRequest("say what the provider did: it succeeded, or it was rejected")
    raw = (view.form.get("response") or "").strip()
    try:
        response = json.loads(raw) if raw else None
    except ValueError as error:
        raise BadRequest(f"the provider's response must be JSON (or left empty): {error}") from None
    effect = view.runtime.resolve_effect(identifier(view.form, "effect_id"), outcome, response=response)
    return Flash(
        "ok",
        f"Effect {effect.effect_id} recorded as {outcome} ({effect.state}); run {effect.run_id} goes on.",
    )


def act_bulk_runs(view: View) -> Flash:
    """Retry or cancel every run the confirmation page listed (``run_id``, repeated): ``retry_run`` or
    ``cancel_run`` once per run, each audited; what could not be done is named with its reason."""
    what = choice(view.form, "do", BULK)
    if what is None:
        raise BadRequest("say what to do with the runs: retry or cancel")
    runs = list(dict.fromkeys(view.form_list("run_id")))
    if not runs:
        raise BadRequest("no run was chosen: tick the runs to act on")
    if len(runs) > BULK_SIZE:
        raise BadRequest(f"at most {BULK_SIZE} runs at once")
    reason = (view.form.get("reason") or "").strip()[:MAX_REASON] or None
    done: list[str] = []
    failed: list[str] = []
    for run_id in runs:
        try:
            if what == "retry":
                view.runtime.retry_run(run_id)
            else:
                view.runtime.cancel_run(run_id, reason=reason)
            done.append(run_id)
        except ButtressError as error:
            failed.append(f"{run_id} ({error.code}: {error.message})")
    verb = "Retrying" if what == "retry" else "Cancelling"
    text = f"{verb} {len(done)} run{'' if len(done) == 1 else 's'}" + (
        f": {', '.join(done)}." if done else "."
    )
    if failed:
        text += f" Not {('retried' if what == 'retry' else 'cancelled')}: {'; '.join(failed)}."
    return Flash("error" if failed else "ok", text)


def _json_object(raw: str | None, what: str) -> dict[str, Any] | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise BadRequest(f"{what} must be a JSON object (or left empty): {error}") from None
    if not isinstance(value, dict):
        raise BadRequest(f'{what} must be a JSON object, like {{"by": "phone"}}')
    return value


def _request_id(form: Mapping[str, str]) -> str:
    request_id = (form.get("request_id") or "").strip()
    if not re.fullmatch(r"r[0-9a-f]{1,32}", request_id):
        raise BadRequest("request_id must be an approval request id (r followed by hex digits)")
    return request_id


def _named(prefix: str, key: str) -> Callable[[Mapping[str, str]], str]:
    return lambda form: f"{prefix} {(form.get(key) or '?')[:MAX_ID]}"


def _keyed(act: str, key: str) -> Callable[[Mapping[str, str]], str | None]:
    return lambda form: f"{act}:{(form.get(key) or '')[:MAX_ID]}"


# -------------------------------------------------------------------------------------- registries

PAGES: Final[tuple[Page, ...]] = (
    Page("overview", "/", "Overview", load_overview),
    Page("versions", "/versions", "Versions", load_versions),
    Page("diff", "/versions/diff", "Diff", load_diff, nav=False, parent="versions"),
    Page("proposals", "/proposals", "Proposals", load_proposals),
    Page("proposal", "/proposals/{proposal_id}", "Proposal", load_proposal, nav=False, parent="proposals"),
    Page("approvals", "/approvals", "Approvals", load_approvals, badge=lambda head: head.pending_approvals),
    Page("audit", "/audit", "Audit", load_audit),
    Page("data", "/data", "Data", load_data),
    Page("row", "/data/row", "Row", load_row, nav=False, parent="data"),
    Page("workflows", "/workflows", "Workflows", load_workflows),
    Page("bulk", "/workflows/bulk", "Bulk retry or cancel", load_bulk, nav=False, parent="workflows"),
    Page("run", "/workflows/runs/{run_id:path}", "Run", load_run, nav=False, parent="workflows"),
    Page("messages", "/messages", "Messages", load_messages),
    Page(
        "effects",
        "/effects",
        "Effects",
        load_effects,
        badge=lambda head: head.unknown_effects,
        badge_label="unknown",
    ),
)
"""Every page, in navigation order."""

ACTS: Final[dict[str, Act]] = {
    act.name: act
    for act in (
        Act("approve", act_approve, _named("approve request", "request_id")),
        Act("refuse", act_refuse, _named("refuse request", "request_id"), _keyed("refuse", "request_id")),
        Act("verify_audit", act_verify_audit, lambda form: "verify the audit chain"),
        Act("cancel_run", act_cancel_run, _named("cancel run", "run_id"), _keyed("cancel_run", "run_id")),
        Act("retry_run", act_retry_run, _named("retry run", "run_id")),
        Act("signal_run", act_signal_run, _named("signal run", "run_id"), _keyed("signal_run", "run_id")),
        Act(
            "resolve_effect",
            act_resolve_effect,
            _named("record the outcome of effect", "effect_id"),
            _keyed("resolve_effect", "effect_id"),
        ),
        Act(
            "bulk_runs",
            act_bulk_runs,
            lambda form: f"{form.get('do') or 'act on'} the chosen runs",
            lambda form: "bulk_runs",
        ),
    )
}
"""Every operator act, by the name its form posts to."""
