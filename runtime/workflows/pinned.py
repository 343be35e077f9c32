"""Runs in flight against a new version: which of them the target could not carry on (pure).

A run follows the definition of the version it started under, but what its steps touch lives in
the version that is current when each step runs: an action step calls the current action by name,
a publish step publishes on the current topic, an effect step sends through the operator's current
connector. A deploy or a rollback must therefore not leave a run whose next steps (or the
compensations it may still need) cannot execute on the target. Per step kind:

* **action** (and an action compensation): the action must exist in the target, change data, and
  take the arguments the run's definition passes — every one known, every required one given,
  each of a type it accepts. Otherwise the run is *stranded*: the dry-run fails naming it.
* **publish**: converted like undelivered messages: a payload field the target topic lacks is taken
  out and retained (and comes back when a version that has it is deployed again); a field it adds
  that may be null is null. A field the target requires but the definition does not produce, or a
  value of a type it does not accept, strands the run. A topic the target lacks holds the message
  back (``message.held``) until the topic returns.
* **wait** for a topic: the target must have the topic and the payload fields the wait matches on.
  A wait for a signal needs nothing (signals carry no schema).
* **effect** (and an effect compensation): the connector must be configured now.
* **sleep**: nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from runtime.schema.flows import argument_problems, typed_params
from runtime.schema.spec import AppSpec, StepSpec, WorkflowSpec
from runtime.workflows.status import RunStatus

RUNS_SHOWN: Final = 5


@dataclass(frozen=True)
class Stranded:
    """One step kind of one definition that runs in flight would reach and the target cannot run."""

    workflow: str
    version: int
    step: str
    problem: str
    runs: tuple[str, ...]
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "version": self.version,
            "step": self.step,
            "problem": self.problem,
            "runs": list(self.runs),
            "count": self.count,
        }


def ahead(
    workflow: WorkflowSpec, status: str, step: int, done: Iterable[str]
) -> list[tuple[str, StepSpec, bool]]:
    """What a run may still execute: (label, step, is_compensation). Going forward: the step it is at
    and every later one, and the compensations of every step (any of them may be needed if a later
    step fails or the run is cancelled). Compensating: the compensations of the completed steps at or
    below its cursor that have not run yet."""
    completed = set(done)
    out: list[tuple[str, StepSpec, bool]] = []
    if status == RunStatus.COMPENSATING:
        for spec in workflow.steps[: max(step, -1) + 1]:
            if (
                spec.compensated_by() is not None
                and spec.name in completed
                and f"{spec.name}.compensation" not in completed
            ):
                out.append((f"{spec.name}.compensation", spec, True))
        return out
    out.extend((spec.name, spec, False) for spec in workflow.steps[step:])
    out.extend(
        (f"{spec.name}.compensation", spec, True)
        for spec in workflow.steps
        if spec.compensated_by() is not None
    )
    return out


def problems_of(
    workflow: WorkflowSpec,
    label: str,
    step: StepSpec,
    compensation: bool,
    target: AppSpec,
    connectors: Iterable[str],
) -> list[str]:
    """Why ``target`` cannot run this step of a run pinned to ``workflow`` (empty when it can)."""
    typed = {**typed_params("input", workflow.params), "run.id": ("text", False)}
    if compensation:
        undo = step.compensated_by()
        assert undo is not None
        if undo.action is not None:
            return _call(undo.action, undo.args, target, typed)
        name = undo.connector
        return [] if name in set(connectors) else [f"its connector {name} is not configured"]
    if step.kind == "action":
        assert step.action is not None
        return _call(step.action, step.args, target, typed)
    if step.kind == "effect":
        return (
            [] if step.connector in set(connectors) else [f"its connector {step.connector} is not configured"]
        )
    if step.kind == "publish":
        assert step.topic is not None
        topic = target.topic(step.topic)
        if topic is None:
            return []  # published and held until the topic returns
        given = {k: v for k, v in step.args.items() if topic.field(k) is not None}
        return [
            f"its message on {topic.name} {problem}"
            for problem in argument_problems(topic.payload, given, typed, noun="payload field")
        ]
    if step.kind == "wait" and step.topic is not None:
        topic = target.topic(step.topic)
        if topic is None:
            return [f"it waits for a message on topic {step.topic}, which the target does not have"]
        missing = sorted(name for name in step.args if topic.field(name) is None)
        if missing:
            return [
                f"it waits for a message on {topic.name} matching fields {missing} the target's payload lacks"
            ]
    return []


def _call(
    name: str, args: Mapping[str, Any], target: AppSpec, typed: Mapping[str, tuple[str, bool]]
) -> list[str]:
    action = target.action(name)
    if action is None:
        return [f"it calls action {name}, which the target does not have"]
    if action.kind != "mutation":
        return [f"it calls action {name}, which the target makes a query"]
    return [
        f"it calls action {name}, but {problem}" for problem in argument_problems(action.params, args, typed)
    ]


def stranded(
    runs: Iterable[Mapping[str, Any]],
    definition: Any,
    target: AppSpec,
    connectors: Iterable[str],
) -> list[Stranded]:
    """Every (definition, step) that runs in flight would reach and ``target`` cannot run, with the runs.

    ``runs``: rows with ``run_id``, ``workflow``, ``version``, ``status``, ``step`` and ``outputs`` (the
    names of its completed steps and compensations); ``definition(version, workflow)`` gives the
    workflow a run is pinned to (None when its version no longer defines it: that run is the
    scheduler's to fail, not the deploy's to refuse).
    """
    names = set(connectors)
    cache: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    found: dict[tuple[str, int, str, str], list[str]] = {}
    for run in runs:
        compensating = run["status"] == RunStatus.COMPENSATING
        done = tuple(sorted(run["outputs"])) if compensating else ()
        key = (run["workflow"], run["version"], compensating, run["step"], done)
        if key not in cache:
            workflow = definition(run["version"], run["workflow"])
            problems: list[tuple[str, str]] = []
            if workflow is not None:
                for label, step, compensation in ahead(workflow, run["status"], run["step"], run["outputs"]):
                    for problem in problems_of(workflow, label, step, compensation, target, names):
                        problems.append((label, problem))
            cache[key] = problems
        for label, problem in cache[key]:
            found.setdefault((run["workflow"], run["version"], label, problem), []).append(run["run_id"])
    return [
        Stranded(workflow, version, label, problem, tuple(sorted(ids)[:RUNS_SHOWN]), len(ids))
        for (workflow, version, label, problem), ids in sorted(found.items())
    ]
