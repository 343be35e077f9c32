"""Rules for views, invariants and actions: they change the spec and no table (the views a proposal
touches are re-created once, after every table change, by ``plan``).

Changing an action's parameters or dropping it names the workflows that call it; whether a run in
flight would be stranded is the dry-run's check, not the planner's guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.migrate.hazards import HazardCode, hazard
from runtime.migrate.planners.draft import Context, Draft
from runtime.schema import changes
from runtime.schema.spec import AppSpec


def add_view(old: AppSpec, new: AppSpec, op: changes.AddView, ctx: Context) -> Draft:
    ctx.created_other.add(f"view:{op.view.name}")
    return Draft(
        f"add view {op.view.name}",
        "catalog",
        [],
        [{"op": "drop_view", "name": op.view.name}],
    )


def replace_view(old: AppSpec, new: AppSpec, op: changes.ReplaceView, ctx: Context) -> Draft:
    previous = old.view(op.view.name)
    assert previous is not None
    return Draft(
        f"replace view {op.view.name}",
        "catalog",
        [],
        [{"op": "replace_view", "view": previous.model_dump(mode="json")}],
    )


def drop_view(old: AppSpec, new: AppSpec, op: changes.DropView, ctx: Context) -> Draft:
    previous = old.view(op.name)
    assert previous is not None
    return Draft(
        f"drop view {op.name}",
        "catalog",
        [],
        [{"op": "add_view", "view": previous.model_dump(mode="json")}],
        hazards=[]
        if f"view:{op.name}" in ctx.created_other
        else [hazard(HazardCode.DROP_VIEW, f"drops view {op.name}", op.name)],
    )


def add_invariant(old: AppSpec, new: AppSpec, op: changes.AddInvariant, ctx: Context) -> Draft:
    ctx.created_other.add(f"invariant:{op.invariant.name}")
    return Draft(
        f"add invariant {op.invariant.name}",
        "catalog",
        [],
        [{"op": "drop_invariant", "name": op.invariant.name}],
    )


def drop_invariant(old: AppSpec, new: AppSpec, op: changes.DropInvariant, ctx: Context) -> Draft:
    previous = old.invariant(op.name)
    assert previous is not None
    return Draft(
        f"drop invariant {op.name}",
        "catalog",
        [],
        [{"op": "add_invariant", "invariant": previous.model_dump(mode="json")}],
        hazards=[]
        if f"invariant:{op.name}" in ctx.created_other
        else [hazard(HazardCode.DROP_INVARIANT, f"stops enforcing invariant {op.name}", op.name)],
    )


def add_action(old: AppSpec, new: AppSpec, op: changes.AddAction, ctx: Context) -> Draft:
    ctx.created_other.add(f"action:{op.action.name}")
    return Draft(
        f"add action {op.action.name}", "catalog", [], [{"op": "drop_action", "name": op.action.name}]
    )


def replace_action(old: AppSpec, new: AppSpec, op: changes.ReplaceAction, ctx: Context) -> Draft:
    previous = old.action(op.action.name)
    assert previous is not None
    draft = Draft(
        f"replace action {op.action.name}",
        "catalog",
        [],
        [{"op": "replace_action", "action": previous.model_dump(mode="json")}],
    )
    if not _params_compatible(previous.params, op.action.params):
        _callers_hazard(draft, old, op.action.name, "changes the parameters of")
    return draft


def drop_action(old: AppSpec, new: AppSpec, op: changes.DropAction, ctx: Context) -> Draft:
    previous = old.action(op.name)
    assert previous is not None
    draft = Draft(
        f"drop action {op.name}",
        "catalog",
        [],
        [{"op": "add_action", "action": previous.model_dump(mode="json")}],
        hazards=[]
        if f"action:{op.name}" in ctx.created_other
        else [hazard(HazardCode.DROP_ACTION, f"drops action {op.name}", op.name)],
    )
    _callers_hazard(draft, old, op.name, "drops")
    return draft


def _params_compatible(before: Sequence[Any], after: Sequence[Any]) -> bool:
    """A caller of ``before`` (a step of a run in flight) can call ``after``: every old parameter is
    still there with its type, and every new one may be omitted."""
    new = {p.name: p for p in after}
    old = {p.name: p for p in before}
    for name, param in old.items():
        if name not in new or new[name].type != param.type or (param.nullable and not new[name].nullable):
            return False
    return all(p.nullable for n, p in new.items() if n not in old)


def _callers_hazard(draft: Draft, old: AppSpec, action: str, verb: str) -> None:
    """Name the workflows whose definitions call ``action``: their runs in flight keep calling it. Whether
    one of them would be stranded is a fact the dry-run finds (``workflow.stranded``), not a guess."""
    callers = sorted(w.name for w in old.workflows if action in w.calls)
    if callers:
        draft.hazards.append(
            hazard(
                HazardCode.RUNS_IN_FLIGHT,
                f"{verb} action {action}, which workflow {', '.join(callers)} calls; the dry-run checks "
                "every run in flight against the new version",
                action,
            )
        )
