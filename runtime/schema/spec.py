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
from collections.abc import Iterator
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from runtime.schema.types import parse_type

NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

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
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"{name!r} is not a valid name: use 1-63 characters, lowercase ASCII letters, digits and '_', "
            "starting with a letter"
        )
    if name in RESERVED_WORDS:
        raise ValueError(f"{name!r} is a reserved SQL word; choose another name")
    if name.startswith(RESERVED_PREFIXES):
        raise ValueError(f"{name!r} uses a prefix reserved for system objects")
    return name


Name = Annotated[str, AfterValidator(check_name)]
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
        if agent or not NAME_PATTERN.match(value):
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


class ActionSpec(_Frozen):
    """Application logic: named, typed, analysed SQL run by the runtime."""

    name: Name
    description: str = ""
    kind: Literal["query", "mutation"]
    params: tuple[ParamSpec, ...] = ()
    statements: tuple[str, ...] = Field(min_length=1)


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

    def entity(self, name: str) -> EntitySpec | None:
        return next((e for e in self.entities if e.name == name), None)

    def view(self, name: str) -> ViewSpec | None:
        return next((v for v in self.views if v.name == name), None)

    def invariant(self, name: str) -> InvariantSpec | None:
        return next((i for i in self.invariants if i.name == name), None)

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)

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
