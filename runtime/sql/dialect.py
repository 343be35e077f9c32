"""What differs between the engines' SQL, in one pure object per engine: ``DUCKDB`` and ``POSTGRES``.

The runtime writes SQL in a few shapes whose spelling depends on the engine: column types, the
defaults a field may have, a cast that gives NULL instead of failing, an upsert, reading text out of
JSON, arrays of text, parameters, which table changes need a rebuild, and whether DDL is
transactional. A ``Dialect`` answers each; code that writes such SQL asks the dialect of the session
it runs on (``Session.dialect``) instead of spelling DuckDB's form. Nothing here touches a database.

>>> DUCKDB.column_type("decimal(12,2)"), POSTGRES.column_type("double")
('DECIMAL(12,2)', 'DOUBLE PRECISION')
>>> POSTGRES.default("uuid()")
'gen_random_uuid()'
>>> POSTGRES.numbered("SELECT * FROM t WHERE a = ? AND b = '?' AND c = ?", [1, 2])
("SELECT * FROM t WHERE a = $1 AND b = '?' AND c = $2", [1, 2])
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from runtime.schema.types import SIMPLE_TYPES, duckdb_type

_DECIMAL: Final = re.compile(r"\Adecimal\((\d{1,2}),(\d{1,2})\)\Z")

LOGICAL_DEFAULTS: Final[tuple[str, ...]] = ("now()", "current_date", "uuid()")
"""Defaults a field may have, in the spec's logical spelling (``autoincrement`` is a sequence)."""


class Alter(enum.Enum):
    """Table changes whose execution strategy depends on the engine."""

    ADD_CHECK = "add_check"
    ADD_FOREIGN_KEY = "add_foreign_key"
    DROP_CONSTRAINT = "drop_constraint"
    ADD_CONSTRAINED_COLUMN = "add_constrained_column"
    """A new column with a primary key, CHECK, REFERENCES or GENERATED clause."""
    ALTER_INDEXED_TABLE = "alter_indexed_table"
    """Drop, rename or retype a column, or change NOT NULL, on a table with a secondary index or
    referenced by a foreign key."""


_DUCKDB_REBUILDS: Final = frozenset(Alter)
"""DuckDB implements none of these as ALTER (duckdb-facts: C2, C3): each is a table rebuild."""


