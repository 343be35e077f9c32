"""The flow parts of the spec: topics (typed message streams), workflows (durable sequences of steps, one
model per kind of step) and subscriptions (a topic feeding a workflow or an action).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from runtime.schema.base import ArgValue, Frozen, LogicalType, Name, ParamName, ParamSpec, StepName


class PayloadField(Frozen):
    """One field of a topic's payload (the same logical types as entity fields)."""

    name: ParamName
    type: LogicalType
    nullable: bool = False
    description: str = ""


class TopicSpec(Frozen):
    """A named stream of typed messages. ``key`` names the payload field that orders them: messages
    with the same key are delivered in the order they were published. ``external``: consumers outside
    Buttress claim its messages with a lease and acknowledge them (``claim_messages``)."""

    name: Name
    description: str = ""
    payload: tuple[PayloadField, ...] = Field(min_length=1)
    key: str | None = None
    external: bool = False

    def field(self, name: str) -> PayloadField | None:
        return next((f for f in self.payload if f.name == name), None)


TRANSIENT: Final = ("effect.unavailable", "engine.busy", "engine.conflict", "limit.timeout")
"""Errors a step retries by default: the next attempt may succeed."""
BUSINESS: Final = (
    "effect.rejected",
    "invariant.violated",
    "action.constraint_violated",
    "workflow.timeout",
)
"""Errors that compensate by default: a permanent answer, not a passing failure."""


class RetryPolicy(Frozen):
    """How a step retries: ``attempts`` in all, waiting ``backoff_s`` then ``factor`` times longer each
    time (at most ``max_backoff_s``), on the error codes in ``on``."""

    attempts: int = Field(default=5, ge=1, le=100)
    backoff_s: float = Field(default=0.5, ge=0, le=3600)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_backoff_s: float = Field(default=60.0, ge=0, le=86400)
    on: tuple[str, ...] = TRANSIENT

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * self.factor ** (attempt - 1)))


