"""What every part of the spec is built from: names (checked whole, SQL words and system prefixes
refused), logical types, typed parameters, and values taken from a run or a call (``Ref``).
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

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


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParamSpec(Frozen):
    """A typed action parameter, referenced in statements as ``$name``."""

    name: ParamName
    type: LogicalType
    nullable: bool = False
    description: str = ""


REF_PATTERN: Final = re.compile(
    r"\A(input|args|result|message|signal)\.[a-z][a-z0-9_]{0,62}\Z"
    r"|\Asteps\.[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}\Z"
    r"|\Arun\.id\Z"
)
"""A value path, matched whole (``fullmatch``; ``\\Z`` keeps ``match`` whole too)."""


class Ref(Frozen):
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
