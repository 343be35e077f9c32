"""The Data page's statements: an entity's or a view's rows sorted, filtered, counted and faceted, one
row with its parents and children, an export — written here from identifiers and run by the caller
through the same guard and limits as the ``query`` tool.

Nothing an operator types becomes SQL text. A table or a column is named only after it is found in
the current spec (and in the database's own list of the relation's columns), and is written as a
quoted identifier; a value is converted to the column's type in Python and bound as a parameter
(``$f0``, ``$k0``...); an operator is one of ``FILTER_OPS``. The statements are plain SELECTs that
``Runtime.query``'s analysis accepts like any agent's.

    relation(spec, name, columns)      what can be said about a table: columns, types, keys, references
    where(rel, filters)                the WHERE text and its parameters
    probe_sql / rows_sql / facet_sql   count and distinct values; one page; the values of some columns
    row_sql / count_sql / children_sql one row by key; rows pointing at a value
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from runtime.errors import Code, NotFound, SqlError
from runtime.migrate.ddl import q
from runtime.results import ColumnInfo, DataFilter
from runtime.schema.spec import AppSpec
from runtime.store.audit_view import like_pattern

FILTER_OPS: Final = ("eq", "ne", "lt", "le", "gt", "ge", "contains", "startswith", "isnull", "notnull")
"""What a filter may ask of a column: compare with a value, contain or start with a text, be NULL or not."""
COMPARE: Final = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
MAX_FILTERS: Final = 12
MAX_FACET_VALUES: Final = 20
MAX_SUGGESTED: Final = 6
MAX_PROBED: Final = 16
SUGGEST_BELOW: Final = 20
"""A column with at most this many distinct values among the matching rows gets a facet of its own."""
CHILD_ROWS: Final = 5

_KIND_OF_LOGICAL: Final = {
    "text": "text",
    "integer": "int",
    "bigint": "int",
    "double": "float",
    "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "uuid": "uuid",
    "json": "other",
}
_KIND_OF_DUCKDB: Final = (
    (
        (
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
        ),
        "int",
    ),
    (("FLOAT", "DOUBLE", "REAL"), "float"),
    (("DECIMAL",), "decimal"),
    (("BOOLEAN",), "bool"),
    (("DATE",), "date"),
    (("TIMESTAMP WITH TIME ZONE",), "timestamptz"),
    (("TIMESTAMP",), "timestamp"),
    (("UUID",), "uuid"),
    (("VARCHAR",), "text"),
)


@dataclass(frozen=True)
class Relation:
    """An entity or a view as the Data page reads it: its columns in the database's order, with the
    spec's types, key and references, and how a typed value is read for each column."""

    name: str
    kind: str
    columns: tuple[ColumnInfo, ...]
    key: tuple[str, ...]
    kinds: Mapping[str, str]
    """Column -> how a filter value is read: int, float, decimal, bool, date, timestamp,
    timestamptz, uuid, text, or other (compared as text)."""

    def column(self, name: str) -> ColumnInfo:
        found = next((c for c in self.columns if c.name == name), None)
        if found is None:
            raise SqlError(
                Code.SQL_UNKNOWN_COLUMN,
                f"{self.kind} {self.name} has no column {name!r}",
                hint=f"Its columns are: {', '.join(c.name for c in self.columns)}.",
                details={"table": self.name, "column": name},
            )
        return found

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _duckdb_kind(data_type: str) -> str:
    upper = data_type.upper()
    for prefixes, kind in _KIND_OF_DUCKDB:
        if upper.startswith(prefixes):
            return kind
    return "other"


