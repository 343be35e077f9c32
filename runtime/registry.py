"""Every runtime operation declared once, on its implementation: what it is, what the policy checks,
how the audit names it, and which surfaces carry it.

A public ``Runtime`` method is an operation when it carries ``@operation(...)``. The declaration sits
on the method, whose signature is the operation's input and whose return annotation its result; the
surfaces are derived from them (``collect``):

- the socket channel carries every operation (``mcp_server.channel``: its result adapters, its
  progress streaming and the ``RemoteRuntime`` methods are built from ``Operation.signature`` and
  ``Operation.result``);
- the MCP tools named in ``tools`` project it for agents, and need its ``capability`` (the policy's
  tool list is derived from it: ``tools.registry.TOOL_CAPABILITY``);
- the CLI commands named in ``cli`` and the control-room acts named in ``acts`` call it for the
  operator.

``tests/test_registry.py`` checks that every surface carries exactly what the declarations say.
This module is pure: it knows capabilities and the operator's name, nothing of the engine.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

from runtime.boundary.policy import Capability
from runtime.schema.spec import AppSpec

OPERATOR: Final = "operator"
"""The identity of the operator (the CLI, the control room): the policy restricts agents, not the operator."""

Progress = Callable[[int, int, str], None]
"""How a long operation reports how far it is: ``(done, total, message)``."""

SpecCheck = Callable[[AppSpec], None]
"""A check a surface adds to every proposal's validation (the server's tool-name check)."""

F = TypeVar("F", bound=Callable[..., Any])


class Kind(StrEnum):
    """What an operation does to the project."""

    READ = "read"
    """Reads only (audited as a read, or not at all when it is polled)."""
    CHANGE = "change"
    """Writes the app's data, catalog or runs, in one audited transaction."""
    DESTRUCTIVE = "destructive"
    """A change that may remove data or undo work (a deploy, a rollback, a cancel, finalize)."""


@dataclass(frozen=True)
class Declaration:
    """What ``@operation`` says of a method."""

    kind: Kind
    capability: Capability | None
    """The capability the policy checks for an agent; None: the operator's alone (agents are refused)."""
    also: tuple[Capability, ...] = ()
    """Further capabilities it may check (a hazardous deploy, a cancel of another agent's run)."""
    audited: str | None = None
    """The operation name its audit rows carry (None: its own name)."""
    polled: bool = False
    """Clients poll it: its answers are not audited, its refusals are."""
    tools: tuple[str, ...] = ()
    cli: tuple[str, ...] = ()
    """CLI commands that call it, as typed (``"runs retry"``)."""
    acts: tuple[str, ...] = ()
    """Control-room acts that call it (``POST /act/<name>``)."""
    progress: bool = False
    """It reports progress (``progress=`` parameter), streamed over the channel and as MCP progress."""


@dataclass(frozen=True)
class Operation:
    """One operation as the surfaces derive from it: its declaration, signature and result type."""

    name: str
    declaration: Declaration
    signature: inspect.Signature
    """The method's parameters without ``self``."""
    result: Any
    """The return annotation, resolved (``list[RunInfo]``)."""

    @property
    def audited_as(self) -> str:
        found = self.declaration.audited
        return self.name if found is None else found


MARK: Final = "__buttress_operation__"


def operation(
    kind: Kind,
    capability: Capability | None,
    *,
    also: tuple[Capability, ...] = (),
    audited: str | None = None,
    polled: bool = False,
    tools: tuple[str, ...] = (),
    cli: tuple[str, ...] = (),
    acts: tuple[str, ...] = (),
    progress: bool = False,
) -> Callable[[F], F]:
    """Declare the decorated ``Runtime`` method an operation (see the module's docstring)."""
    declaration = Declaration(
        kind=kind,
        capability=capability,
        also=also,
        audited=audited,
        polled=polled,
        tools=tools,
        cli=cli,
        acts=acts,
        progress=progress,
    )

    def mark(fn: F) -> F:
        setattr(fn, MARK, declaration)
        return fn

    return mark


def collect(cls: type) -> Mapping[str, Operation]:
    """The operations ``cls`` declares (its own and its bases', the bases' first), with their resolved
    types."""
    found: dict[str, Operation] = {}
    members = {name: fn for base in reversed(cls.__mro__) for name, fn in vars(base).items()}
    for name, fn in members.items():
        declaration = getattr(fn, MARK, None)
        if not isinstance(declaration, Declaration):
            continue
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(fn)
        parameters = [p for p in signature.parameters.values() if p.name != "self"]
        if "actor" not in signature.parameters:
            raise TypeError(f"operation {name} takes no actor")
        if declaration.progress != ("progress" in signature.parameters):
            raise TypeError(
                f"operation {name}: progress is declared {declaration.progress} but its parameters differ"
            )
        found[name] = Operation(
            name=name,
            declaration=declaration,
            signature=signature.replace(parameters=parameters),
            result=hints["return"],
        )
    return found
