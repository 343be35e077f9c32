"""What the runtime's parts may use of the runtime: one typed protocol per consumer, each naming only
the members that module uses.

``runtime.runtime.Runtime`` is the facade that owns the database; the modules behind it (deploy and
rollback, the plan checks, the action runner, the step runner and the scheduler, the workflow
operations) are handed it, but see it through these protocols. ``Runtime`` satisfies each one
structurally (``mypy --strict`` checks it where it passes itself), so nothing under ``runtime/``
imports the facade and the package's import graph has no cycle (``tests/test_layers.py``).

The shared pieces: ``Store`` (the engine and the audit log), ``Policed`` (the policy and limits in
force), ``Current`` (the committed version as the writer lane last left it), ``ActionRunning`` (an
action run inside a caller's transaction) and ``Scheduling`` (what the workflow operations ask the
scheduler). The consumers: ``CheckContext``, ``RollbackContext``, ``DeployContext``,
``ActionContext``, ``StepContext`` (also the scheduler's, ``SchedulerContext``),
``WorkflowContext``, ``ControlRoomContext`` and ``ReadContext``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

from runtime.boundary.approvals import Filing
from runtime.boundary.policy import Acting, Capability, Limits, Policy
from runtime.errors import ButtressError
from runtime.migrate.bind import Bound
from runtime.registry import SpecCheck
from runtime.results import ActionResult, QueryResult, VerifyResult
from runtime.schema.changes import Operation
from runtime.schema.spec import AppSpec, WorkflowSpec
from runtime.store.audit import Auditor
from runtime.store.engine import Engine, Tx
from runtime.store.fingerprint import Fingerprint

T = TypeVar("T")


@dataclass(frozen=True)
class Current:
    """The committed version as the writer lane last left it, with what is derived from its spec."""

    number: int
    spec: AppSpec
    relations: dict[str, tuple[str, ...]]
    hash: str

    @classmethod
    def of(cls, number: int, spec: AppSpec) -> Current:
        return cls(number, spec, spec.relations(), spec.hash())


# ------------------------------------------------------------------------------------------ pieces


class Store(Protocol):
    """The database and its audit log."""

    @property
    def engine(self) -> Engine: ...

    @property
    def audit(self) -> Auditor: ...


class Policed(Protocol):
    """The operator's policy and the limits in force (each read once per operation)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def limits(self) -> Limits: ...


class ActionRunning(Protocol):
    """Runs an action inside a transaction its caller commits and audits (a step, a delivery)."""

    def run_in(
        self, tx: Tx, name: str, args: dict[str, Any], *, actor: str, acting: Acting | None = None
    ) -> ActionResult: ...


class Scheduling(Protocol):
    """What the workflow operations ask of the scheduler."""

    def definition(self, version: int, workflow: str) -> WorkflowSpec: ...

    def wake(self) -> None: ...


# --------------------------------------------------------------------------------------- consumers


class CheckContext(Policed, Protocol):
    """``migrate.checks``: the checks a plan passes before COMMIT (catalog, bindings, runs, limits)."""

    @property
    def spec_checks(self) -> list[SpecCheck]: ...

    def expected_catalog(self, spec: AppSpec) -> Fingerprint: ...

    def bound(self, spec: AppSpec) -> Bound: ...


class RollbackContext(CheckContext, Protocol):
    """``migrate.rollback``: an authorised, audited change that moves the version."""

    @property
    def audit(self) -> Auditor: ...

    def authorize(self, actor: str, capability: Capability, *, what: str) -> None: ...

    def audited(
        self,
        operation: str,
        actor: str,
        arguments: dict[str, Any],
        act: Callable[[Tx], T],
        *,
        timeout: float | None = None,
    ) -> T: ...

    def publish(self, tx: Tx, number: int, spec: AppSpec) -> None: ...

    def after_version_change(self, version: int) -> None: ...


class DeployContext(RollbackContext, Protocol):
    """``migrate.deploy``: propose, dry-run, deploy and finalize; proposals meet the policy's word."""

    def policy_check_proposal(self, ops: Sequence[Operation], actor: str = ...) -> None: ...

    def policy_check_actions(self, target: AppSpec, ops: Sequence[Operation], actor: str = ...) -> None: ...


class ActionContext(Store, Policed, Protocol):
    """``logic.actions``: an action run on a snapshot or the writer lane, authorised and audited."""

    @property
    def state(self) -> Current: ...

    def authorize_action(self, actor: str, action: str) -> None: ...

    def catch_up(self) -> bool: ...

    def refusing(
        self, operation: str, actor: str, arguments: dict[str, Any]
    ) -> AbstractContextManager[None]: ...

    def record_read(self, operation: str, actor: str, arguments: dict[str, Any]) -> None: ...


class StepContext(Store, Policed, Protocol):
    """``workflows.steps`` and ``workflows.delivery``: steps and deliveries recorded with their effect."""

    @property
    def current(self) -> tuple[int, AppSpec]: ...

    @property
    def actions(self) -> ActionRunning: ...


SchedulerContext: TypeAlias = StepContext
"""``workflows.scheduler``: it reads snapshots and hands itself to the step runner, nothing more."""


class WorkflowContext(Store, Policed, Protocol):
    """``workflows.service``: the workflow and message operations, authorised and audited."""

    @property
    def current(self) -> tuple[int, AppSpec]: ...

    @property
    def scheduler(self) -> Scheduling: ...

    def authorize(self, actor: str, capability: Capability, *, what: str) -> None: ...

    def refusing(
        self, operation: str, actor: str, arguments: dict[str, Any]
    ) -> AbstractContextManager[None]: ...

    def reading(self, operation: str, actor: str, arguments: dict[str, Any], call: Callable[[], T]) -> T: ...


class ControlRoomContext(Store, Policed, Protocol):
    """``runtime.control_room``: the control room's reads and the operator's acts."""

    @property
    def state(self) -> Current: ...
    @property
    def drift(self) -> list[str]: ...
    @property
    def scheduler(self) -> Scheduling: ...
    @property
    def filing(self) -> Filing: ...
    def authorize(self, actor: str, capability: Capability, *, what: str) -> None: ...
    def refusing(
        self, operation: str, actor: str, arguments: dict[str, Any]
    ) -> AbstractContextManager[None]: ...
    def reading(self, operation: str, actor: str, arguments: dict[str, Any], call: Callable[[], T]) -> T: ...
    def audited(
        self,
        operation: str,
        actor: str,
        arguments: dict[str, Any],
        act: Callable[[Tx], T],
        *,
        timeout: float | None = None,
    ) -> T: ...
    def flush_reads(self) -> None: ...
    def _query(self, sql: str, params: dict[str, Any], limit: int | None) -> QueryResult:
        """The ``query`` tool's guarded read (its analysis, limits and conversion), unaudited."""
        ...


class ReadContext(ControlRoomContext, Protocol):
    """``runtime.reads``: describe, versions, proposals, the guarded query, check_sql, the audit log."""

    @property
    def current(self) -> tuple[int, AppSpec]: ...
    def record_read(self, operation: str, actor: str, arguments: dict[str, Any]) -> None: ...
    def catch_up(self) -> bool: ...
    @property
    def agent_role(self) -> bool: ...
    def record_refusal(
        self, operation: str, actor: str, arguments: dict[str, Any], error: ButtressError
    ) -> None: ...
    def verify_audit(self, *, actor: str = ...) -> VerifyResult: ...