@dataclass(frozen=True)
class Dialect:
    """One engine's spelling of the SQL the runtime writes."""

    name: Literal["duckdb", "postgres"]
    sqlglot: str
    """The sqlglot dialect that parses and generates this engine's SQL."""
    transactional_ddl: bool
    """DDL commits or rolls back with its transaction (both engines: dry-runs roll back DDL)."""
    shared: bool
    """Other servers may write the database: state read from it (the current version, the audit
    chain's head) is read again inside each writer transaction instead of kept from the last one."""
    rebuilds: frozenset[Alter]
    """The table changes this engine can only make by rebuilding the table."""
    types: Mapping[str, str]
    defaults: Mapping[str, str]
    begin_write: str
    """Starts a writer-lane transaction (after the lane is held)."""
    begin_read: str
    """Starts a read-only snapshot."""

    # ------------------------------------------------------------------------------------ types

    def column_type(self, logical: str) -> str:
        """The column type for a normalised logical type (``runtime.schema.types``)."""
        if logical in self.types:
            return self.types[logical]
        return duckdb_type(logical)  # decimal(p,s): both engines spell it DECIMAL(p,s)

    def text_array(self) -> str:
        return "VARCHAR[]" if self.name == "duckdb" else "TEXT[]"

    def default(self, logical: str) -> str:
        """The engine's expression for a logical default (``now()``, ``current_date``, ``uuid()``)."""
        try:
            return self.defaults[logical]
        except KeyError:
            raise ValueError(f"not a logical default: {logical!r}; use one of {LOGICAL_DEFAULTS}") from None

    def logical_default(self, expression: str) -> str | None:
        """The logical default an engine expression stands for (None: not one of them)."""
        text = expression.strip().lower()
        for logical, spelled in self.defaults.items():
            if text in (logical, spelled.lower()):
                return logical
        return None

    # ------------------------------------------------------------------------------ expressions

    def try_cast(self, expression: str, logical: str) -> str:
        """``expression`` converted to ``logical``, NULL where it does not convert.

        PostgreSQL has no such cast: it calls ``_buttress_agent.try_cast_<type>(text)``, which the system
        schema defines (``support_functions``)."""
        if self.name == "duckdb":
            return f"TRY_CAST({expression} AS {self.column_type(logical)})"
        decimal = _DECIMAL.fullmatch(logical)
        if decimal:
            precision, scale = decimal.groups()
            return (
                f"CAST({SUPPORT_SCHEMA}.try_cast_decimal(CAST({expression} AS TEXT), {precision}, {scale}) "
                f"AS {self.column_type(logical)})"
            )
        return f"{SUPPORT_SCHEMA}.{try_cast_function(logical)}(CAST({expression} AS TEXT))"

    def json_text(self, expression: str, key: str) -> str:
        """The text of top-level member ``key`` of a JSON value (NULL when absent)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"not a plain JSON key: {key!r}")
        if self.name == "duckdb":
            return f"json_extract_string({expression}, '$.{key}')"
        return f"(CAST({expression} AS JSONB) ->> '{key}')"

    # JSON payloads (messages): ``key`` is a member of the top level, a plain name (``_key``)

    def json_value(self, expression: str, key: str) -> str:
        """Member ``key`` as JSON (NULL when absent)."""
        if self.name == "duckdb":
            return f"json_extract({expression}, '$.{_key(key)}')"
        return f"(CAST({expression} AS JSONB) -> '{_key(key)}')"

    def json_kind(self, expression: str, key: str) -> str:
        """The JSON type of member ``key`` in capitals (``'NULL'`` for a JSON null; NULL when absent)."""
        if self.name == "duckdb":
            return f"json_type(json_extract({expression}, '$.{_key(key)}'))"
        return f"upper(jsonb_typeof(CAST({expression} AS JSONB) -> '{_key(key)}'))"

    def json_has(self, expression: str, key: str) -> str:
        """Whether the object has member ``key`` (a JSON null counts)."""
        if self.name == "duckdb":
            return f"json_exists({expression}, '$.{_key(key)}')"
        return f"jsonb_exists(CAST({expression} AS JSONB), '{_key(key)}')"

    def json_keys_within(self, expression: str, keys: Sequence[str]) -> str:
        """Whether every top-level key of the object is one of ``keys``."""
        listed = ", ".join(f"'{_key(k)}'" for k in keys)
        if self.name == "duckdb":
            return f"list_has_all([{listed}], json_keys({expression}))"
        return (
            f"ARRAY(SELECT jsonb_object_keys(CAST({expression} AS JSONB))) <@ CAST(ARRAY[{listed}] AS TEXT[])"
        )

    def json_build(self, members: Sequence[tuple[str, str]]) -> str:
        """A JSON object of ``(key, SQL value)`` pairs, in order."""
        parts = ", ".join(f"'{_key(k)}', {v}" for k, v in members)
        if self.name == "duckdb":
            return f"json_object({parts})"
        return f"CAST(jsonb_build_object({parts}) AS JSON)"

    def json_merge(self, expression: str, patch: str) -> str:
        """``expression`` with the members of the object ``patch`` set (RFC 7396 on DuckDB; on
        PostgreSQL a null member is set to null rather than removed, which the conversions that use it
        rebuild afterwards)."""
        if self.name == "duckdb":
            return f"json_merge_patch({expression}, {patch})"
        return f"CAST(CAST({expression} AS JSONB) || CAST({patch} AS JSONB) AS JSON)"

    def json_param(self) -> str:
        """A parameter holding JSON text, as a value ``json_value`` compares equal to."""
        return "CAST(? AS JSON)" if self.name == "duckdb" else "CAST(? AS JSONB)"

    def text_list_param(self) -> str:
        """A parameter holding a list of text, as a set to select from (``x IN (SELECT ...)``)."""
        return "unnest(?)" if self.name == "duckdb" else "unnest(CAST(? AS TEXT[]))"

    @property
    def agent_schema(self) -> str:
        """Where the runtime keeps what agent statements use while they run (the autoincrement
        sequences): DuckDB's system schema; on PostgreSQL a schema the agent role may use."""
        return "_buttress" if self.name == "duckdb" else SUPPORT_SCHEMA

    @property
    def utc_now(self) -> str:
        """The database's clock as a naive UTC timestamp (what the TIMESTAMP columns hold)."""
        return "timezone('UTC', now())"

    def seconds(self, expression: str) -> str:
        """An interval of ``expression`` seconds (a number, or a parameter)."""
        if self.name == "duckdb":
            return f"to_microseconds(CAST(CAST({expression} AS DOUBLE) * 1000000 AS BIGINT))"
        return f"make_interval(secs => CAST({expression} AS DOUBLE PRECISION))"

    def json_keys(self, expression: str) -> str:
        """The top-level keys of a JSON object as a list of text (empty for NULL)."""
        if self.name == "duckdb":
            return f"coalesce(json_keys({expression}), [])"
        return f"ARRAY(SELECT jsonb_object_keys(CAST({expression} AS JSONB)))"

    def arg_max(self, value: str, by: str) -> str:
        """The aggregate: ``value`` of the row with the largest ``by``."""
        if self.name == "duckdb":
            return f"arg_max({value}, {by})"
        return f"(array_agg({value} ORDER BY {by} DESC))[1]"

    def json_path_text(self, expression: str, *keys: str) -> str:
        """The text at a path of nested members (``error``, ``code``) of a JSON value."""
        if self.name == "duckdb":
            return f"json_extract_string({expression}, '$.{'.'.join(_key(k) for k in keys)}')"
        return f"(CAST({expression} AS JSONB) #>> '{{{','.join(_key(k) for k in keys)}}}')"

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """Insert one row (positional parameters) or replace the row with the same ``key``."""
        marks = ", ".join("?" for _ in columns)
        if self.name == "duckdb":
            return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        rest = [c for c in columns if c not in key]
        action = f"DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in rest)}" if rest else "DO NOTHING"
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(key)}) {action}"
        )

    def sequence_last_value(self, schema: str, sequence: str) -> str:
        """A query for the last value a sequence handed out (0 before the first), in constant time."""
        if self.name == "duckdb":
            return (
                "SELECT coalesce((SELECT last_value FROM duckdb_sequences() WHERE schema_name = "
                f"'{schema}' AND sequence_name = '{sequence}'), 0)"
            )
        return (
            "SELECT coalesce((SELECT last_value FROM pg_sequences WHERE schemaname = "
            f"'{schema}' AND sequencename = '{sequence}'), 0)"
        )

    def table_exists(self, schema: str, table: str) -> str:
        """A query counting the tables named ``schema.table`` (0 or 1) in the engine's catalog."""
        if self.name == "duckdb":
            return f"SELECT count(*) FROM duckdb_tables() WHERE schema_name = '{schema}' AND table_name = '{table}'"
        return (
            "SELECT count(*) FROM pg_catalog.pg_tables "
            f"WHERE schemaname = '{schema}' AND tablename = '{table}'"
        )

    def needs_rebuild(self, change: Alter) -> bool:
        return change in self.rebuilds

    # ------------------------------------------------------------------------------- parameters

    def numbered(self, sql: str, params: Any = None) -> tuple[str, list[Any]]:
        """``sql`` written with DuckDB's parameters (``?`` and ``$name``) in this engine's form.

        PostgreSQL takes ``$1``, ``$2``, ...: each ``?`` becomes the next number, each ``$name`` the
        number of its first use. Text inside string literals, quoted identifiers and comments is left
        alone. DuckDB's own text is returned unchanged."""
        if self.name == "duckdb":
            return sql, list(params.values()) if isinstance(params, Mapping) else list(params or [])
        return _number(sql, params)