def relation(spec: AppSpec, name: str, database_columns: Sequence[tuple[str, str]]) -> Relation:
    """The entity or view ``name`` of ``spec``, with its columns as the database lists them
    (``(column, DuckDB type)`` in table order). ``not_found`` when the spec has no such relation."""
    entity = spec.entity(name)
    if entity is None and name not in {v.name for v in spec.views}:
        known = ", ".join([e.name for e in spec.entities] + [v.name for v in spec.views]) or "none"
        raise NotFound("entity or view", name, hint=f"The current version has: {known}.")
    if entity is None:
        columns = tuple(ColumnInfo(name=c, type=t.lower()) for c, t in database_columns)
        return Relation(name, "view", columns, (), {c: _duckdb_kind(t) for c, t in database_columns})
    pointing: dict[str, list[str]] = {}
    for other in spec.entities:
        for pointer in other.fields:
            if pointer.reference is not None and pointer.reference[0] == entity.name:
                pointing.setdefault(pointer.reference[1], []).append(f"{other.name}.{pointer.name}")
    infos: list[ColumnInfo] = []
    kinds: dict[str, str] = {}
    order = [c for c, _ in database_columns] or list(entity.field_names)
    for column in order:
        field = entity.field(column)
        if field is None:  # a column the spec does not name (drift): shown, read as text
            infos.append(ColumnInfo(name=column, type=dict(database_columns).get(column, "?").lower()))
            kinds[column] = "other"
            continue
        infos.append(
            ColumnInfo(
                name=field.name,
                type=field.type,
                key=field.name in entity.primary_key,
                nullable=field.nullable,
                references=field.references,
                references_key=_is_key(spec, field.reference),
                referenced_by=pointing.get(field.name, []),
            )
        )
        kinds[field.name] = "decimal" if field.type.startswith("decimal") else _KIND_OF_LOGICAL[field.type]
    return Relation(entity.name, "entity", tuple(infos), tuple(entity.primary_key), kinds)


def _is_key(spec: AppSpec, reference: tuple[str, str] | None) -> bool:
    parent = spec.entity(reference[0]) if reference is not None else None
    return parent is not None and reference is not None and tuple(parent.primary_key) == (reference[1],)


# ------------------------------------------------------------------------------------------ values


def value_of(rel: Relation, column: str, raw: str) -> Any:
    """``raw`` (text from a form or a link) as a value of ``column``'s type, to be bound; ``sql.mismatch``
    when it is not one."""
    kind = rel.kinds.get(column, "other")
    text = raw.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "decimal":
            return decimal.Decimal(text)
        if kind == "bool":
            lowered = text.lower()
            if lowered in {"true", "t", "yes", "1"}:
                return True
            if lowered in {"false", "f", "no", "0"}:
                return False
            raise ValueError(text)
        if kind == "date":
            return datetime.date.fromisoformat(text)
        if kind in {"timestamp", "timestamptz"}:
            moment = datetime.datetime.fromisoformat(text)
            if kind == "timestamp":
                return moment.astimezone(datetime.UTC).replace(tzinfo=None) if moment.tzinfo else moment
            return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
        if kind == "uuid":
            return uuid.UUID(text)
    except (ValueError, ArithmeticError):
        wanted = {
            "int": "a whole number",
            "float": "a number",
            "decimal": "a decimal number",
            "bool": "true or false",
        }
        raise SqlError(
            Code.SQL_MISMATCH,
            f"{raw[:60]!r} is not {wanted.get(kind, f'a {kind}')}, the type of {rel.name}.{column}",
            hint="Give a value of the column's type (dates and times as ISO 8601, e.g. 2025-01-31 or "
            "2025-01-31T14:30).",
            details={"table": rel.name, "column": column, "value": raw[:200]},
        ) from None
    return raw


def _text(column: str) -> str:
    return f"CAST({q(column)} AS VARCHAR)"


