"""The control room's pages and the operator's acts, as two registries.

A **page** is a path, a title, a template named after it (``templates/<name>.html``) and a loader:
a function from the request's parameters and the runtime to the template's variables. Each loader
makes audited runtime reads only (most exactly one; the Data page ``query``, the Workflows page
``list_runs`` and ``workflow_summary``). The navigation lists the pages in registry order; a page may
show a count beside its name (``badge``).

An **act** is something the operator does from a form: it posts to ``/act/<name>`` with the
session's CSRF token, runs exactly one runtime function as the operator (the same one its command
line counterpart runs, audited as the operator), and leaves a message for the page it returns to.

Adding a page is one ``Page`` here and one template; adding a form's act is one ``Act`` here.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel

from mcp_server.ui import charts
from runtime.api import RuntimeAPI
from runtime.errors import ButtressError
from runtime.results import ActivityHead, QueryResult, VerifyResult, VersionComparison
from runtime.schema.spec import NAME_PATTERN, AppSpec
from runtime.workflows.tables import EFFECT_STATES, RESOLUTIONS, RUN_FILTERS

PAGE_SIZE: Final = 50
PROPOSAL_STATUS: Final = ("pending", "deployed", "stale")
OUTCOMES: Final = ("ok", "refused", "passed", "failed", "replayed")
LIST_SIZE: Final = 100
MAX_REASON: Final = 2000
MAX_ID: Final = 200


class BadRequest(Exception):
    """A page parameter that cannot be read (answered with 400 and the message)."""


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
    """One operator act: ``POST /act/<name>`` runs ``run`` with the form's fields."""

    name: str
    run: Callable[[View], Flash]


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
    if len(raw) > 200 or (allowed is not None and raw not in allowed):
        raise BadRequest(f"{key} {raw[:40]!r} is not one of {', '.join(allowed or ())}")
    return raw


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ pages


def load_overview(view: View) -> dict[str, Any]:
    overview = view.runtime.overview()
    return {
        "overview": overview,
        "activity_chart": charts.activity(overview.stats),
        "codes_chart": charts.counts(overview.stats.refusals_by_code),
        "states_chart": charts.counts(overview.workflows.runs_by_status),
        "verified": view.room.verified,
    }


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
    return {"comparison": comparison, "sections": readable_diff(comparison)}


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
    requests = view.runtime.approval_requests()
    return {
        "open": [r for r in requests if r.status in {"pending", "approved"}],
        "decided": [r for r in requests if r.status not in {"pending", "approved"}],
    }


def load_audit(view: View) -> dict[str, Any]:
    filters = {
        "agent": choice(view.query, "agent"),
        "operation": choice(view.query, "operation"),
        "outcome": choice(view.query, "outcome", OUTCOMES),
        "code": choice(view.query, "code"),
    }
    page = view.runtime.audit_page(
        agent=filters["agent"],
        operation=filters["operation"],
        outcome=filters["outcome"],
        code=filters["code"],
        before_seq=number(view.query, "before"),
        limit=PAGE_SIZE,
    )
    return {
        "page": page,
        "filters": filters,
        "filtered": any(filters.values()),
        "codes_chart": charts.counts(page.facets.codes),
        "verified": view.room.verified,
    }


def load_data(view: View) -> dict[str, Any]:
    runtime = view.runtime
    _, spec = runtime.current
    relations = relation_list(spec)
    table = choice(view.query, "table")
    sql = (view.query.get("sql") or "").strip()
    size = max(1, min(PAGE_SIZE, runtime.limits.max_rows - 1))
    out: dict[str, Any] = {"relations": relations, "table": table, "sql": sql, "size": size}
    if table is not None:
        kind_key = {name: (kind, key) for name, kind, key in relations}.get(table)
        if kind_key is None:
            raise BadRequest(f"no entity or view named {table!r} at the current version")
        page = number(view.query, "page") or 0
        order = ", ".join(_ident(c) for c in kind_key[1]) or "1"
        statement = f"SELECT * FROM {_ident(table)} ORDER BY {order} LIMIT {size + 1} OFFSET {page * size}"
        out.update(page=page, result=_rows(runtime, statement, size))
    elif sql:
        out["result"] = _rows(runtime, sql, None)
    elif any(kind == "entity" for _, kind, _ in relations):
        counted = " UNION ALL ".join(
            f"SELECT '{name}' AS entity, count(*) AS row_count FROM {_ident(name)}"
            for name, kind, _ in relations
            if kind == "entity"
        )
        result = runtime.query(counted)
        out["counts"] = {str(row[0]): row[1] for row in result.rows}
    return out