def _key(key: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ValueError(f"not a plain JSON key: {key!r}")
    return key


SUPPORT_SCHEMA: Final = "_buttress_agent"
"""PostgreSQL's schema of what agent SQL uses while it runs (the try-cast helpers, the autoincrement
sequences behind column defaults), apart from the system schema: the agent role may use this one and
has no access to ``_buttress``."""


def try_cast_function(logical: str) -> str:
    """The name of PostgreSQL's try-cast helper for ``logical`` (``try_cast_decimal_12_2``)."""
    return "try_cast_" + re.sub(r"[^a-z0-9]+", "_", logical).strip("_")


def support_functions(dialect: Dialect, logicals: Sequence[str] | None = None) -> list[str]:
    """DDL for the helpers this dialect's SQL calls: PostgreSQL's try-casts (none for DuckDB).

    Each helper is ``IMMUTABLE`` plpgsql that returns NULL when the cast raises, with a pinned
    ``search_path`` so that no application object can stand in for what it calls."""
    if dialect.name == "duckdb":
        return []
    out = [
        f"CREATE SCHEMA IF NOT EXISTS {SUPPORT_SCHEMA}",
        f"REVOKE CREATE ON SCHEMA {SUPPORT_SCHEMA} FROM PUBLIC",
        f"CREATE OR REPLACE FUNCTION {SUPPORT_SCHEMA}.try_cast_decimal(value TEXT, p INTEGER, s INTEGER) "
        "RETURNS NUMERIC LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$ "
        "DECLARE v NUMERIC; BEGIN v := round(CAST(value AS NUMERIC), s); "
        "IF abs(v) >= power(10::numeric, p - s) THEN RETURN NULL; END IF; RETURN v; "
        "EXCEPTION WHEN OTHERS THEN RETURN NULL; END $$",
    ]
    for logical in logicals if logicals is not None else tuple(SIMPLE_TYPES):
        target = dialect.column_type(logical)
        body = f"RETURN CAST(value AS {target});"
        if logical in ("integer", "bigint"):
            # DuckDB reads '3.5' and '1e2' as integers too, rounding half away from zero, as numeric does
            body = (
                f"BEGIN RETURN CAST(value AS {target}); EXCEPTION WHEN OTHERS THEN "
                f"RETURN CAST(round(CAST(value AS NUMERIC)) AS {target}); END;"
            )
        elif logical in ("date", "timestamp", "timestamptz"):
            body = f"DECLARE v {target} := CAST(value AS {target}); BEGIN IF isfinite(v) THEN RETURN v; END IF; RETURN NULL; END;"
        out.append(
            f"CREATE OR REPLACE FUNCTION {SUPPORT_SCHEMA}.{try_cast_function(logical)}(value TEXT) "
            f"RETURNS {target} LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$ "
            f"BEGIN {body} EXCEPTION WHEN OTHERS THEN RETURN NULL; END $$"
        )
    return out


_TOKENS: Final = re.compile(
    r"""
      '(?:[^']|'')*'            # string literal
    | "(?:[^"]|"")*"            # quoted identifier
    | --[^\n]*                  # line comment
    | /\*.*?\*/                 # block comment
    | \$(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | \$(?P<number>[0-9]+)
    | (?P<mark>\?)
    """,
    re.VERBOSE | re.DOTALL,
)

_NUMBERED: dict[tuple[str, bool], tuple[str, tuple[str | int, ...]]] = {}
_NUMBERED_MAX: Final = 4096


def _number(sql: str, params: Any) -> tuple[str, list[Any]]:
    named = isinstance(params, Mapping)
    cached = _NUMBERED.get((sql, named))
    if cached is None:
        order: list[str | int] = []
        positions: dict[str, int] = {}
        marks = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal marks
            if match.group("mark"):
                order.append(marks)
                marks += 1
                return f"${len(order)}"
            if match.group("name"):
                name = match.group("name")
                if name not in positions:
                    order.append(name)
                    positions[name] = len(order)
                return f"${positions[name]}"
            if match.group("number"):
                order.append(int(match.group("number")) - 1)
                return f"${len(order)}"
            return match.group(0)

        text = _TOKENS.sub(replace, sql)
        if len(_NUMBERED) >= _NUMBERED_MAX:
            _NUMBERED.clear()
        cached = _NUMBERED[(sql, named)] = (text, tuple(order))
    text, order_ = cached
    if named:
        missing = [k for k in order_ if isinstance(k, str) and k not in params]
        if missing:
            raise ValueError(f"no value for parameter(s) {missing}")
        return text, [params[k] for k in order_]
    values = list(params or [])
    if any(isinstance(k, str) for k in order_):
        raise ValueError("named parameters need a mapping of values")
    return text, [values[k] for k in order_]  # type: ignore[index]


DUCKDB: Final = Dialect(
    name="duckdb",
    sqlglot="duckdb",
    transactional_ddl=True,
    shared=False,  # one process owns the file
    rebuilds=_DUCKDB_REBUILDS,
    types=SIMPLE_TYPES,
    defaults={"now()": "now()", "current_date": "current_date", "uuid()": "uuid()"},
    begin_write="BEGIN TRANSACTION",
    begin_read="BEGIN TRANSACTION READ ONLY",
)

POSTGRES: Final = Dialect(
    name="postgres",
    sqlglot="postgres",
    transactional_ddl=True,
    shared=True,
    rebuilds=frozenset(),  # every one is an ALTER TABLE (under lock_timeout, ACCESS EXCLUSIVE)
    types={
        **SIMPLE_TYPES,
        "text": "TEXT",
        "double": "DOUBLE PRECISION",
        "timestamptz": "TIMESTAMP WITH TIME ZONE",
        "json": "JSONB",
    },
    defaults={"now()": "now()", "current_date": "CURRENT_DATE", "uuid()": "gen_random_uuid()"},
    begin_write="BEGIN ISOLATION LEVEL SERIALIZABLE",
    begin_read="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
)

DIALECTS: Final[dict[str, Dialect]] = {d.name: d for d in (DUCKDB, POSTGRES)}
