"""Static analysis of agent-supplied SQL: one statement in, frozen facts out, or a refusal.

The guard's entry points; the steps live in the modules named below, the frozen facts in
``runtime.sql.facts`` (``Analysis``, the type the entry points return) and the lists they decide
with in ``runtime.sql.allowlists``.

Nothing here touches a database. Each call tokenizes and parses once with sqlglot (DuckDB dialect)
and then walks the tree a few times. Anything it does not positively recognise is refused: unknown
means deny. The text that DuckDB later executes is the caller's own; the tree is only ever used for
analysis.

Decision flow; the first step that fails raises, with the code on the right:

    parsing.prepare           size, NUL bytes, tokenizer: exactly one statement,  limit.exceeded, sql.parse,
                              bracket nesting                                     sql.forbidden
    parsing.refuse_verb       the leading keyword names a refused statement       sql.forbidden
                              family
    parsing.parse             sqlglot, errors raised, never the Command fallback  sql.parse, limit.exceeded
    inventory.statement_kind  top node is SELECT, or INSERT/UPDATE/DELETE if      sql.forbidden
                              allowed
    inventory.inventory       one walk: tree no deeper than max_depth, every      limit.exceeded,
                              node on the allow-list, identifiers ASCII,          sql.forbidden
                              functions allowed, size-building calls within
                              their size rules (sizes)
    inventory.named_params    placeholders are named ``$lowercase`` only          sql.param
    tables.bind_tables        each table is an app table or view (bare or         sql.forbidden,
                              ``main.``), or a CTE visible at that point; no      sql.unknown_table
                              files, table functions, system or other schemas
    columns.Resolver          columns resolve against the sources in scope;       sql.unknown_column
                              lenient where the shape of a source cannot be
                              known
    Analysis                  kind, reads, writes, params, output columns,
                              columns read and written, order dependence
                              (column_order), type links

``analyze_expression`` shares the preparation step and the depth-limited walk, and checks a
column CHECK expression against a much smaller allow-list.

>>> schema = {"users": ["id", "name", "email"], "orders": ["id", "user_id", "total"]}
>>> a = analyze_query(
...     "SELECT u.name, sum(o.total) AS spent FROM users u JOIN orders o ON o.user_id = u.id"
...     " WHERE u.id = $id GROUP BY u.name;",
...     schema,
... )
>>> a.kind, sorted(a.reads), a.params, a.output_columns
('select', ['orders', 'users'], ('id',), ('name', 'spent'))
>>> w = analyze_statement("UPDATE users SET name = $name WHERE id = $id RETURNING *", schema, allow_writes=True)
>>> w.kind, sorted(w.writes), w.params, w.output_columns
('update', ['users'], ('name', 'id'), ('id', 'name', 'email'))
>>> analyze_query("SELECT * FROM read_csv('/etc/passwd')", schema)
Traceback (most recent call last):
    ...
runtime.errors.SqlError: function read_csv() is not allowed
>>> analyze_expression("length(name) BETWEEN 1 AND 80", ["name", "email"], context="users.name")
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import NoReturn

from sqlglot import exp
from sqlglot.errors import TokenError

from runtime.errors import Code, SqlError
from runtime.sql.allowlists import (
    EXPRESSION_ANONYMOUS,
    EXPRESSION_FUNCTIONS,
    EXPRESSION_NODES,
    HINT_CHECK,
    QUERY_NODES,
    WRITE_NODES,
)
from runtime.sql.column_order import order_dependence
from runtime.sql.columns import Resolver
from runtime.sql.facts import Analysis, Schema
from runtime.sql.inventory import check_ascii, inventory, named_params, statement_kind, walk
from runtime.sql.parsing import (
    DUCKDB,
    MAX_DEPTH,
    MAX_SQL_LENGTH,
    parse,
    parse_condition,
    prepare,
    refuse_verb,
)
from runtime.sql.refusals import forbid
from runtime.sql.sizes import check_sizes
from runtime.sql.tables import bind_tables, cte_bindings, write_target

__all__ = [
    "analyze_expression",
    "analyze_query",
    "analyze_statement",
    "render_expression",
]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def analyze_query(
    sql: str, schema: Schema, *, max_length: int = MAX_SQL_LENGTH, max_depth: int = MAX_DEPTH
) -> Analysis:
    """Analyse exactly one read-only SELECT over the tables and views in ``schema``.

    The query may use WITH (also RECURSIVE), subqueries, joins, set operations, window
    functions, VALUES and ``range``/``generate_series``/``unnest`` as sources, and named
    ``$params``. Returns the frozen Analysis; raises SqlError (sql.parse, sql.forbidden,
    sql.unknown_table, sql.unknown_column, sql.param) or PolicyError (limit.exceeded).
    """
    return _analyze(
        sql, schema, writable=False, views=frozenset(), max_length=max_length, max_depth=max_depth
    )


def analyze_statement(
    sql: str,
    schema: Schema,
    *,
    allow_writes: bool,
    views: Collection[str] = frozenset(),
    max_length: int = MAX_SQL_LENGTH,
    max_depth: int = MAX_DEPTH,
) -> Analysis:
    """Analyse one statement of an application action.

    A SELECT is always accepted (as in ``analyze_query``). With ``allow_writes=True``,
    INSERT (including OR REPLACE / ON CONFLICT), UPDATE and DELETE with RETURNING are
    accepted against tables in ``schema``; names listed in ``views`` are readable but never
    writable. Raises the same errors as ``analyze_query``.
    """
    return _analyze(
        sql,
        schema,
        writable=allow_writes,
        views=frozenset(v.lower() for v in views),
        max_length=max_length,
        max_depth=max_depth,
    )


def analyze_expression(
    sql: str,
    columns: Sequence[str],
    *,
    context: str,
    max_length: int = MAX_SQL_LENGTH,
    max_depth: int = MAX_DEPTH,
) -> None:
    """Check a scalar expression used as a column CHECK; ``context`` names it in messages.

    Allowed: the given columns (bare names), literals, arithmetic, comparison and boolean
    operators, CASE, CAST, IN lists, LIKE/ILIKE/GLOB/SIMILAR TO, BETWEEN, IS [NOT] NULL and
    a short list of pure scalar functions (length, lower, upper, trim, abs, round, coalesce,
    regexp_matches, starts_with, ends_with, contains, date_part, extract, least, greatest,
    nullif, strlen ...). Refused: subqueries, aggregates, window functions, params and
    anything volatile. Returns None when the expression is acceptable.
    """
    source, tokens, _ = prepare(sql, max_length=max_length, max_depth=max_depth)
    try:
        tree = parse_condition(source, tokens, max_depth)
    except TokenError as error:
        raise SqlError(
            Code.SQL_PARSE,
            f"{context}: could not tokenize part of the expression",
            hint="Close every quote.",
            details={"near": str(error)[:200], "context": context},
        ) from None
    known = frozenset(c.lower() for c in columns)
    for node in walk(tree, max_depth):
        _check_expression_node(node, known, context)


@functools.lru_cache(maxsize=2048)
def render_expression(sql: str) -> str:
    """A column CHECK expression as the runtime writes it into DDL: parsed, then generated by sqlglot.

    Agent text never reaches generated SQL as written: comments, quoting tricks and stray brackets
    cannot change the statement around it. Raises like ``analyze_expression`` on text that does not
    parse as one expression.

    >>> render_expression("length(name)   BETWEEN 1 AND 80 -- short")
    'LENGTH(name) BETWEEN 1 AND 80'
    """
    source, tokens, _ = prepare(sql, max_length=MAX_SQL_LENGTH, max_depth=MAX_DEPTH)
    tree = parse_condition(source, tokens, MAX_DEPTH)
    for node in tree.walk():
        node.comments = None
    return tree.sql(dialect=DUCKDB)


# ---------------------------------------------------------------------------------------------
# Statement analysis
# ---------------------------------------------------------------------------------------------


def _analyze(
    sql: str, schema: Schema, *, writable: bool, views: frozenset[str], max_length: int, max_depth: int
) -> Analysis:
    try:
        return _analyze_parsed(
            sql, schema, writable=writable, views=views, max_length=max_length, max_depth=max_depth
        )
    except TokenError as error:  # sqlglot tokenizes again inside the parser (type names, strings)
        raise SqlError(
            Code.SQL_PARSE,
            "could not tokenize part of the SQL (a quoted name or string that does not close?)",
            hint="Close every quote; write type names plainly (e.g. ::VARCHAR).",
            details={"near": str(error)[:200]},
        ) from None


def _analyze_parsed(
    sql: str, schema: Schema, *, writable: bool, views: frozenset[str], max_length: int, max_depth: int
) -> Analysis:
    source, tokens, text = prepare(sql, max_length=max_length, max_depth=max_depth)
    refuse_verb(tokens)
    tree = parse(source, tokens, max_depth)
    kind = statement_kind(tree, writable=writable)
    found = inventory(tree, WRITE_NODES if kind != "select" else QUERY_NODES, max_depth)
    params = named_params(found.placeholders, tokens)
    target = write_target(tree, schema, views, source) if kind != "select" else None
    ctes = cte_bindings(found) if found.has_ctes else {}
    reads = bind_tables(found.tables, schema, source, skip=target, ctes=ctes)
    resolver = Resolver(schema, ctes)
    output = resolver.statement(tree, target)
    return Analysis(
        sql=text,
        kind=kind,
        reads=frozenset(reads),
        writes=frozenset({target.name.lower()}) if target is not None else frozenset(),
        params=params,
        output_columns=output,
        columns_read=frozenset(resolver.read),
        columns_written=frozenset(resolver.written),
        order_dependent=order_dependence(tree, target),
        links=resolver.links(tree),
    )


# ---------------------------------------------------------------------------------------------
# Expressions (CHECK constraints)
# ---------------------------------------------------------------------------------------------


def _check_expression_node(node: exp.Expr, columns: frozenset[str], context: str) -> None:
    if isinstance(node, exp.Identifier | exp.Var):
        check_ascii(node.name)
    if isinstance(node, exp.Placeholder):
        raise SqlError(
            Code.SQL_PARAM,
            f"{context}: parameters are not allowed in a check",
            hint=HINT_CHECK,
            details={"context": context},
        )
    if isinstance(node, exp.Column):
        _check_expression_column(node, columns, context)
    if type(node) in EXPRESSION_NODES or type(node) in EXPRESSION_FUNCTIONS:
        check_sizes(node)
        return
    if isinstance(node, exp.Anonymous) and node.name.lower() in EXPRESSION_ANONYMOUS:
        check_sizes(node)
        return
    _refuse_in_check(node, context)


def _refuse_in_check(node: exp.Expr, context: str) -> NoReturn:
    details: dict[str, object] = {"context": context}
    if isinstance(node, (exp.Query, exp.Subquery, exp.Exists)):
        what = "subqueries are"
    elif isinstance(node, exp.Window):
        what = "window functions are"
    elif isinstance(node, exp.AggFunc):
        what = "aggregate functions are"
    elif isinstance(node, exp.Func):
        name = node.name.lower() if isinstance(node, exp.Anonymous) else node.sql_name().lower()
        what, details["function"] = f"function {name}() is", name
    else:
        what, details["construct"] = f"{node.key} is", node.key
    forbid(f"{context}: {what} not allowed in a check", hint=HINT_CHECK, details=details)


def _check_expression_column(column: exp.Column, columns: frozenset[str], context: str) -> None:
    name = column.name.lower()
    if column.table or name not in columns:
        shown = ".".join(part.name for part in column.parts)
        raise SqlError(
            Code.SQL_UNKNOWN_COLUMN,
            f"{context}: unknown column {shown!r}",
            hint="Refer to this table's columns by bare name.",
            details={"column": shown, "context": context, "candidates": sorted(columns)},
        )