def relation_list(spec: AppSpec) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every entity (with its primary key) and view the current version holds: (name, kind, key)."""
    return [(e.name, "entity", tuple(e.primary_key)) for e in spec.entities] + [
        (v.name, "view", ()) for v in spec.views
    ]


def _ident(name: str) -> str:
    """A spec name as a quoted identifier (spec names are validated; anything else is refused)."""
    if not NAME_PATTERN.match(name):
        raise BadRequest(f"{name[:40]!r} is not a name")
    return f'"{name}"'


@dataclass(frozen=True)
class Rows:
    """A query's answer for the Data page: the rows, whether more follow, or the refusal."""

    result: QueryResult | None
    more: bool
    error: dict[str, Any] | None


def _rows(runtime: RuntimeAPI, sql: str, size: int | None) -> Rows:
    try:
        result = runtime.query(sql, limit=None if size is None else size + 1)
    except ButtressError as error:
        return Rows(None, False, error.to_dict())
    if size is not None and result.row_count > size:
        trimmed = result.model_copy(update={"rows": result.rows[:size], "row_count": size})
        return Rows(trimmed, True, None)
    return Rows(result, result.truncated, None)


# ---------------------------------------------------------------------- workflows, messages, effects


def identifier(values: Mapping[str, str], key: str) -> str:
    """A required id (a run's, an effect's): non-empty, at most ``MAX_ID`` characters."""
    raw = (values.get(key) or "").strip()
    if not raw or len(raw) > MAX_ID:
        raise BadRequest(f"{key} must be given (at most {MAX_ID} characters)")
    return raw


def load_workflows(view: View) -> dict[str, Any]:
    """Runs, newest first, filtered by state and workflow (``list_runs``), with the counts by state."""
    status = choice(view.query, "status", RUN_FILTERS)
    _, spec = view.runtime.current
    names = tuple(w.name for w in spec.workflows)
    workflow = choice(view.query, "workflow")
    if workflow is not None and not NAME_PATTERN.match(workflow):
        raise BadRequest(f"{workflow[:40]!r} is not a workflow name")
    runs = view.runtime.list_runs(workflow=workflow, status=status, limit=LIST_SIZE)
    summary = view.runtime.workflow_summary()
    return {
        "runs": runs,
        "status": status,
        "statuses": RUN_FILTERS,
        "workflow": workflow,
        "workflows": names,
        "summary": summary,
        "states_chart": charts.counts(summary.runs_by_status),
        "size": LIST_SIZE,
    }


def load_run(view: View) -> dict[str, Any]:
    """One run with its steps and effects (``get_run``)."""
    return {"run": view.runtime.get_run(identifier(view.params, "run_id"))}


def load_messages(view: View) -> dict[str, Any]:
    """Undelivered messages (or all, with ``all=1``), newest first, by topic (``list_messages``)."""
    topic = choice(view.query, "topic")
    if topic is not None and not NAME_PATTERN.match(topic):
        raise BadRequest(f"{topic[:40]!r} is not a topic name")
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


# ------------------------------------------------------------------------------------ readable diff


@dataclass(frozen=True)
class DiffItem:
    """One change between two versions, with the definitions on either side when there are any."""

    change: str
    kind: str
    name: str
    before: Any = None
    after: Any = None
    attributes: tuple[tuple[str, Any, Any], ...] = ()


KIND_ORDER: Final = ("entity", "field", "invariant", "view", "action")


