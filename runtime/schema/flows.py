"""Validation of topics, workflows, subscriptions and action emits (pure).

Every reference is resolved against the spec it lives in: a step's action must exist and receive
exactly the parameters it declares (the required ones at least); a publish must fill the topic's
required payload fields with no unknown one; a ``Ref`` names only what exists where it is used
(a workflow's parameter, an *earlier* step, a subscribed topic's payload field, an action's
parameter). Connectors are the operator's (``buttress.toml``), not the spec's: their names are
checked when a proposal is dry-run against the running configuration.

All problems are reported at once (``details.problems``), like the other objects of a spec.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from runtime.errors import Code, SpecError
from runtime.schema import graph, usage
from runtime.schema.spec import (
    ActionSpec,
    AppSpec,
    ArgValue,
    Emit,
    ParamSpec,
    PayloadField,
    Ref,
    StepSpec,
    SubscriptionSpec,
    TopicSpec,
    WorkflowSpec,
)
from runtime.schema.types import constant_fits

CODE_PATTERN: Final = re.compile(r"\A[a-z_]+(\.[a-z_]+)+\Z")
"""An error code, matched whole (``fullmatch``; ``\\Z`` keeps ``match`` whole too)."""

Typed = Mapping[str, tuple[str, bool]]
"""A value path (``input.order_id``) -> its logical type and whether it may be null."""


def typed_params(scope: str, params: Iterable[ParamSpec | PayloadField]) -> dict[str, tuple[str, bool]]:
    return {f"{scope}.{p.name}": (p.type, p.nullable) for p in params}


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, kind: str, name: str, problem: str) -> None:
        self.items.append({"kind": kind, "name": name, "problem": problem})


def validate_flows(spec: AppSpec) -> None:
    """Raise ``spec.invalid`` listing every topic, workflow, subscription and emit that does not fit."""
    problems = _Problems()
    _unique(problems, "topic", [t.name for t in spec.topics])
    _unique(problems, "workflow", [w.name for w in spec.workflows])
    _unique(problems, "subscription", [s.name for s in spec.subscriptions])
    for topic in spec.topics:
        _topic(problems, topic)
    for workflow in spec.workflows:
        _workflow(problems, spec, workflow)
    for subscription in spec.subscriptions:
        _subscription(problems, spec, subscription)
    for action in spec.actions:
        for index, emit in enumerate(action.emits):
            _emit(problems, spec, action, index, emit)
    if not problems.items:
        for cycle in graph.unbounded_cycles(spec):
            kind, name = cycle.path[0].split(":", 1)
            problems.add(
                kind,
                name,
                "starts a chain that comes back to itself and would run forever: "
                + " -> ".join(cycle.path)
                + " (declare max_depth on a subscription in it to bound it, or break the cycle)",
            )
    if problems.items:
        first = problems.items[0]
        message = (
            f"{first['kind']} {first['name']!r}: {first['problem']}"
            if len(problems.items) == 1
            else f"{len(problems.items)} problems: "
            + "; ".join(f"{p['kind']} {p['name']!r}: {p['problem']}" for p in problems.items)
        )
        raise SpecError(
            Code.SPEC_INVALID,
            message,
            hint="Fix each problem in details.problems in the same proposal (a workflow that calls a "
            "dropped or changed action is replaced with replace_workflow).",
            details={"problems": problems.items},
        )


def _unique(problems: _Problems, kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.add(kind, name, "defined twice")
        seen.add(name)


def _topic(problems: _Problems, topic: TopicSpec) -> None:
    names = [f.name for f in topic.payload]
    if len(set(names)) != len(names):
        problems.add("topic", topic.name, "its payload names a field twice")
    if topic.key is not None and topic.field(topic.key) is None:
        problems.add("topic", topic.name, f"key {topic.key!r} is not a payload field ({', '.join(names)})")


def _workflow(problems: _Problems, spec: AppSpec, workflow: WorkflowSpec) -> None:
    where = workflow.name
    params = {p.name for p in workflow.params}
    if len(params) != len(workflow.params):
        problems.add("workflow", where, "declares a parameter twice")
    names = [s.name for s in workflow.steps]
    if len(set(names)) != len(names):
        problems.add("workflow", where, "names a step twice")
    for code in workflow.compensate_on:
        if not CODE_PATTERN.fullmatch(code):
            problems.add(
                "workflow", where, f"compensate_on {code!r} is not an error code (like effect.rejected)"
            )
    earlier: set[str] = set()
    typed = {**typed_params("input", workflow.params), "run.id": ("text", False)}
    for step in workflow.steps:
        label = f"step {step.name}"
        allowed = {"input": params, "steps": set(earlier), "run": {"id"}}
        _step(problems, spec, workflow, step, label, allowed, typed)
        comp = step.compensated_by()
        if comp is not None:
            comp_allowed = {"input": params, "steps": {*earlier, step.name}, "run": {"id"}}
            if comp.action is not None:
                _call(
                    problems,
                    "workflow",
                    where,
                    f"{label} compensation",
                    spec,
                    comp.action,
                    comp.args,
                    comp_allowed,
                    typed,
                )
            else:
                _refs(problems, "workflow", where, f"{label} compensation", comp.args.values(), comp_allowed)
        for code in step.retry.on:
            if not CODE_PATTERN.fullmatch(code):
                problems.add("workflow", where, f"{label} retries on {code!r}, which is not an error code")
        earlier.add(step.name)


def _step(
    problems: _Problems,
    spec: AppSpec,
    workflow: WorkflowSpec,
    step: StepSpec,
    label: str,
    allowed: Mapping[str, set[str]],
    typed: Typed,
) -> None:
    where = workflow.name
    if step.kind == "action":
        assert step.action is not None
        _call(problems, "workflow", where, label, spec, step.action, step.args, allowed, typed)
    elif step.kind == "effect":
        _refs(problems, "workflow", where, label, step.args.values(), allowed)
    elif step.kind == "publish":
        assert step.topic is not None
        _payload(
            problems,
            "workflow",
            where,
            label,
            spec,
            step.topic,
            step.args,
            allowed,
            complete=True,
            typed=typed,
        )
    elif step.kind == "wait":
        if step.topic is not None:
            _payload(problems, "workflow", where, label, spec, step.topic, step.args, allowed, complete=False)
        else:
            _refs(problems, "workflow", where, label, step.args.values(), allowed)
    elif step.kind == "sleep" and step.until is not None:
        if isinstance(step.until, Ref):
            _refs(problems, "workflow", where, label, [step.until], allowed)
        elif not _is_time(step.until):
            problems.add("workflow", where, f"{label} sleeps until {step.until!r}, which is not an ISO time")


def _subscription(problems: _Problems, spec: AppSpec, subscription: SubscriptionSpec) -> None:
    where = subscription.name
    topic = spec.topic(subscription.topic)
    if topic is None:
        problems.add("subscription", where, f"topic {subscription.topic!r} does not exist")
        return
    allowed = {"message": {f.name for f in topic.payload}}
    typed = typed_params("message", topic.payload)
    if subscription.action is not None:
        action = spec.action(subscription.action)
        if action is not None and action.kind != "mutation":
            problems.add(
                "subscription", where, f"action {subscription.action!r} is a query; it changes nothing"
            )
        _call(
            problems,
            "subscription",
            where,
            "its target",
            spec,
            subscription.action,
            subscription.args,
            allowed,
            typed,
        )
    else:
        assert subscription.workflow is not None
        workflow = spec.workflow(subscription.workflow)
        if workflow is None:
            problems.add("subscription", where, f"workflow {subscription.workflow!r} does not exist")
            return
        _arguments(
            problems, "subscription", where, "its target", workflow.params, subscription.args, allowed, typed
        )


def _emit(problems: _Problems, spec: AppSpec, action: ActionSpec, index: int, emit: Emit) -> None:
    where, label = action.name, f"emit {index}"
    if action.kind != "mutation":
        problems.add("action", where, f"{label}: only a mutation emits (a query changes nothing)")
        return
    allowed: dict[str, set[str]] = {"args": {p.name for p in action.params}, "result": {"*"}}
    typed = typed_params("args", action.params)
    if emit.publish is not None:
        _payload(
            problems,
            "action",
            where,
            label,
            spec,
            emit.publish,
            emit.args,
            allowed,
            complete=True,
            typed=typed,
        )
    elif emit.start is not None:
        workflow = spec.workflow(emit.start)
        if workflow is None:
            problems.add("action", where, f"{label} starts workflow {emit.start!r}, which does not exist")
        else:
            _arguments(problems, "action", where, label, workflow.params, emit.args, allowed, typed)
    else:
        _refs(problems, "action", where, label, emit.args.values(), allowed)
    if emit.run_id is not None:
        _refs(problems, "action", where, label, [emit.run_id], allowed)


def _call(
    problems: _Problems,
    kind: str,
    where: str,
    label: str,
    spec: AppSpec,
    action_name: str,
    args: Mapping[str, ArgValue],
    allowed: Mapping[str, set[str]],
    typed: Typed,
) -> None:
    action = spec.action(action_name)
    if action is None:
        known = ", ".join(a.name for a in spec.actions) or "none"
        problems.add(
            kind, where, f"{label} calls action {action_name!r}, which does not exist (actions: {known})"
        )
        return
    _arguments(problems, kind, where, label, action.params, args, allowed, typed)


def _arguments(
    problems: _Problems,
    kind: str,
    where: str,
    label: str,
    params: Iterable[ParamSpec],
    args: Mapping[str, ArgValue],
    allowed: Mapping[str, set[str]],
    typed: Typed,
) -> None:
    for problem in argument_problems(params, args, typed):
        problems.add(kind, where, f"{label} {problem}")
    _refs(problems, kind, where, label, args.values(), allowed)


def argument_problems(
    params: Iterable[ParamSpec | PayloadField],
    args: Mapping[str, ArgValue],
    typed: Typed,
    *,
    noun: str = "parameter",
) -> list[str]:
    """What is wrong with ``args`` for ``params``: unknown names, required ones missing, and values
    whose type or nullability does not fit — constants by their value, references by the type of
    what they name (``typed``; a reference of unknown type is left to the run)."""
    out: list[str] = []
    declared = {p.name: p for p in params}
    unknown = sorted(set(args) - set(declared))
    if unknown:
        out.append(f"passes unknown {noun}s {unknown} (expected: {sorted(declared)})")
    missing = sorted(n for n, p in declared.items() if not p.nullable and n not in args)
    if missing:
        out.append(f"does not pass required {noun}s {missing}")
    for name, value in args.items():
        param = declared.get(name)
        if param is None:
            continue
        if isinstance(value, Ref):
            found = typed.get(value.from_)
            if found is None:
                continue
            source, nullable = found
            if not usage.carries(source, param.type):
                out.append(f"passes {value.from_} ({source}) to {noun} {name} ({param.type})")
            elif nullable and not param.nullable:
                out.append(f"passes {value.from_}, which may be null, to required {noun} {name}")
        elif value is None:
            if not param.nullable:
                out.append(f"passes null to required {noun} {name} ({param.type})")
        elif not constant_fits(value, param.type):
            out.append(f"passes {value!r} to {noun} {name}, which is {param.type}")
    return out


def _payload(
    problems: _Problems,
    kind: str,
    where: str,
    label: str,
    spec: AppSpec,
    topic_name: str,
    args: Mapping[str, ArgValue],
    allowed: Mapping[str, set[str]],
    *,
    complete: bool,
    typed: Typed | None = None,
) -> None:
    topic = spec.topic(topic_name)
    if topic is None:
        problems.add(kind, where, f"{label} names topic {topic_name!r}, which does not exist")
        return
    fields = {f.name: f for f in topic.payload}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        problems.add(kind, where, f"{label} names payload fields {unknown} that topic {topic.name} lacks")
    if complete:
        missing = sorted(n for n, f in fields.items() if not f.nullable and n not in args)
        if missing:
            problems.add(
                kind, where, f"{label} leaves required payload fields {missing} of {topic.name} empty"
            )
        for problem in argument_problems(
            topic.payload, {k: v for k, v in args.items() if k in fields}, typed or {}, noun="payload field"
        ):
            if "required payload fields" not in problem:
                problems.add(kind, where, f"{label} {problem}")
    _refs(problems, kind, where, label, args.values(), allowed)


def _refs(
    problems: _Problems,
    kind: str,
    where: str,
    label: str,
    values: Iterable[Any],
    allowed: Mapping[str, set[str]],
) -> None:
    for value in values:
        if not isinstance(value, Ref):
            continue
        parts = value.parts
        names = allowed.get(parts[0])
        if names is None:
            places = ", ".join(f"{k}.*" for k in allowed) or "nothing"
            problems.add(kind, where, f"{label}: {value.from_!r} is not available here (use {places})")
        elif parts[0] == "steps":
            if parts[1] not in names:
                problems.add(kind, where, f"{label}: {value.from_!r} names no earlier step")
        elif "*" not in names and parts[1] not in names:
            problems.add(kind, where, f"{label}: {value.from_!r} names nothing ({parts[0]}: {sorted(names)})")


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
