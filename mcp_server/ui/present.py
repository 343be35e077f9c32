"""How the control room says things: one vocabulary of states and their tones, the stage a proposal
is at, errors written for the operator, and the short forms of audit arguments.

Pure functions over the runtime's result models, used by every page, so a state reads and looks the
same wherever it appears (a failed dry-run on the Overview, the Proposals list and the proposal's
page; a stale request in the header, the Approvals page and the proposal).

**Tones** give a state its colour, the same on pills, table rows and chart bars:

======  ===========================================================================
tone    what it means
======  ===========================================================================
act     waiting for the operator: a request to decide, a blocked run, an unknown effect
busy    in progress: a run running or waiting, an effect in flight, a proposal not yet deployed
good    done as meant: completed, deployed, dry-run passed, approved, used, succeeded
bad     failed or refused: a failed run or dry-run, a rejected effect, a refused call or request
undone  undone by compensation: compensating, compensated
over    ended without effect, or not started: cancelled, expired, stale, not run, to come
======  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from runtime.errors import ButtressError, Code
from runtime.results import REFUSAL_KEY, ProposalRow

TONES: Final = ("act", "busy", "good", "bad", "undone", "over")
TONE_WORDS: Final = {
    "act": "waits for you",
    "busy": "in progress",
    "good": "done",
    "bad": "failed or refused",
    "undone": "undone",
    "over": "ended, or not started",
}

_TONE: Final[Mapping[str, Mapping[str, str]]] = {
    "run": {
        "running": "busy",
        "waiting": "busy",
        "compensating": "undone",
        "blocked": "act",
        "completed": "good",
        "compensated": "undone",
        "failed": "bad",
        "cancelled": "over",
        "active": "busy",
    },
    "step": {
        "completed": "good",
        "failed": "bad",
        "current": "busy",
        "to come": "over",
        "not run": "over",
        "compensated": "undone",
    },
    "request": {
        "pending": "act",
        "approved": "good",
        "used": "good",
        "refused": "bad",
        "expired": "over",
        "stale": "over",
    },
    "proposal": {"pending": "busy", "deployed": "good", "stale": "over"},
    "dry_run": {"passed": "good", "failed": "bad", "none": "over"},
    "effect": {
        "unknown": "act",
        "pending": "busy",
        "succeeded": "good",
        "resolved": "good",
        "rejected": "bad",
    },
    "message": {
        "held": "bad",
        "leased": "busy",
        "waiting": "busy",
        "acknowledged": "good",
        "delivered": "good",
    },
    "outcome": {
        "ok": "good",
        "passed": "good",
        "replayed": "good",
        "refused": "bad",
        "failed": "bad",
        "retrying": "busy",
        "compensating": "undone",
    },
}


def tone(domain: str, state: str | None) -> str:
    """The tone of ``state`` in ``domain`` (run, step, request, proposal, dry_run, effect, message,
    outcome); ``over`` for anything unknown."""
    return _TONE.get(domain, {}).get(state or "", "over")


# ------------------------------------------------------------------------------------- proposals


@dataclass(frozen=True)
class Stage:
    """Where a proposal stands, in words, with its tone and what the operator may do about it."""

    label: str
    tone: str
    detail: str = ""


def stage(p: ProposalRow) -> Stage:
    """One proposal's stage: deployed, stale, refused by the operator, waiting for approval, approved,
    dry-run failed, dry-run passed (not deployed), or never dry-run."""
    if p.status == "deployed":
        return Stage(f"deployed as version {p.deployed_as}", "good")
    if p.status == "stale":
        return Stage("stale", "over", f"made on version {p.base_version}, which is no longer current")
    if p.approval == "refused":
        return Stage("refused by the operator", "bad", p.approval_reason or "")
    if p.latest_dry_run == "failed":
        return Stage("dry-run failed", "bad", p.dry_run_error or "")
    if p.approval == "pending":
        return Stage("waiting for your approval", "act", p.approval_id or "")
    if p.approval == "approved":
        return Stage("approved: waiting for the agent's deploy", "good", p.approval_id or "")
    if p.approval == "stale":
        return Stage("its approval request can no longer deploy", "over", p.approval_reason or "")
    if p.latest_dry_run == "passed":
        return Stage("dry-run passed, not deployed", "busy")
    return Stage("not dry-run yet", "over")


# ---------------------------------------------------------------------------------------- errors

_FOR_PEOPLE: Final[Mapping[str, str]] = {
    Code.APPROVAL_STALE: "Its plan can no longer deploy, so there is nothing to approve. The agent has to "
    "propose and dry-run the change again on the current version; you may still refuse this request.",
    Code.APPROVAL_INVALID: "It was already decided, used or has expired: nothing is left to do with it.",
    Code.RUN_NOT_ACTIVE: "The run is not in a state this applies to; its page shows where it stands.",
    Code.WORKFLOW_BLOCKED: "Record what the provider did with its unknown effect first (Effects page), "
    "then act on the run.",
    Code.NOT_FOUND: "It may have been removed, or the link is wrong. Use the navigation to find it.",
    Code.POLICY_DENIED: "The operator policy does not allow this.",
    Code.SQL_FORBIDDEN: "The query guard refuses this statement: the Data page reads the application's "
    "tables and views with one SELECT, never the system schema, files or settings.",
    Code.SQL_PARSE: "The statement is not valid SQL; check it and run it again.",
    Code.SQL_UNKNOWN_TABLE: "No entity or view has that name at the current version (see the list on the "
    "left of the Data page).",
    Code.SQL_UNKNOWN_COLUMN: "No column has that name; the table's header lists its columns.",
    Code.SQL_MISMATCH: "The value does not fit the column's type.",
    Code.SQL_PARAM: "The statement names parameters ($name); the Data page runs statements without "
    "parameters.",
    Code.LIMIT_EXCEEDED: "It is larger than the operator's limits allow; narrow it.",
    Code.QUERY_TIMEOUT: "It took longer than the query time limit; narrow it (a WHERE, a LIMIT).",
    Code.LIMIT_RESULT_BYTES: "The answer is larger than the query limits allow; select fewer columns or rows.",
    Code.LIMIT_MEMORY: "It needed more memory than the database may use; narrow it or try again later.",
    Code.ENGINE_BUSY: "The database is busy with other work; try again in a moment.",
    Code.ENGINE_OWNER_GONE: "The process that owned the project stopped; reload the page.",
    Code.ENGINE_ERROR: "The database refused it; the message says why.",
    Code.ACTION_INVALID_ARGS: "A value given is not what it takes; the message says which.",
}


@dataclass(frozen=True)
class Problem:
    """An error as the operator reads it: what went wrong with what, and what to do."""

    title: str
    text: str
    advice: str
    code: str | None


def for_people(error: ButtressError, what: str = "") -> Problem:
    """``error`` written for the operator: its message (about ``what``, when given) and advice for a
    person instead of the hint written for agents."""
    title = f"Could not {what}" if what else "That did not work"
    return Problem(title, error.message, _FOR_PEOPLE.get(str(error.code), ""), str(error.code))


def refusal_message(arguments: Mapping[str, Any]) -> str | None:
    """The message a refused call was answered with, when its audit row keeps one."""
    found = arguments.get(REFUSAL_KEY)
    return str(found) if found else None


def argument_summary(arguments: Mapping[str, Any], *, width: int = 90) -> str:
    """Arguments in one short line: ``key=value`` pairs, long values cut, the refusal message left out."""
    parts: list[str] = []
    for key, value in arguments.items():
        if key == REFUSAL_KEY or value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else _compact(value)
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, default=str, sort_keys=True, separators=(",", ":"))


def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: 850 ms, 12.4 s, 3 min 05 s, 2 h 10 min, 3 d 4 h."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