def readable_diff(comparison: VersionComparison) -> list[tuple[str, list[DiffItem]]]:
    """The diff's changes grouped by kind (entities and fields first), each with what it was and
    what it became: whole definitions for added, removed and replaced parts, attribute by attribute
    for a changed field or entity."""
    grouped: dict[str, list[DiffItem]] = {}
    for change in comparison.diff.changes:
        kind, name, what = str(change["kind"]), str(change["name"]), str(change["change"])
        before = _definition(comparison.before_spec, kind, name) if what != "added" else None
        after = _definition(comparison.after_spec, kind, name) if what != "removed" else None
        attributes: list[tuple[str, Any, Any]] = []
        if isinstance(change.get("attributes"), dict):
            attributes = [(k, v.get("from"), v.get("to")) for k, v in change["attributes"].items()]
        elif "attribute" in change:
            attributes = [(str(change["attribute"]), change.get("from"), change.get("to"))]
        if attributes:
            before = after = None
        grouped.setdefault(kind, []).append(DiffItem(what, kind, name, before, after, tuple(attributes)))
    order = [k for k in KIND_ORDER if k in grouped] + sorted(k for k in grouped if k not in KIND_ORDER)
    return [(kind, grouped[kind]) for kind in order]


def _definition(spec: AppSpec, kind: str, name: str) -> Any:
    """The definition of a named part of ``spec`` as plain data (``entity.field`` for a field)."""
    if kind == "field":
        entity_name, _, field_name = name.partition(".")
        entity = spec.entity(entity_name)
        found = entity.field(field_name) if entity is not None else None
        return found.model_dump(mode="json") if found is not None else None
    plural = "entities" if kind == "entity" else f"{kind}s"
    for item in getattr(spec, plural, ()):
        if isinstance(item, BaseModel) and getattr(item, "name", None) == name:
            return item.model_dump(mode="json")
    return None


# ------------------------------------------------------------------------------------------- acts


def act_approve(view: View) -> Flash:
    """``buttress approve``: sign the request with the operator secret (``approve_request``)."""
    request = view.runtime.approve_request(_request_id(view.form))
    return Flash(
        "ok",
        f"Approved the {request.subject} (request {request.request_id}): the agent may retry it once, "
        f"until {request.expires_at}.",
    )


def act_refuse(view: View) -> Flash:
    """Refuse the request (``refuse_request``): the agent's retry of that plan is denied with the reason."""
    reason = (view.form.get("reason") or "").strip()[:MAX_REASON]
    request = view.runtime.refuse_request(_request_id(view.form), reason=reason)
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


def act_resolve_effect(view: View) -> Flash:
    """``buttress effects resolve``: record what the provider did with an effect whose outcome is
    unknown (``resolve_effect``): succeeded continues the run, rejected compensates it."""
    outcome = choice(view.form, "outcome", RESOLUTIONS)
    if outcome is None:
        raise BadRequest("say what the provider did: succeeded or rejected")
    raw = (view.form.get("response") or "").strip()
    try:
        response = json.loads(raw) if raw else None
    except ValueError:
        raise BadRequest("the provider's response must be JSON (or left empty)") from None
    effect = view.runtime.resolve_effect(identifier(view.form, "effect_id"), outcome, response=response)
    return Flash(
        "ok",
        f"Effect {effect.effect_id} recorded as {outcome} ({effect.state}); run {effect.run_id} goes on.",
    )


def _request_id(form: Mapping[str, str]) -> str:
    request_id = (form.get("request_id") or "").strip()
    if not re.fullmatch(r"r[0-9a-f]{1,32}", request_id):
        raise BadRequest("request_id must be an approval request id (r followed by hex digits)")
    return request_id


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
    Page("workflows", "/workflows", "Workflows", load_workflows),
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
        Act("approve", act_approve),
        Act("refuse", act_refuse),
        Act("verify_audit", act_verify_audit),
        Act("cancel_run", act_cancel_run),
        Act("retry_run", act_retry_run),
        Act("resolve_effect", act_resolve_effect),
    )
}
"""Every operator act, by the name its form posts to."""
