"""The graph of what sets what running in a spec, and everything one call may set in motion (pure).

Starting a run, publishing a message, running an action that emits, signalling or cancelling a run:
each may make other things run later — a workflow's actions and compensations, the connectors its
effects use, the subscriptions a message feeds and what they start, transitively. The policy decides
on all of it when the call is made (``denied``), not only on the tool the agent called: an agent
refused ``run_action secret`` is refused a workflow, a publish or a cancel that would run it too.

The same graph, read without an entry point, is what ``cycles`` walks: a chain of topic →
subscription → workflow or action → publish or emit that comes back to where it started would run
forever, so a spec may hold one only where a subscription on it declares ``max_depth``.

>>> from runtime.schema.spec import AppSpec, ActionSpec, Emit, TopicSpec, PayloadField, SubscriptionSpec
>>> spec = AppSpec(
...     actions=(ActionSpec(name="note", kind="mutation", statements=("select 1",),
...                         emits=(Emit(publish="noted"),)),),
...     topics=(TopicSpec(name="noted", payload=(PayloadField(name="n", type="text", nullable=True),)),),
...     subscriptions=(SubscriptionSpec(name="again", topic="noted", action="note"),),
... )
>>> sorted(of_action(spec, "note").topics), [c.path for c in cycles(spec)]
(['noted'], [('action:note', 'topic:noted', 'subscription:again', 'action:note')])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from runtime.schema.spec import AppSpec, StepSpec, WorkflowSpec

Kind = Literal["actions", "workflows", "topics", "connectors"]
"""What a reach holds, and what an agent's policy lists name."""
KINDS: Final[tuple[Kind, ...]] = ("actions", "workflows", "topics", "connectors")


class Allows(Protocol):
    def allows(self, kind: Kind, name: str, /) -> bool: ...


@dataclass
class Reach:
    """The actions, workflows, topics and connectors a call may set running."""

    actions: set[str] = field(default_factory=set)
    workflows: set[str] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    connectors: set[str] = field(default_factory=set)

    def items(self) -> Iterator[tuple[Kind, str]]:
        for kind in KINDS:
            for name in sorted(getattr(self, kind)):
                yield kind, name

    def denied(self, grant: Allows) -> list[tuple[Kind, str]]:
        """What the grant does not cover, in a stable order (empty: all of it may run)."""
        return [(kind, name) for kind, name in self.items() if not grant.allows(kind, name)]


class _Walker:
    def __init__(self, spec: AppSpec) -> None:
        self.spec = spec
        self.reach = Reach()

    def action(self, name: str) -> None:
        if name in self.reach.actions:
            return
        self.reach.actions.add(name)
        found = self.spec.action(name)
        for emit in found.emits if found is not None else ():
            if emit.publish is not None:
                self.topic(emit.publish)
            elif emit.start is not None:
                self.workflow(emit.start)

    def workflow(self, name: str) -> None:
        if name in self.reach.workflows:
            return
        self.reach.workflows.add(name)
        found = self.spec.workflow(name)
        if found is not None:
            self.steps(found.steps, compensations=True)

    def steps(self, steps: Iterable[StepSpec], *, compensations: bool) -> None:
        for step in steps:
            self.step(step)
            if compensations:
                self.compensation(step)

    def step(self, step: StepSpec) -> None:
        if step.kind == "action" and step.action is not None:
            self.action(step.action)
        elif step.kind == "effect" and step.connector is not None:
            self.reach.connectors.add(step.connector)
        elif step.kind == "publish" and step.topic is not None:
            self.topic(step.topic)

    def compensation(self, step: StepSpec) -> None:
        undo = step.compensated_by()
        if undo is None:
            return
        if undo.action is not None:
            self.action(undo.action)
        if undo.connector is not None:
            self.reach.connectors.add(undo.connector)

    def topic(self, name: str) -> None:
        if name in self.reach.topics:
            return
        self.reach.topics.add(name)
        for subscription in self.spec.subscriptions:
            if subscription.topic != name:
                continue
            if subscription.action is not None:
                self.action(subscription.action)
            if subscription.workflow is not None:
                self.workflow(subscription.workflow)


def of_action(spec: AppSpec, name: str) -> Reach:
    """Running action ``name``: it, and what its emits publish or start, transitively."""
    walker = _Walker(spec)
    walker.action(name)
    return walker.reach


def of_workflow(spec: AppSpec, name: str) -> Reach:
    """Starting workflow ``name``: every step and compensation of it, transitively."""
    walker = _Walker(spec)
    walker.workflow(name)
    return walker.reach


def of_topic(spec: AppSpec, name: str) -> Reach:
    """Publishing on ``name``: every subscription it feeds, and what they run, transitively."""
    walker = _Walker(spec)
    walker.topic(name)
    return walker.reach


def of_run(
    spec: AppSpec, definition: WorkflowSpec, *, steps: Iterable[StepSpec], compensations: Iterable[StepSpec]
) -> Reach:
    """What a run pinned to ``definition`` may still run: ``steps`` to come and the ``compensations`` of
    completed ones (the actions they call, and their emits, as ``spec`` — the current version — has
    them)."""
    walker = _Walker(spec)
    walker.steps(steps, compensations=False)
    for step in compensations:
        walker.compensation(step)
    return walker.reach


@dataclass(frozen=True)
class Cycle:
    """A chain that comes back to where it started: its nodes in order (``kind:name``)."""

    path: tuple[str, ...]


def _edges(spec: AppSpec) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}

    def add(source: str, target: str) -> None:
        out.setdefault(source, []).append(target)

    for action in spec.actions:
        for emit in action.emits:
            if emit.publish is not None:
                add(f"action:{action.name}", f"topic:{emit.publish}")
            elif emit.start is not None:
                add(f"action:{action.name}", f"workflow:{emit.start}")
    for workflow in spec.workflows:
        for step in workflow.steps:
            if step.kind == "action" and step.action is not None:
                add(f"workflow:{workflow.name}", f"action:{step.action}")
            if step.kind == "publish" and step.topic is not None:
                add(f"workflow:{workflow.name}", f"topic:{step.topic}")
            undo = step.compensated_by()
            if undo is not None and undo.action is not None:
                add(f"workflow:{workflow.name}", f"action:{undo.action}")
    for subscription in spec.subscriptions:
        node = f"subscription:{subscription.name}"
        add(f"topic:{subscription.topic}", node)
        add(
            node,
            f"action:{subscription.action}" if subscription.action else f"workflow:{subscription.workflow}",
        )
    return out


def cycles(spec: AppSpec) -> list[Cycle]:
    """Every elementary cycle of the graph, each once, from its smallest node (Johnson-style DFS over a
    graph of at most a few hundred nodes)."""
    edges = _edges(spec)
    nodes = sorted(set(edges) | {t for targets in edges.values() for t in targets})
    found: list[Cycle] = []
    for start_index, start in enumerate(nodes):
        allowed = set(nodes[start_index:])
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for target in sorted(set(edges.get(node, ())), reverse=True):
                if target == start:
                    found.append(Cycle((*path, start)))
                elif target in allowed and target not in path:
                    stack.append((target, [*path, target]))
    return found


def unbounded_cycles(spec: AppSpec) -> list[Cycle]:
    """The cycles no subscription on them bounds with ``max_depth``."""
    bounded = {f"subscription:{s.name}" for s in spec.subscriptions if s.max_depth is not None}
    return [c for c in cycles(spec) if not bounded & set(c.path)]
