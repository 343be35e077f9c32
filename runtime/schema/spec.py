"""The AppSpec: the whole application as one frozen, declarative document.

Entities (one table each), invariants (queries that must return no rows), views and actions.
Canonical JSON of the spec hashes to the version hash; DDL, validators and tool schemas are
derived from it and never written twice.

>>> spec = AppSpec()
>>> spec.hash() == AppSpec().hash()
True
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import typing
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from runtime.schema.types import parse_type

NAME_PATTERN: Final = re.compile(r"\A[a-z][a-z0-9_]{0,62}\Z")
"""A name, matched whole: ``\\Z`` is the end of the text (``$`` also matches before a final newline)."""

# DuckDB's reserved keywords (duckdb_keywords(), categories 'reserved' and 'type_function').
RESERVED_WORDS: Final[frozenset[str]] = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "anti",
        "array",
        "as",
        "asc",
        "asof",
        "asymmetric",
        "at",
        "authorization",
        "binary",
        "both",
        "by",
        "case",
        "cast",
        "check",
        "collate",
        "collation",
        "column",
        "columns",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "default",
        "deferrable",
        "desc",
        "describe",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "generated",
        "glob",
        "group",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "lambda",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "map",
        "natural",
        "not",
        "notnull",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "outer",
        "overlaps",
        "pivot",
        "pivot_longer",
        "pivot_wider",
        "placing",
        "positional",
        "primary",
        "qualify",
        "references",
        "returning",
        "right",
        "select",
        "semi",
        "show",
        "similar",
        "some",
        "struct",
        "summarize",
        "symmetric",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "true",
        "try_cast",
        "tuple",
        "union",
        "unique",
        "unpack",
        "unpivot",
        "using",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
        "rowid",
        "main",
        "temp",
        "system",
        "information_schema",
        "pg_catalog",
    ]
)
RESERVED_PREFIXES: Final[tuple[str, ...]] = ("duckdb_", "pg_", "sqlite_", "information_schema", "buttress_")


RESERVED_PARAMS: Final[frozenset[str]] = frozenset(
    {"ctx", "context", "idempotency_key", "self", "cls", "args", "kwargs"}
    | set(keyword.kwlist)
    | set(keyword.softkwlist)
    | {name for name in dir(BaseModel) if not name.startswith("_")}
)
"""Names an action parameter may not take: each parameter becomes an argument of the action's own
tool (``app_<name>``), beside ``ctx`` and ``idempotency_key``, and a field of a pydantic model."""


def check_param_name(name: str) -> str:
    """A valid name that is also free to be an action parameter."""
    check_name(name)
    if name in RESERVED_PARAMS or name.startswith("model_"):
        raise ValueError(
            f"{name!r} is reserved and cannot name an action parameter (ctx, idempotency_key, Python "
            "keywords and model_* are taken); choose another name"
        )
    return name


def check_name(name: str) -> str:
    """Validate an identifier for an entity, field, view, invariant, index or action."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid name: use 1-63 characters, lowercase ASCII letters, digits and '_', "
            "starting with a letter"
        )
    if name in RESERVED_WORDS:
        raise ValueError(f"{name!r} is a reserved SQL word; choose another name")
    if name.startswith(RESERVED_PREFIXES):
        raise ValueError(f"{name!r} uses a prefix reserved for system objects")
    return name


