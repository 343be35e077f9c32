"""What runs on each engine, generated from the analysed statement (pure).

The SQL guard analyses an agent's statement once, in DuckDB's dialect. On DuckDB the accepted text
runs as written (DuckDB binds ``$name`` itself). On PostgreSQL the text that runs is *generated* from
the parsed tree: each ``$name`` becomes a numbered parameter (``$1``, ``$2``: values travel apart
from the text, so no quoting question arises), and the agent's text is never re-read by another
dialect's parser. The tree may only hold what is known to mean the same on both engines:
``PORTABLE_FUNCTIONS`` and ``PORTABLE_ANONYMOUS``, each proven equal by the differential test
(``tests/store/test_differential.py``); a ``TRY_CAST`` becomes the system schema's helper, which gives
NULL as DuckDB's does. Anything else is refused on PostgreSQL with ``sql.forbidden`` and a hint, so
the per-engine allow-list is the guard's list narrowed to what this test proves.

>>> from runtime.sql.dialect import POSTGRES
>>> r = render("select id from booking where slot = $slot and who <> $who and slot < $slot", POSTGRES)
>>> r.text, r.params
('SELECT id FROM booking WHERE slot = $1 AND who <> $2 AND slot < $1', ('slot', 'who'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, NoReturn

import sqlglot
from sqlglot import exp

from runtime.errors import Code, SqlError
from runtime.schema.types import parse_type
from runtime.sql.dialect import POSTGRES, Dialect
from runtime.sql.parsing import MAX_DEPTH, parse, parse_condition, tokenize

PORTABLE_FUNCTIONS: Final[frozenset[type[exp.Expr]]] = frozenset(
    {
        # aggregates
        exp.Count,
        exp.Sum,
        exp.Avg,
        exp.Min,
        exp.Max,
        exp.GroupConcat,
        # windows
        exp.RowNumber,
        exp.Rank,
        exp.DenseRank,
        exp.Lag,
        exp.Lead,
        # scalars
        exp.Coalesce,
        exp.Nullif,
        exp.Greatest,
        exp.Least,
        exp.Abs,
        exp.Round,
        exp.Floor,
        exp.Ceil,
        exp.Lower,
        exp.Upper,
        exp.Length,
        exp.Substring,
        exp.Trim,
        exp.Concat,
        exp.Replace,
        exp.TimestampTrunc,
        exp.StrPosition,
        exp.StartsWith,
        exp.Extract,
        exp.CurrentDate,
        exp.CurrentTimestamp,
        exp.If,
    }
)
"""sqlglot's function classes that run with equal results on DuckDB and PostgreSQL."""

PORTABLE_ANONYMOUS: Final[frozenset[str]] = frozenset()
"""Functions sqlglot does not type, by name, with equal results on both engines."""

NOT_PORTABLE_NODES: Final[dict[type[exp.Expr], str]] = {
    exp.Qualify: "QUALIFY (filter a window in a subquery instead)",
    exp.RegexpLike: "regular expressions (DuckDB's RE2 and PostgreSQL's differ; use LIKE)",
    exp.RegexpILike: "regular expressions (DuckDB's RE2 and PostgreSQL's differ; use ILIKE)",
    exp.SimilarTo: "SIMILAR TO (use LIKE)",
}
"""Constructs DuckDB accepts that PostgreSQL has no equal of."""

_OPERATORS: Final = (
    exp.Binary,
    exp.Unary,
    exp.Connector,
    exp.Predicate,
    exp.Cast,
    exp.TryCast,
    exp.Case,
    exp.Paren,
)
"""Function-shaped nodes that are operators and syntax, which sqlglot writes for each dialect."""

_TYPES_BY_SQL: Final[dict[str, str]] = {
    "INT": "integer",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "DOUBLE": "double",
    "DOUBLE PRECISION": "double",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMPTZ": "timestamptz",
    "UUID": "uuid",
    "TEXT": "text",
    "VARCHAR": "text",
}


@dataclass(frozen=True)
class Rendered:
    """One engine's text of a statement and the names of its parameters in the order it takes them."""

    text: str
    params: tuple[str, ...]

    def values(self, arguments: Mapping[str, Any]) -> list[Any]:
        """The parameter values, in the order the text numbers them."""
        return [arguments[name] for name in self.params]


