"""The AppSpec: the whole application as one frozen, declarative document.

Entities (one table each), invariants (queries that must return no rows), views and actions.
Canonical JSON of the spec hashes to the version hash; DDL, validators and tool schemas are
derived from it and never written twice. Its building blocks (names, types, ``Ref``) are
``runtime.schema.base``'s and its flow parts (topics, workflows and their steps, subscriptions)
``runtime.schema.flowspec``'s; every public name of both is importable from here.

>>> spec = AppSpec()
>>> spec.hash() == AppSpec().hash()
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from runtime.schema.base import (
    NAME_PATTERN,
    REF_PATTERN,
    RESERVED_PARAMS,
    RESERVED_PREFIXES,
    RESERVED_WORDS,
    ArgValue,
    Frozen,
    LogicalType,
    Name,
    ParamName,
    ParamSpec,
    Ref,
    StepName,
    check_name,
    check_param_name,
    check_step_name,
)
from runtime.schema.flowspec import (
    BUSINESS,
    STEP_KEYS,
    TRANSIENT,
    ActionStep,
    Compensation,
    EffectStep,
    PayloadField,
    PublishStep,
    RetryPolicy,
    SleepStep,
    StepKind,
    StepSpec,
    StoredStep,
    SubscriptionSpec,
    TopicSpec,
    WaitStep,
    WorkflowSpec,
)

DEFAULT_EXPRESSIONS: Final[dict[str, str]] = {
    "now()": "now()",
    "current_date": "current_date",
    "uuid()": "uuid()",
    "gen_random_uuid()": "uuid()",
    "autoincrement": "autoincrement",
}


class DefaultExpr(Frozen):
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


class FieldSpec(Frozen):
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


class IndexSpec(Frozen):
    """A secondary (non-unique) index. Use unique sets for uniqueness."""

    name: Name
    columns: tuple[Name, ...] = Field(min_length=1)


class EntitySpec(Frozen):
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


class InvariantSpec(Frozen):
    """A business rule: ``sql`` selects the violating rows and must return none."""

    name: Name
    description: str = ""
    sql: str


class ViewSpec(Frozen):
    """A derived view: a name and one SELECT."""

    name: Name
    sql: str
    description: str = ""


class Emit(Frozen):
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


class ActionSpec(Frozen):
    """Application logic: named, typed, analysed SQL run by the runtime."""

    name: Name
    description: str = ""
    kind: Literal["query", "mutation"]
    params: tuple[ParamSpec, ...] = ()
    statements: tuple[str, ...] = Field(min_length=1)
    emits: tuple[Emit, ...] = Field(
        default=(), description="Messages, runs and signals the mutation creates with its writes."
    )


CheckedBy = Literal["duckdb", "buttress"]


class AppSpec(Frozen):
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


__all__ = [
    "BUSINESS",
    "DEFAULT_EXPRESSIONS",
    "NAME_PATTERN",
    "REF_PATTERN",
    "RESERVED_PARAMS",
    "RESERVED_PREFIXES",
    "RESERVED_WORDS",
    "STEP_KEYS",
    "TRANSIENT",
    "ActionSpec",
    "ActionStep",
    "AppSpec",
    "ArgValue",
    "CheckedBy",
    "Compensation",
    "DefaultExpr",
    "DefaultValue",
    "EffectStep",
    "Emit",
    "EntitySpec",
    "FieldSpec",
    "Frozen",
    "IndexSpec",
    "InvariantSpec",
    "JsonScalar",
    "LogicalType",
    "Name",
    "OnDelete",
    "ParamName",
    "ParamSpec",
    "PayloadField",
    "PublishStep",
    "Ref",
    "RetryPolicy",
    "SleepStep",
    "StepKind",
    "StepName",
    "StepSpec",
    "StoredStep",
    "SubscriptionSpec",
    "TopicSpec",
    "ViewSpec",
    "WaitStep",
    "WorkflowSpec",
    "canonical_json",
    "check_name",
    "check_param_name",
    "check_step_name",
    "view_columns",
]