def check_step_name(name: str) -> str:
    """A step's name: the name pattern, but SQL words are fine (a step's name never reaches SQL)."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"{name!r} is not a valid step name: use 1-63 characters, lowercase ASCII letters, digits and "
            "'_', starting with a letter"
        )
    return name


Name = Annotated[str, AfterValidator(check_name)]
StepName = Annotated[str, AfterValidator(check_step_name)]
ParamName = Annotated[str, AfterValidator(check_param_name)]


def _check_type(raw: str) -> str:
    return parse_type(raw)


LogicalType = Annotated[str, AfterValidator(_check_type)]

DEFAULT_EXPRESSIONS: Final[dict[str, str]] = {
    "now()": "now()",
    "current_date": "current_date",
    "uuid()": "uuid()",
    "gen_random_uuid()": "uuid()",
    "autoincrement": "autoincrement",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DefaultExpr(_Frozen):
    """A default computed by the database: ``now()``, ``current_date``, ``uuid()`` or ``autoincrement``.

    ``autoincrement`` draws from a sequence in the system schema. The runtime names it when the
    field is created (an agent never does), so that later renames do not change it.
    """

    expr: str
    sequence: str | None = Field(
        default=None, description="Chosen by the runtime when the field is created; omit it."
    )

    @field_validator("sequence")
    @classmethod
    def _runtime_chosen(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        agent = isinstance(info.context, dict) and info.context.get("agent")
        if agent or not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "the sequence of an autoincrement default is chosen by the runtime; omit 'sequence'"
            )
        return value

    @field_validator("expr")
    @classmethod
    def _known(cls, value: str) -> str:
        key = value.strip().lower()
        if key not in DEFAULT_EXPRESSIONS:
            raise ValueError(
                f"default expression {value!r} is not allowed; use one of: {', '.join(DEFAULT_EXPRESSIONS)}"
            )
        return DEFAULT_EXPRESSIONS[key]


JsonScalar = str | int | float | bool
DefaultValue = DefaultExpr | JsonScalar | list[Any] | dict[str, Any]


OnDelete = Literal["restrict", "cascade", "set_null"]


class FieldSpec(_Frozen):
    """One column. NOT NULL unless ``nullable``; ``references`` is ``entity.field``, and ``on_delete``
    says what deleting the referenced row does to rows pointing at it: ``restrict`` (refused while
    they exist), ``cascade`` (they are deleted too) or ``set_null`` (the field becomes NULL)."""

    name: Name
    type: LogicalType
    nullable: bool = False
    default: DefaultValue | None = None
    check: str | None = None
    references: str | None = None
    on_delete: OnDelete = "restrict"
    description: str = ""

    @field_validator("default", mode="before")
    @classmethod
    def _expr_dicts(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict) and set(value) <= {"expr", "sequence"} and "expr" in value:
            return DefaultExpr.model_validate(value, context=info.context)
        return value

    @property
    def default_expr(self) -> DefaultExpr | None:
        return self.default if isinstance(self.default, DefaultExpr) else None

    @property
    def autoincrement(self) -> bool:
        return self.default_expr is not None and self.default_expr.expr == "autoincrement"

    @property
    def reference(self) -> tuple[str, str] | None:
        if self.references is None:
            return None
        entity, _, field = self.references.partition(".")
        return entity, field


class IndexSpec(_Frozen):
    """A secondary (non-unique) index. Use unique sets for uniqueness."""

    name: Name
    columns: tuple[Name, ...] = Field(min_length=1)


class EntitySpec(_Frozen):
    """One entity, stored as one table. Every entity has a primary key (row identity makes rollback lossless)."""

    name: Name
    fields: tuple[FieldSpec, ...] = Field(min_length=1)
    primary_key: tuple[Name, ...] = Field(min_length=1)
    unique: tuple[tuple[Name, ...], ...] = ()
    indexes: tuple[IndexSpec, ...] = ()
    description: str = ""

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


class InvariantSpec(_Frozen):
    """A business rule: ``sql`` selects the violating rows and must return none."""

    name: Name
    description: str = ""
    sql: str


class ViewSpec(_Frozen):
    """A derived view: a name and one SELECT."""

    name: Name
    sql: str
    description: str = ""


class ParamSpec(_Frozen):
    """A typed action parameter, referenced in statements as ``$name``."""

    name: ParamName
    type: LogicalType
    nullable: bool = False
    description: str = ""


# ---------------------------------------------------------------- values taken from a run or a call

REF_PATTERN: Final = re.compile(
    r"\A(input|args|result|message|signal)\.[a-z][a-z0-9_]{0,62}\Z"
    r"|\Asteps\.[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}\Z"
    r"|\Arun\.id\Z"
)
"""A value path, matched whole (``fullmatch``; ``\\Z`` keeps ``match`` whole too)."""


class Ref(_Frozen):
    """A value taken from where it is used, instead of a constant: ``{"from": "input.customer"}``.

    ``input.<param>`` a workflow's parameter; ``steps.<step>.<field>`` the output of an earlier step
    (an action's first row, an effect's JSON response, a received message's payload or signal);
    ``run.id`` the run's id; ``args.<param>`` / ``result.<column>`` an action's argument or the first
    row it returned (in ``emits``); ``message.<field>`` the payload of the message a subscription
    delivers.
    """

    from_: str = Field(alias="from", description="Where the value comes from, e.g. input.customer.")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)

    @field_validator("from_")
    @classmethod
    def _path(cls, value: str) -> str:
        if not REF_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a value path: use input.<param>, steps.<step>.<field>, run.id, "
                "args.<param>, result.<column>, message.<field> or signal.<field>"
            )
        return value

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.from_.split("."))


ArgValue = Ref | str | int | float | bool | None
"""A constant (JSON scalar) or a ``Ref``."""


class Emit(_Frozen):
    """Something a mutation does in its own transaction besides its writes (the transactional outbox):
    publish a message on a topic, start a workflow run, or signal a run. It exists if and only if the
    action's writes commit."""

    publish: Name | None = Field(default=None, description="A topic to publish on.")
    start: Name | None = Field(default=None, description="A workflow to start.")
    signal: Name | None = Field(default=None, description="A signal to send to the run named by run_id.")
    args: dict[str, ArgValue] = Field(
        default_factory=dict, description="The payload, the workflow's arguments, or the signal's payload."
    )
    run_id: ArgValue = Field(default=None, description="The run to start (an idempotency key) or to signal.")

    @model_validator(mode="after")
    def _one(self) -> Emit:
        chosen = [k for k in ("publish", "start", "signal") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("an emit does exactly one of: publish, start, signal")
        if self.signal is not None and self.run_id is None:
            raise ValueError("a signal emit names the run in run_id")
        return self


class ActionSpec(_Frozen):
    """Application logic: named, typed, analysed SQL run by the runtime."""

    name: Name
    description: str = ""
    kind: Literal["query", "mutation"]
    params: tuple[ParamSpec, ...] = ()
    statements: tuple[str, ...] = Field(min_length=1)
    emits: tuple[Emit, ...] = Field(
        default=(), description="Messages, runs and signals the mutation creates with its writes."
    )


# ------------------------------------------------------------------ topics, workflows, subscriptions


class PayloadField(_Frozen):
    """One field of a topic's payload (the same logical types as entity fields)."""

    name: ParamName
    type: LogicalType
    nullable: bool = False
    description: str = ""


class TopicSpec(_Frozen):
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


class RetryPolicy(_Frozen):
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


class Compensation(_Frozen):
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


class _Step(_Frozen):
    """What every step has: a name, its kind, arguments and a retry policy."""

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
    ActionStep | EffectStep | PublishStep | WaitStep | SleepStep, Field(discriminator="kind")
]
"""One step of a workflow, one model per kind (``kind`` tells which): ``action``, ``effect``,
``publish``, ``wait`` or ``sleep``. A step may declare its ``retry`` policy; action and effect steps
their ``compensation``."""

COMPENSABLE: Final = (ActionStep, EffectStep)
"""The kinds of step that may declare a compensation."""


class WorkflowSpec(_Frozen):
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


class SubscriptionSpec(_Frozen):
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


CheckedBy = Literal["duckdb", "buttress"]


class AppSpec(_Frozen):
    """The whole application. Version 0 is the empty spec.

    ``checked_by`` says who enforces ``references`` and field ``check`` expressions: ``buttress``
    (new projects) checks them on the rows each transaction wrote — references at its end, with
    ``on_delete`` behaviours, so rows can be deleted in any order, and checks on the rows each
    statement returns — so a parent is altered without rebuilding its children and a check is
    added or dropped without rebuilding its table; ``duckdb`` (projects made before) keeps DuckDB
    FOREIGN KEY and CHECK constraints. A ``set_checked_by`` operation moves a project between
    them, planned, dry-run and reversible like any change. Unique keys stay on DuckDB's index.
    """

    entities: tuple[EntitySpec, ...] = ()
    invariants: tuple[InvariantSpec, ...] = ()
    views: tuple[ViewSpec, ...] = ()
    actions: tuple[ActionSpec, ...] = ()
    checked_by: CheckedBy = "duckdb"
    topics: tuple[TopicSpec, ...] = ()
    workflows: tuple[WorkflowSpec, ...] = ()
    subscriptions: tuple[SubscriptionSpec, ...] = ()

    def entity(self, name: str) -> EntitySpec | None:
        return next((e for e in self.entities if e.name == name), None)

    def view(self, name: str) -> ViewSpec | None:
        return next((v for v in self.views if v.name == name), None)

    def invariant(self, name: str) -> InvariantSpec | None:
        return next((i for i in self.invariants if i.name == name), None)

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)

    def topic(self, name: str) -> TopicSpec | None:
        return next((t for t in self.topics if t.name == name), None)

    def workflow(self, name: str) -> WorkflowSpec | None:
        return next((w for w in self.workflows if w.name == name), None)

    def subscription(self, name: str) -> SubscriptionSpec | None:
        return next((s for s in self.subscriptions if s.name == name), None)

    def relations(self) -> dict[str, tuple[str, ...]]:
        """Every name agent SQL may read, with its columns: entities and views (views best-effort)."""
        out: dict[str, tuple[str, ...]] = {e.name: e.field_names for e in self.entities}
        for view in self.views:
            out[view.name] = view_columns(view, out)
        return out

    def canonical_json(self) -> str:
        """Deterministic JSON of the spec. Keys added after the first release are written only when
        they differ from their default, so every spec stored before keeps its hash."""
        data = self.model_dump(mode="json")
        if data.get("checked_by") == "duckdb":
            del data["checked_by"]
        for key in ("topics", "workflows", "subscriptions"):
            if not data.get(key):
                data.pop(key, None)
        for subscription in data.get("subscriptions", ()):
            if subscription.get("max_depth") is None:
                subscription.pop("max_depth", None)
        for action in data["actions"]:
            if not action.get("emits"):
                action.pop("emits", None)
        for entity in data["entities"]:
            for field_ in entity["fields"]:
                if field_.get("on_delete") == "restrict":
                    del field_["on_delete"]
        return canonical_json(data)

    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def referencing(self, entity: str) -> Iterator[tuple[EntitySpec, FieldSpec]]:
        """(child entity, field) pairs whose foreign key points at ``entity``."""
        for child in self.entities:
            for f in child.fields:
                ref = f.reference
                if ref is not None and ref[0] == entity:
                    yield child, f


def view_columns(view: ViewSpec, relations: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Output columns of a view, as far as static analysis can tell."""
    from runtime.sql import sqlcheck

    try:
        return sqlcheck.analyze_query(view.sql, relations).output_columns
    except Exception:  # an invalid view is reported by validation, not here
        return ()


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