class Compensation(Frozen):
    """What undoes a completed step when a later one fails with a business error: an action or an
    effect (through a connector), with arguments that may name the step's own output."""

    action: Name | None = None
    connector: Name | None = None
    args: dict[str, ArgValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> Compensation:
        if (self.action is None) == (self.connector is None):
            raise ValueError("a compensation runs exactly one of: action, connector")
        return self


StepKind = Literal["action", "effect", "publish", "wait", "sleep"]

_NAMED: Final = ("action", "connector", "topic", "signal")


class StoredStep(TypedDict):
    """A step as written (``model_dump``): every key of ``STEP_KEYS``, whatever its kind."""

    name: str
    kind: StepKind
    description: str
    action: str | None
    connector: str | None
    topic: str | None
    signal: str | None
    args: dict[str, Any]
    timeout_s: float | None
    seconds: float | None
    until: Any
    retry: dict[str, Any]
    compensation: dict[str, Any] | None


STEP_KEYS: Final = tuple(StoredStep.__annotations__)
"""Every key of a step as stored, in order. A step is one model per kind, but each is written with
every key (the ones its kind has not as null), as when all kinds were one model: stored specs keep
their canonical JSON and hash, and load back."""


def _null_elsewhere(schema: dict[str, Any]) -> None:
    """A kind's schema names the keys of the other kinds as null: what a step is written with (and
    accepted with) where its kind has no such key, so a written step fits its own kind's schema."""
    properties = schema.setdefault("properties", {})
    for key in STEP_KEYS:
        properties.setdefault(key, {"type": "null"})


class _Step(Frozen):
    """What every step has: a name, its kind, arguments and a retry policy."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_null_elsewhere)

    name: StepName
    kind: StepKind
    description: str = ""
    args: dict[str, ArgValue] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    _names: ClassVar[tuple[str, ...]] = ()
    """The attributes a step of this kind must name."""

    @model_validator(mode="before")
    @classmethod
    def _fits_kind(cls, data: Any) -> Any:
        """Refuse what another kind has, and drop the nulls stored for it (see ``STEP_KEYS``)."""
        if not isinstance(data, dict):
            return data
        kind = typing.get_args(cls.model_fields["kind"].annotation)[0]
        has = cls.model_fields
        for attribute in _NAMED:
            given = data.get(attribute) is not None
            if attribute in cls._names and not given:
                raise ValueError(f"a {kind} step names its {attribute}")
            if given and attribute not in has:
                raise ValueError(f"a {kind} step has no {attribute}")
        if kind == "wait":
            if (data.get("signal") is None) == (data.get("topic") is None):
                raise ValueError("a wait step waits for exactly one of: signal, topic")
        elif data.get("timeout_s") is not None:
            raise ValueError("only a wait step has timeout_s")
        if kind == "sleep":
            if (data.get("seconds") is None) == (data.get("until") is None):
                raise ValueError("a sleep step gives exactly one of: seconds, until")
        elif data.get("seconds") is not None or data.get("until") is not None:
            raise ValueError("only a sleep step has seconds or until")
        if data.get("compensation") is not None and "compensation" not in has:
            raise ValueError("only action and effect steps have a compensation")
        return {key: value for key, value in data.items() if key in has or value is not None}

    @model_serializer(mode="wrap")
    def _every_key(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> StoredStep:
        data: dict[str, Any] = handler(self)
        if info.exclude_none or info.exclude_defaults or info.exclude_unset:
            return typing.cast(StoredStep, data)
        return typing.cast(StoredStep, {key: data.get(key) for key in STEP_KEYS})

    def target(self) -> str | None:
        """What the step names: its action, connector, topic or signal (a sleep step names none)."""
        return None

    def compensated_by(self) -> Compensation | None:
        """What undoes the step once it completed, if anything (only action and effect steps)."""
        return None


class ActionStep(_Step):
    """Run a mutation of the app, exactly once: its record commits with its writes."""

    kind: Literal["action"]
    action: Name
    compensation: Compensation | None = None

    _names = ("action",)

    def target(self) -> str:
        return self.action

    def compensated_by(self) -> Compensation | None:
        return self.compensation


class EffectStep(_Step):
    """Send ``args`` as a JSON request through the operator's ``connector``, with an idempotency key
    derived from the run and the step."""

    kind: Literal["effect"]
    connector: Name
    compensation: Compensation | None = None

    _names = ("connector",)

    def target(self) -> str:
        return self.connector

    def compensated_by(self) -> Compensation | None:
        return self.compensation


class PublishStep(_Step):
    """Publish a message on ``topic`` with payload ``args``."""

    kind: Literal["publish"]
    topic: Name

    _names = ("topic",)

    def target(self) -> str:
        return self.topic


class WaitStep(_Step):
    """Wait for ``signal``, or for a message on ``topic`` whose payload matches ``args``, at most
    ``timeout_s`` (then ``workflow.timeout``)."""

    kind: Literal["wait"]
    topic: Name | None = None
    signal: Name | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=366 * 86400)

    def target(self) -> str | None:
        return self.signal if self.signal is not None else self.topic


class SleepStep(_Step):
    """Sleep ``seconds``, or ``until`` a time."""

    kind: Literal["sleep"]
    seconds: float | None = Field(default=None, ge=0, le=366 * 86400)
    until: ArgValue = None


StepSpec = Annotated[
    ActionStep | EffectStep | PublishStep | WaitStep | SleepStep,
    Field(discriminator="kind"),
    WithJsonSchema(TypeAdapter(StoredStep).json_schema(mode="serialization"), mode="serialization"),
]
"""One step of a workflow, one model per kind (``kind`` tells which): ``action``, ``effect``,
``publish``, ``wait`` or ``sleep``. A step may declare its ``retry`` policy; action and effect steps
their ``compensation``. Written, every kind has the same keys (``StoredStep``): output schemas say so
once, where one alternative per kind would each match every step."""


class WorkflowSpec(Frozen):
    """A durable sequence of steps. A run records each step's outcome; after a crash it resumes at its
    first unfinished step. When a step fails with one of ``compensate_on`` (after its retries), the
    compensations of the completed steps run, newest first."""

    name: Name
    description: str = ""
    params: tuple[ParamSpec, ...] = ()
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    compensate_on: tuple[str, ...] = BUSINESS

    def step(self, name: str) -> StepSpec | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def calls(self) -> tuple[str, ...]:
        """Every action its steps and compensations run."""
        out = [s.action for s in self.steps if isinstance(s, ActionStep)]
        undo = [s.compensated_by() for s in self.steps]
        out += [c.action for c in undo if c is not None and c.action is not None]
        return tuple(dict.fromkeys(out))


class SubscriptionSpec(Frozen):
    """A topic feeding a workflow (one run per message) or an action (one call per message), exactly
    once in effect; ``args`` maps the target's parameters to ``message.<field>`` values."""

    name: Name
    topic: Name
    workflow: Name | None = None
    action: Name | None = None
    args: dict[str, ArgValue] = Field(default_factory=dict)
    description: str = ""
    max_depth: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Deliver only messages fewer than this many hops down a chain: what lets a chain that "
        "comes back to this subscription (a cycle) exist, bounded.",
    )

    @model_validator(mode="after")
    def _one(self) -> SubscriptionSpec:
        if (self.workflow is None) == (self.action is None):
            raise ValueError("a subscription feeds exactly one of: workflow, action")
        return self