def where(rel: Relation, filters: Iterable[DataFilter], *, prefix: str = "f") -> tuple[str, dict[str, Any]]:
    """The WHERE text (quoted identifiers, fixed operators, ``$<prefix><n>`` parameters) and the bound
    values for ``filters``, every one of which must name a column of ``rel``."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for number, condition in enumerate(filters):
        if number >= MAX_FILTERS:
            raise SqlError(
                Code.LIMIT_EXCEEDED,
                f"at most {MAX_FILTERS} filters at once",
                hint="Remove a filter, or write the query as one SELECT.",
            )
        rel.column(condition.column)
        if condition.op not in FILTER_OPS:
            raise SqlError(
                Code.SQL_FORBIDDEN,
                f"unknown filter {condition.op!r}",
                hint=f"Filters are: {', '.join(FILTER_OPS)}.",
                details={"op": condition.op},
            )
        column = q(condition.column)
        if condition.op == "isnull":
            clauses.append(f"{column} IS NULL")
            continue
        if condition.op == "notnull":
            clauses.append(f"{column} IS NOT NULL")
            continue
        name = f"{prefix}{number}"
        raw = condition.value or ""
        if condition.op == "contains":
            clauses.append(f"{_text(condition.column)} ILIKE ${name} ESCAPE '\\'")
            params[name] = like_pattern(raw)
        elif condition.op == "startswith":
            clauses.append(f"{_text(condition.column)} ILIKE ${name} ESCAPE '\\'")
            params[name] = like_pattern(raw)[1:]
        elif rel.kinds.get(condition.column, "other") in {"other"}:
            clauses.append(f"{_text(condition.column)} {COMPARE[condition.op]} ${name}")
            params[name] = raw
        else:
            clauses.append(f"{column} {COMPARE[condition.op]} ${name}")
            params[name] = value_of(rel, condition.column, raw)
    return " AND ".join(clauses) or "TRUE", params


def order(rel: Relation, sort: str | None, descending: bool) -> str:
    """ORDER BY text: the chosen column (NULLs last), then the key, so pages never overlap."""
    parts: list[str] = []
    if sort is not None:
        rel.column(sort)
        parts.append(f"{q(sort)} {'DESC' if descending else 'ASC'} NULLS LAST")
    parts += [f"{q(k)} ASC" for k in rel.key if k != sort]
    return ", ".join(parts) or "1"


# -------------------------------------------------------------------------------------- statements


def probe_columns(rel: Relation, chosen: Sequence[str]) -> list[str]:
    """The columns whose distinct values are counted to suggest facets: not key columns, not JSON."""
    return [
        c.name
        for c in rel.columns
        if not c.key and rel.kinds.get(c.name) != "other" and c.name not in chosen and "json" not in c.type
    ][:MAX_PROBED]


def probe_sql(rel: Relation, condition: str, columns: Sequence[str]) -> str:
    """One row: every row of the table, the matching rows, then an estimate of each column's distinct
    values among the matching ones."""
    counted = "".join(
        f", approx_count_distinct({q(c)}) FILTER (WHERE {condition}) AS d{n}" for n, c in enumerate(columns)
    )
    return f"SELECT count(*) AS total, count(*) FILTER (WHERE {condition}) AS matching{counted} FROM {q(rel.name)}"


def rows_sql(rel: Relation, condition: str, ordering: str, *, limit: int, offset: int) -> str:
    return (
        f"SELECT * FROM {q(rel.name)} WHERE {condition} ORDER BY {ordering} "
        f"LIMIT {int(limit)} OFFSET {int(offset)}"
    )


def facet_sql(rel: Relation, condition: str, columns: Sequence[str]) -> str:
    """Each column's most frequent values among the matching rows (as text), one more than shown so the
    caller knows there are more: rows (facet number, value, count)."""
    parts = [
        f"(SELECT {n} AS facet, {_text(c)} AS value, count(*) AS n FROM {q(rel.name)} WHERE {condition} "
        f"GROUP BY {q(c)} ORDER BY n DESC, value NULLS FIRST LIMIT {MAX_FACET_VALUES + 1})"
        for n, c in enumerate(columns)
    ]
    return " UNION ALL ".join(parts)


def row_sql(rel: Relation, key: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The row of an entity whose primary key is ``key`` (every key column, each a value as text)."""
    if rel.kind != "entity":
        raise SqlError(
            Code.SQL_FORBIDDEN,
            f"{rel.name} is a view: its rows have no key",
            hint="Open an entity's row; a view's rows are browsed on its page.",
            details={"table": rel.name},
        )
    missing = [k for k in rel.key if k not in key]
    extra = [k for k in key if k not in rel.key]
    if missing or extra:
        raise SqlError(
            Code.SQL_PARAM,
            f"a row of {rel.name} is named by its key ({', '.join(rel.key)})",
            hint="Give every key column, and nothing else.",
            details={"missing": missing, "unexpected": extra},
        )
    condition, params = where(rel, [DataFilter(column=k, op="eq", value=key[k]) for k in rel.key], prefix="k")
    return f"SELECT * FROM {q(rel.name)} WHERE {condition} LIMIT 2", params


def count_sql(rel: Relation, column: str) -> str:
    """How many rows of ``rel`` hold ``$v`` in ``column``."""
    rel.column(column)
    return f"SELECT count(*) AS n FROM {q(rel.name)} WHERE {q(column)} = $v"


def children_sql(rel: Relation, column: str) -> str:
    """The first rows of ``rel`` holding ``$v`` in ``column``, by key."""
    rel.column(column)
    return f"SELECT * FROM {q(rel.name)} WHERE {q(column)} = $v ORDER BY {order(rel, None, False)} LIMIT {CHILD_ROWS}"