def render(sql: str, dialect: Dialect) -> Rendered:
    """The text that runs on ``dialect``'s engine for an accepted statement (DuckDB's dialect)."""
    return _render(sql, dialect.name)


@lru_cache(maxsize=2048)
def _render(sql: str, engine: str) -> Rendered:
    # the guard's own tokenizer and parser: the tree is the one it analysed
    tree = parse(sql, tokenize(sql), max_depth=MAX_DEPTH)
    names: dict[str, int] = {}
    for placeholder in tree.find_all(exp.Placeholder, bfs=False):
        names.setdefault(str(placeholder.this), len(names) + 1)
    if engine == "duckdb":
        return Rendered(sql, tuple(names))
    _check_portable(tree)

    def rewrite(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder):
            return exp.Parameter(this=exp.Literal.number(names[str(node.this)]))
        if isinstance(node, exp.TryCast):
            return _try_cast(node)
        averaged = isinstance(node, exp.Avg) and not isinstance(node.parent, exp.Window)
        if (averaged or (isinstance(node, exp.Window) and isinstance(node.this, exp.Avg))) and not isinstance(
            node.parent, exp.Cast
        ):  # DuckDB's avg is a DOUBLE whatever it averages; PostgreSQL's is numeric for integers
            return exp.Cast(this=node.copy(), to=exp.DataType.build("DOUBLE PRECISION", dialect="postgres"))
        return node

    text = tree.transform(rewrite).sql(dialect="postgres")
    return Rendered(text, tuple(names))


def render_condition(sql: str, dialect: Dialect) -> str:
    """A scalar expression (a column CHECK the guard accepted) in ``dialect``'s spelling."""
    if dialect.name == "duckdb":
        return sql
    tree = parse_condition(sql, tokenize(sql), MAX_DEPTH)
    _check_portable(tree)
    rewritten = tree.transform(lambda n: _try_cast(n) if isinstance(n, exp.TryCast) else n)
    return str(rewritten.sql(dialect="postgres"))


def _check_portable(tree: exp.Expr) -> None:
    for node in tree.walk():
        for kind, what in NOT_PORTABLE_NODES.items():
            if isinstance(node, kind):
                _refuse(what)
        if isinstance(node, exp.Insert) and node.args.get("alternative"):
            verb = str(node.args["alternative"]).upper()
            _refuse(
                f"INSERT OR {verb} (write INSERT ... ON CONFLICT (key) "
                + ("DO NOTHING" if verb == "IGNORE" else "DO UPDATE SET column = excluded.column")
                + ", which both engines run)"
            )
        if isinstance(node, exp.Group) and node.args.get("all"):
            _refuse("GROUP BY ALL (name the grouped columns)")
        if isinstance(node, exp.Anonymous):
            if str(node.name).lower() not in PORTABLE_ANONYMOUS:
                _refuse(f"the function {node.name}()")
        elif (
            isinstance(node, exp.Func)
            and not isinstance(node, _OPERATORS)
            and type(node) not in PORTABLE_FUNCTIONS
        ):
            _refuse(f"the function {node.sql_name().lower()}()")


def _try_cast(node: exp.TryCast) -> exp.Expr:
    target = node.to.sql(dialect="duckdb").upper()
    logical = _TYPES_BY_SQL.get(target)
    if logical is None and target.startswith("DECIMAL"):
        logical = parse_type(target.replace(" ", ""))
    if logical is None:
        _refuse(f"TRY_CAST to {target}")
    helper = sqlglot.parse_one(POSTGRES.try_cast("__value__", logical), read="postgres")
    inner = node.this

    def place(n: exp.Expr) -> exp.Expr:
        return inner.copy() if isinstance(n, exp.Column) and n.name == "__value__" else n

    return helper.transform(place)


def _refuse(what: str) -> NoReturn:
    raise SqlError(
        Code.SQL_FORBIDDEN,
        f"{what} is not available on this application's engine (PostgreSQL)",
        hint="Use constructs and functions that mean the same on every engine: plain SELECT/INSERT/UPDATE/"
        "DELETE, joins, CTEs, GROUP BY, windows, and the functions listed in runtime.sql.render.",
        details={"engine": "postgres", "construct": what},
    )
