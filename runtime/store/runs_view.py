"""Runs searched and paged (by workflow, state, step, error code, text), failures grouped, and one run's
whole history: its steps against its pinned definition, its events from the audit log, its signals.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from runtime.results import (
    FailureGroup,
    PlannedStep,
    RunDetail,
    RunEvent,
    RunHistory,
    RunPage,
    RunRow,
    SignalInfo,
)
from runtime.schema.spec import StepSpec, WorkflowSpec
from runtime.store.audit_view import AUDIT_COLUMNS, OPERATOR_READS, audit_entry, page_size
from runtime.store.engine import Session
from runtime.workflows import effects as effect_store
from runtime.workflows import store as workflow_store
from runtime.workflows.status import ACTIVE, TERMINAL, RunStatus, status_in

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


@dataclass(frozen=True)
class RunSearch:
    """Which runs: by workflow, state (``active`` for every unfinished one), the step they are at or
    stopped at, their error's code, text found in their id, arguments, error, starter or origin, and
    among the ids ``runs``. Unset filters select everything."""

    workflow: str | None = None
    status: str | None = None
    search: str | None = None
    step: str | None = None
    code: str | None = None
    runs: tuple[str, ...] | None = None

    def arguments(self) -> dict[str, Any]:
        """The filters that are set, as the audit records them."""
        found = {name: getattr(self, name) for name in ("workflow", "status", "search", "step", "code")}
        return {k: v for k, v in found.items() if v is not None} | (
            {"runs": list(self.runs)} if self.runs is not None else {}
        )


def run_filter(session: Session, definitions: Definitions, wanted: RunSearch) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed text) and bound values selecting runs: by workflow, state (``active``
    for every unfinished one), the step it is at or stopped at, its error's code, text found in its
    id, arguments, error, starter or origin, and among the ids ``runs``."""
    workflow, status, search, step, code, runs = (
        wanted.workflow,
        wanted.status,
        wanted.search,
        wanted.step,
        wanted.code,
        wanted.runs,
    )
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
        clauses.append(f"{session.dialect.json_text('error', 'code')} = ?")
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
    code, message = (session.dialect.json_text("error", key) for key in ("code", "message"))
    rows = session.fetchall(
        f"SELECT workflow, version, status, step, {code} AS code, count(*), "
        f"max(updated_at), {session.dialect.arg_max(message, 'updated_at')} FROM _buttress.runs "
        f"WHERE status IN ('failed', 'blocked') {where} GROUP BY workflow, version, status, step, code",
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
    wanted: RunSearch,
    *,
    before: tuple[str, str] | None = None,
    limit: int = 50,
    failures: bool = True,
) -> RunPage:
    """Runs matching every filter that is set, newest first (then by id), continuing after
    ``before`` ([created_at, run_id] of the last run of the previous page); how many match; and
    the failure groups (``failures``)."""
    size = page_size(limit)
    where, params = run_filter(session, definitions, wanted)
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
        failures=failure_groups(session, definitions, workflow=wanted.workflow) if failures else [],
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
    matches = f"{session.dialect.json_text('arguments', 'run_id')} = ?"
    params: list[Any] = [run.created_at[:19], *OPERATOR_READS, run.run_id]
    if effect_ids:
        matches += f" OR {session.dialect.json_text('arguments', 'effect_id')} IN ({', '.join('?' for _ in effect_ids)})"
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
        for entry in (audit_entry(row) for row in rows[:MAX_RUN_EVENTS])
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
