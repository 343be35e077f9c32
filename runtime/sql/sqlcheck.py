"""Static analysis of agent-supplied SQL: one statement in, frozen facts out, or a refusal.

The module never touches a database. Each call tokenizes and parses once with sqlglot
(DuckDB dialect) and then walks the tree a few times. Anything it does not positively
recognise is refused: unknown means deny. The text that DuckDB later executes is the
caller's own; the tree is only ever used for analysis.

Decision flow; the first step that fails raises, with the code on the right:

    _prepare          size, NUL bytes, tokenizer: exactly one statement,       limit.exceeded, sql.parse,
                      bracket nesting                                          sql.forbidden
    _refuse_verb      the leading keyword names a refused statement family     sql.forbidden
    _parse            sqlglot, errors raised, never the Command fallback       sql.parse, limit.exceeded
    _statement_kind   top node is SELECT, or INSERT/UPDATE/DELETE if allowed   sql.forbidden
    _inventory        one walk: tree no deeper than max_depth, every node on   limit.exceeded, sql.forbidden
                      the allow-list, identifiers ASCII, functions allowed,
                      size-building calls within their size rules
    _params           placeholders are named ``$lowercase`` only               sql.param
    _bind_tables      each table is an app table or view (bare or ``main.``),  sql.forbidden, sql.unknown_table
                      or a CTE visible at that point; no files, table
                      functions, system or other schemas
    _Resolver         columns resolve against the sources in scope; lenient    sql.unknown_column
                      where the shape of a source cannot be known
    Analysis          kind, reads, writes, params, output columns

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
import itertools
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NoReturn

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from runtime.errors import Code, PolicyError, SqlError
from runtime.sql.allowlists import (
    ANONYMOUS_FUNCTIONS,
    CLOSING,
    COSTLY_FUNCTIONS,
    DENIED_FUNCTION_CLASSES,
    DENIED_FUNCTION_NAMES,
    EXPRESSION_ANONYMOUS,
    EXPRESSION_FUNCTIONS,
    EXPRESSION_NODES,
    HINT_AMPLIFY,
    HINT_ASCII,
    HINT_CHECK,
    HINT_CONSTRUCT,
    HINT_FUNCTION,
    HINT_LAMBDA,
    HINT_LIMIT,
    HINT_NAME,
    HINT_ONE_STATEMENT,
    HINT_PARAMS,
    HINT_PATTERN,
    HINT_READ_ONLY,
    HINT_SYSTEM,
    HINT_TABLES,
    HINT_WRITES,
    MAX_AMPLIFY,
    MAX_ELEMENT,
    MAX_NAME,
    MAX_PATTERN,
    OPENING,
    PARAM_NAME,
    QUERY_NODES,
    REFUSED_VERBS,
    RESERVED_PREFIXES,
    SIZE_BUILDING,
    STATEMENT_CLASSES,
    TABLE_FUNCTIONS,
    WRITE_NODES,
    WRITE_STATEMENTS,
    Kind,
    SizeRule,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_SQL_LENGTH",
    "Analysis",
    "Link",
    "OrderDependence",
    "Schema",
    "analyze_expression",
    "analyze_query",
    "analyze_statement",
    "embed",
    "render_expression",
    "split_statements",
    "statement_body",
    "substitute_params",
]

Schema = Mapping[str, Sequence[str]]
"""App table or view name -> its column names, all lowercase."""

MAX_SQL_LENGTH: Final = 100_000
MAX_DEPTH: Final = 64

_DUCKDB: Final = Dialect.get_or_raise("duckdb")


@dataclass(frozen=True)
class Analysis:
    """What one accepted statement does, as far as static analysis can tell."""

    sql: str
    """The original text, stripped of surrounding whitespace and one trailing ';'."""
    kind: Literal["select", "insert", "update", "delete"]
    reads: frozenset[str]
    """App tables and views read (lowercase). The target of a write is reported in ``writes`` only."""
    writes: frozenset[str]
    """App tables written."""
    params: tuple[str, ...]
    """Named ``$params`` in order of first appearance, without duplicates."""
    output_columns: tuple[str, ...]
    """Best-effort names of the result columns; ``*`` when a star cannot be expanded; RETURNING for writes."""
    columns_read: frozenset[tuple[str, str]] = frozenset()
    """(relation, column) pairs the statement reads, where a column resolves to one app table or view
    (a star over a table reads all of its columns)."""
    columns_written: frozenset[tuple[str, str]] = frozenset()
    """(table, column) pairs the statement assigns: an INSERT's columns (all of them without a column
    list), an UPDATE's or an upsert's SET columns."""
    order_dependent: tuple[OrderDependence, ...] = ()
    """Places where the statement's meaning depends on the order of a table's columns."""
    links: tuple[Link, ...] = ()
    """Values the statement puts into columns or compares with them, where both sides are a bare
    parameter or a bare column: what a type check needs (see ``Link``)."""


Operand = tuple[str, ...]
"""``("param", name)`` or ``("column", relation, column)``."""


@dataclass(frozen=True)
class Link:
    """A bare parameter or column placed into a column (``insert``, ``assign``) or compared with one
    (``compare``): the two must hold values of one type."""

    kind: Literal["insert", "assign", "compare"]
    column: tuple[str, str]
    """The column written, or compared with."""
    other: Operand


@dataclass(frozen=True)
class OrderDependence:
    """One place where a statement depends on column order.

    ``insert_without_columns``: an INSERT without a column list fills the table's columns by position
    (``offset`` is where a column list goes in the text, ``width`` how many values each row has, when
    known); ``star_into_insert``: a ``*`` feeds an INSERT; ``star_in_set_operation``: a ``*`` in a
    UNION/INTERSECT/EXCEPT branch lines columns up by position.
    """

    kind: Literal["insert_without_columns", "star_into_insert", "star_in_set_operation"]
    table: str | None = None
    offset: int | None = None
    width: int | None = None


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
    source, tokens, _ = _prepare(sql, max_length=max_length, max_depth=max_depth)
    try:
        tree = _parse_condition(source, tokens, max_depth)
    except TokenError as error:
        raise SqlError(
            Code.SQL_PARSE,
            f"{context}: could not tokenize part of the expression",
            hint="Close every quote.",
            details={"near": str(error)[:200], "context": context},
        ) from None
    known = frozenset(c.lower() for c in columns)
    for node in _walk(tree, max_depth):
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
    source, tokens, _ = _prepare(sql, max_length=MAX_SQL_LENGTH, max_depth=MAX_DEPTH)
    tree = _parse_condition(source, tokens, MAX_DEPTH)
    for node in tree.walk():
        node.comments = None
    return tree.sql(dialect=_DUCKDB)


@functools.lru_cache(maxsize=2048)
def statement_body(sql: str) -> str:
    """One statement's text without its terminating ';', for embedding in generated SQL.

    Embed it on lines of its own (``embed``): a trailing line comment then ends where the text
    ends. Raises like ``analyze_query`` when the text is not exactly one statement.
    """
    return _prepare(sql, max_length=MAX_SQL_LENGTH, max_depth=MAX_DEPTH)[2]


def embed(sql: str) -> str:
    """A query as a parenthesised subquery body: its own lines, terminator removed.

    >>> embed("select 1 -- one;").splitlines()
    ['(', 'select 1 -- one;', ')']
    """
    return f"(\n{statement_body(sql)}\n)"


def substitute_params(sql: str, values: Mapping[str, str]) -> str:
    """``sql`` with each ``$name`` the tokenizer finds replaced by ``values[name]`` (SQL text the caller
    writes, such as a typed NULL); names not in ``values`` stay. Strings, quoted names and comments
    are never touched.

    >>> substitute_params("select '$a', $a from t where b = $b", {"a": "CAST(NULL AS INTEGER)"})
    "select '$a', (CAST(NULL AS INTEGER)) from t where b = $b"
    """
    tokens = _tokenize(sql)
    out, position = [], 0
    for current, following in itertools.pairwise(tokens):
        if (
            current.token_type == TokenType.PARAMETER
            and following.start == current.end + 1
            and following.text in values
        ):
            out.append(sql[position : current.start])
            out.append(f"({values[following.text]})")
            position = following.end + 1
    out.append(sql[position:])
    return "".join(out)


def split_statements(sql: str) -> list[str]:
    """Split ``sql`` on top-level ';' using sqlglot's tokenizer, so that semicolons inside
    strings, quoted identifiers and comments never split. Empty statements are dropped."""
    tokens = _tokenize(sql)
    statements: list[str] = []
    start = 0
    has_tokens = False
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if has_tokens:
                statements.append(sql[start : token.start].strip())
            start, has_tokens = token.end + 1, False
        else:
            has_tokens = True
    if has_tokens:
        statements.append(sql[start:].strip())
    return statements


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
    source, tokens, text = _prepare(sql, max_length=max_length, max_depth=max_depth)
    _refuse_verb(tokens)
    tree = _parse(source, tokens, max_depth)
    kind = _statement_kind(tree, writable=writable)
    inventory = _inventory(tree, WRITE_NODES if kind != "select" else QUERY_NODES, max_depth)
    params = _params(inventory.placeholders, tokens)
    target = _write_target(tree, schema, views, source) if kind != "select" else None
    ctes = _cte_bindings(inventory) if inventory.has_ctes else {}
    reads = _bind_tables(inventory.tables, schema, source, skip=target, ctes=ctes)
    resolver = _Resolver(schema, ctes)
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
        order_dependent=_order_dependence(tree, target),
        links=resolver.links(tree),
    )


def _prepare(sql: str, *, max_length: int, max_depth: int) -> tuple[str, list[Token], str]:
    """Return (text to parse, its tokens, text without its terminator) for exactly one statement."""
    if len(sql) > max_length:
        _limit(f"SQL is {len(sql)} characters long; the limit is {max_length}", limit=max_length)
    if "\x00" in sql:
        _forbid("SQL must not contain NUL characters")
    source = sql.strip()
    tokens = _tokenize(source)
    semicolons = [i for i, token in enumerate(tokens) if token.token_type == TokenType.SEMICOLON]
    if semicolons and semicolons != [len(tokens) - 1]:
        raise SqlError(
            Code.SQL_FORBIDDEN,
            "more than one statement (only one statement and one trailing ';' are accepted)",
            hint=HINT_ONE_STATEMENT,
            details={"statements": len(split_statements(source))},
        )
    if (not semicolons and not tokens) or semicolons == [0]:
        raise SqlError(Code.SQL_PARSE, "empty statement", hint="Send one SQL statement.")
    _check_nesting(tokens, max_depth)
    text = source
    if semicolons:
        terminator = tokens[semicolons[0]]
        text = (source[: terminator.start] + source[terminator.end + 1 :]).strip()
    return source, tokens[: semicolons[0]] if semicolons else tokens, text


def _tokenize(sql: str) -> list[Token]:
    try:
        return _DUCKDB.tokenize(sql)
    except TokenError as error:
        line, col = _line_col(sql, getattr(error, "end", len(sql)))
        raise SqlError(
            Code.SQL_PARSE,
            "could not tokenize the SQL (unterminated string, identifier or comment?)",
            hint="Close every quote and comment.",
            details={"line": line, "col": col},
        ) from None


def _line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[: max(0, offset)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def _check_nesting(tokens: Sequence[Token], max_depth: int) -> None:
    """Refuse deep bracket nesting from the tokens alone, before the recursive parser runs, and make
    sure the parser has the stack it needs for the nesting that is allowed (pure-Python sqlglot
    recurses about 40 frames deep per bracket level)."""
    depth = deepest = 0
    for token in tokens:
        if token.token_type in OPENING:
            depth += 1
            if depth > max_depth:
                _limit(f"brackets are nested deeper than {max_depth}", limit=max_depth)
            deepest = max(deepest, depth)
        elif token.token_type in CLOSING:
            depth -= 1
    _ensure_recursion(deepest)


_FRAMES_PER_LEVEL: Final = 48
_FRAMES_BASE: Final = 1500


def _ensure_recursion(depth: int) -> None:
    """Raise Python's recursion limit (never lower it) so that parsing ``depth`` nested brackets fits."""
    needed = _FRAMES_BASE + _FRAMES_PER_LEVEL * depth
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


def _refuse_verb(tokens: Sequence[Token]) -> None:
    verb = tokens[0].text.upper()
    hint = REFUSED_VERBS.get(verb)
    if hint is not None:
        raise SqlError(
            Code.SQL_FORBIDDEN, f"{verb} statements are not allowed", hint=hint, details={"verb": verb}
        )


def _parse(source: str, tokens: list[Token], max_depth: int) -> exp.Expr:
    try:
        trees = _DUCKDB.parser(error_level=ErrorLevel.RAISE).parse(tokens, source)
    except ParseError as error:
        _parse_error(error)
    except RecursionError:
        _limit("the statement is nested too deeply to parse", limit=max_depth)
    statements = [tree for tree in trees if tree is not None]
    if len(statements) != 1:
        _forbid("expected exactly one statement", hint=HINT_ONE_STATEMENT)
    return statements[0]


def _parse_condition(source: str, tokens: list[Token], max_depth: int) -> exp.Expr:
    try:
        trees = _DUCKDB.parser(error_level=ErrorLevel.RAISE).parse_into(exp.Condition, tokens, source)
    except ParseError as error:
        _parse_error(error)
    except RecursionError:
        _limit("the expression is nested too deeply to parse", limit=max_depth)
    if len(trees) != 1 or trees[0] is None:
        raise SqlError(Code.SQL_PARSE, "expected one expression")
    return trees[0]


_SYMBOLS: Final = {
    "Add": "+",
    "Sub": "-",
    "Mul": "*",
    "Div": "/",
    "Mod": "%",
    "Pow": "**",
    "DPipe": "||",
    "And": "AND",
    "Or": "OR",
    "EQ": "=",
    "NEQ": "<>",
    "GT": ">",
    "GTE": ">=",
    "LT": "<",
    "LTE": "<=",
    "Where": "WHERE",
    "Having": "HAVING",
    "Is": "IS",
    "In": "IN",
    "Like": "LIKE",
    "Between": "BETWEEN",
    "Not": "NOT",
}


def _describe_parse_problem(description: str) -> str:
    """sqlglot's parser messages without its internals: ``Required keyword: 'expression' missing for
    <class 'sqlglot.expressions.core.Mul'>`` becomes ``* is missing an operand``."""
    missing = re.match(r"Required keyword: '(\w+)' missing for <class '[\w.]*\.(\w+)'>", description)
    if missing:
        name = missing.group(2)
        return f"{_SYMBOLS.get(name, name.upper())} is missing an operand or expression"
    return re.sub(
        r"<class '[\w.]*\.(\w+)'>", lambda m: _SYMBOLS.get(m.group(1), m.group(1).upper()), description
    )


def _parse_error(error: ParseError) -> NoReturn:
    first = error.errors[0] if error.errors else {}
    description = _describe_parse_problem(str(first.get("description") or "syntax error"))
    raise SqlError(
        Code.SQL_PARSE,
        f"could not parse the SQL: {description}",
        hint="Fix the syntax near details.line/details.col (DuckDB dialect).",
        details={"line": first.get("line"), "col": first.get("col"), "near": first.get("highlight")},
    ) from None


def _walk(tree: exp.Expr, max_depth: int) -> Iterator[exp.Expr]:
    """Every node, depth first in source order; refuses trees deeper than ``max_depth``."""
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            _limit(f"the expression tree is deeper than {max_depth} levels", limit=max_depth)
        yield node
        for child in node.iter_expressions(reverse=True):
            stack.append((child, depth + 1))


def _statement_kind(tree: exp.Expr, *, writable: bool) -> Kind:
    kind = STATEMENT_CLASSES.get(type(tree))
    if kind is None:
        if isinstance(tree, exp.Command):
            _forbid(f"unsupported statement {str(tree.this).upper()!r}", hint=HINT_WRITES)
        _forbid(f"{tree.key.upper()} is not a statement this call runs", hint=HINT_WRITES)
    if kind != "select" and not writable:
        _forbid(f"{kind.upper()} is not allowed here", hint=HINT_READ_ONLY)
    return kind


@dataclass(frozen=True)
class _Inventory:
    tables: tuple[exp.Table, ...]
    placeholders: tuple[exp.Placeholder, ...]
    has_ctes: bool


def _inventory(tree: exp.Expr, allowed: frozenset[type[exp.Expr]], max_depth: int) -> _Inventory:
    """Walk every node once: refuse what is too deep or not allowed, collect tables and placeholders."""
    tables: list[exp.Table] = []
    placeholders: list[exp.Placeholder] = []
    has_ctes = False
    for node in _walk(tree, max_depth):
        kind = type(node)
        if kind not in allowed:
            if not isinstance(node, exp.Func):
                _forbid_node(node)
            _check_function(node)
        elif kind is exp.Identifier or kind is exp.Var:
            _check_ascii(node.name)
        elif isinstance(node, exp.Table):
            tables.append(node)
        elif isinstance(node, exp.Placeholder):
            placeholders.append(node)
        elif kind is exp.CTE:
            has_ctes = True
        elif kind is exp.Lambda or kind is exp.Comprehension:
            _check_lambda(node)
        elif kind is exp.AtTimeZone:
            _bounded_name("AT TIME ZONE", node.args.get("zone"))
        elif kind is exp.SimilarTo:
            _check_sizes(node)
        elif kind is exp.From or kind is exp.Join or kind is exp.Lateral:
            _check_source(node.this)
        elif kind in WRITE_STATEMENTS and node is not tree:
            _forbid(f"{node.key.upper()} is only allowed as the whole statement", hint=HINT_WRITES)
        elif kind is exp.Update and not node.expressions:
            _forbid("UPDATE without SET is not allowed", hint=HINT_WRITES)
        elif kind is exp.Returning and node.args.get("into"):
            _forbid("RETURNING ... INTO is not allowed", hint=HINT_CONSTRUCT)
    return _Inventory(tuple(tables), tuple(placeholders), has_ctes)


def _check_source(source: exp.Expr) -> None:
    """What may follow FROM, JOIN or LATERAL: tables, subqueries, VALUES and the allowed table functions."""
    if isinstance(source, (exp.Table, exp.Subquery, exp.Values, exp.Lateral, *TABLE_FUNCTIONS)):
        return
    _forbid_table_function(source)


def _forbid_table_function(function: exp.Expr) -> NoReturn:
    name = function.sql_name().lower() if isinstance(function, exp.Func) else function.key
    if isinstance(function, exp.Anonymous):
        name = function.name.lower()
    _forbid(f"table function {name}() is not allowed", hint=HINT_SYSTEM, details={"function": name})


def _forbid_node(node: exp.Expr) -> NoReturn:
    if isinstance(node, exp.Command):
        _forbid(f"unsupported statement {str(node.this).upper()!r}", hint=HINT_WRITES)
    if isinstance(node, (exp.Insert, exp.Update, exp.Delete)):
        _forbid(f"{node.key.upper()} is not allowed here", hint=HINT_READ_ONLY)
    _forbid(f"unsupported SQL construct: {node.key}", hint=HINT_CONSTRUCT, details={"construct": node.key})


def _check_ascii(name: str) -> None:
    if not name.isascii():
        _forbid(f"identifier {name!r} is not ASCII", hint=HINT_ASCII, details={"identifier": name})


def _check_function(node: exp.Func) -> None:
    if isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc)):
        name = node.name.lower()
        _check_ascii(name)
        if name in COSTLY_FUNCTIONS:
            _forbid(
                f"function {name}() is not allowed: {COSTLY_FUNCTIONS[name]}",
                hint=HINT_FUNCTION,
                details={"function": name},
            )
        if not _function_name_allowed(name):
            _forbid(f"function {name}() is not allowed", hint=HINT_FUNCTION, details={"function": name})
        _check_sizes(node)
        return
    if type(node) in DENIED_FUNCTION_CLASSES:
        name = node.sql_name().lower()
        _forbid(f"function {name}() is not allowed", hint=HINT_FUNCTION, details={"function": name})
    _check_sizes(node)


def _check_sizes(node: exp.Expr) -> None:
    """Apply the size rule of a size-building function call (``SIZE_BUILDING``), typed or not."""
    if isinstance(node, exp.Anonymous):
        rule = SIZE_BUILDING.get(node.name.lower())
        if rule is not None:
            _check_size_rule(node.name.lower(), rule, node.expressions)
        return
    typed = _TYPED_SIZE_BUILDING.get(type(node))
    if typed is not None and isinstance(node, exp.Func):
        _check_size_rule(_typed_name(node), typed[1], _arguments(node))
    elif isinstance(node, exp.GenerateSeries) and not isinstance(node.parent, exp.Table):
        _check_list_bounds(node)
    elif isinstance(node, exp.SimilarTo):
        _bounded_pattern("SIMILAR TO", node.expression)


def _arguments(node: exp.Expr) -> list[exp.Expr]:
    """A function call's arguments in the order written. sqlglot builds a typed function from its
    argument list in the order of its ``arg_types``; flags it sets itself (``is_left``) are not nodes."""
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    arguments: list[exp.Expr] = []
    for key in type(node).arg_types:
        value = node.args.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, exp.Expr):
                arguments.append(item)
    return arguments


def _typed_name(node: exp.Func) -> str:
    """DuckDB's spelling of a typed function (``lpad``, not sqlglot's ``PAD``), as sqlglot writes it."""
    return node.sql(dialect=_DUCKDB).split("(", 1)[0].strip().lower()


def _typed_size_building() -> dict[type[exp.Expr], tuple[str, SizeRule]]:
    """The sqlglot classes that size-building functions parse into, found by parsing each of them."""
    typed: dict[type[exp.Expr], tuple[str, SizeRule]] = {}
    for name, rule in SIZE_BUILDING.items():
        arity = 1 + max((*rule.sizes, *rule.copied, *rule.formats, *rule.names, *rule.patterns))
        arguments = ", ".join(f"a{i}" for i in range(arity))
        tree = _DUCKDB.parse(f"SELECT {name}({arguments})")[0]
        call = tree.expressions[0] if isinstance(tree, exp.Select) else None
        if isinstance(call, exp.Func) and not isinstance(call, exp.Anonymous):
            known = typed.setdefault(type(call), (name, rule))
            if known[1] != rule:
                raise AssertionError(f"{name}() and {known[0]}() parse alike but have different size rules")
    return typed


def _check_size_rule(name: str, rule: SizeRule, arguments: Sequence[exp.Expr]) -> None:
    """Size-building functions (``SIZE_BUILDING``) build one value whose size, or the work spent on it,
    an argument chooses, outside DuckDB's memory limit and without stopping at the deadline: sizes must
    be bounded literals, copied values and looked-up names literals."""

    def argument(position: int) -> exp.Expr | None:
        return arguments[position] if position < len(arguments) else None

    largest = 0.0
    for position in rule.sizes:
        size = argument(position)
        if size is None:
            continue
        value = _literal_number(size)
        if value is None or value > MAX_AMPLIFY:
            _amplifies(name, f"its size argument must be a number literal of at most {MAX_AMPLIFY}")
        largest = max(largest, value)
    for position in rule.copied:
        copied = argument(position)
        if copied is None:
            continue
        length = _literal_length(copied)
        if length is None:
            _amplifies(name, "the value it copies into its result must be a literal")
        if largest * max(length, 1) > MAX_AMPLIFY:
            _amplifies(name, f"its literal value times its size must be at most {MAX_AMPLIFY}")
    for position in rule.formats:
        _bounded_format(name, argument(position))
    for position in rule.names:
        if argument(position) is not None:
            _bounded_name(name, argument(position))
    for position in rule.patterns:
        _bounded_pattern(name, argument(position))


def _check_list_bounds(node: exp.GenerateSeries) -> None:
    """``range(n)`` in a select list builds a list of n elements: literal bounds, at most ``MAX_AMPLIFY``."""
    bounds = [node.args.get(key) for key in ("start", "end", "step")]
    values = [_literal_number(b) if b is not None else 1.0 for b in bounds]
    if any(v is None for v in values):
        _amplifies("range", "its bounds must be numeric literals when it builds a list")
    start, end, step = (float(v) for v in values if v is not None)
    if step == 0 or (end - start) / step > MAX_AMPLIFY:
        _amplifies("range", f"a list of at most {MAX_AMPLIFY} elements")


def _check_lambda(node: exp.Expr) -> None:
    """A lambda's body (or a list comprehension's) runs once per list element: a call in it that builds
    a value by size builds it that many times over."""
    body = node.this
    for inner in body.walk() if isinstance(body, exp.Expr) else ():
        if isinstance(inner, exp.GenerateSeries):
            name, rule = "range", SizeRule(sizes=(0,))
        elif isinstance(inner, exp.Anonymous) and inner.name.lower() in SIZE_BUILDING:
            name = inner.name.lower()
            rule = SIZE_BUILDING[name]
        elif isinstance(inner, exp.Func) and type(inner) in _TYPED_SIZE_BUILDING:
            name, rule = _typed_name(inner), _TYPED_SIZE_BUILDING[type(inner)][1]
        else:
            continue
        arguments = _arguments(inner) if isinstance(inner, exp.Func) else []
        if rule.sizes or any(_widest(arguments[i]) > MAX_ELEMENT for i in rule.formats if i < len(arguments)):
            _forbid(
                f"{name}() is not allowed inside a lambda or list comprehension",
                hint=HINT_LAMBDA,
                details={"function": name},
            )


def _literal_number(node: exp.Expr) -> float | None:
    negative = isinstance(node, exp.Neg)
    inner = node.this if negative else node
    if isinstance(inner, exp.Literal) and not inner.is_string:
        try:
            value = float(inner.this)
        except ValueError:
            return None
        return -value if negative else value
    return None


def _literal_length(node: exp.Expr) -> int | None:
    """The length of a constant written in the statement (a literal, a list or struct of literals, a
    cast literal), or None when the value is not a constant."""
    if isinstance(node, exp.Literal):
        return len(str(node.this))
    if isinstance(node, (exp.Null, exp.Boolean)):
        return 1
    if isinstance(node, (exp.Neg, exp.Paren, exp.Cast, exp.TryCast, exp.Interval)):
        return _literal_length(node.this) if isinstance(node.this, exp.Expr) else None
    if isinstance(node, (exp.Array, exp.Tuple, exp.Struct)):
        lengths = [_literal_length(item) for item in node.expressions]
        return None if any(n is None for n in lengths) else sum(n for n in lengths if n is not None)
    if isinstance(node, exp.PropertyEQ) and isinstance(node.expression, exp.Expr):
        return _literal_length(node.expression)
    return None


def _widest(template: exp.Expr) -> int:
    """The widest field a (literal) format asks for; formats that are not literals are refused elsewhere."""
    if isinstance(template, exp.Literal) and template.is_string:
        return max((int(digits) for digits in re.findall(r"\d+", str(template.this))), default=0)
    return 0


def _bounded_format(name: str, template: exp.Expr | None) -> None:
    if not (isinstance(template, exp.Literal) and template.is_string):
        _amplifies(name, "its format must be a string literal")
    text = str(template.this)
    widths = [int(digits) for digits in re.findall(r"\d+", text)]
    if "*" in text or any(width > MAX_AMPLIFY for width in widths):
        _amplifies(name, f"widths in its format must be literal numbers of at most {MAX_AMPLIFY}")


def _bounded_name(name: str, argument: exp.Expr | None) -> None:
    length = _literal_length(argument) if argument is not None else None
    if length is None or length > MAX_NAME:
        _forbid(
            f"{name} needs its time zone as a literal name of at most {MAX_NAME} characters: DuckDB "
            "looks the name up at a cost that grows with its length, without stopping at the deadline",
            hint=HINT_NAME,
            details={"function": name, "max": MAX_NAME},
        )


def _bounded_pattern(name: str, pattern: exp.Expr | None) -> None:
    if pattern is None:
        return
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        size = None
    else:
        size = _pattern_size(str(pattern.this))
    if size is None or size > MAX_PATTERN:
        _forbid(
            f"{name} needs its regular expression as a string literal of at most {MAX_PATTERN} atoms: "
            "matching costs up to the text's length times the pattern's size, without stopping at the deadline",
            hint=HINT_PATTERN,
            details={"function": name, "max": MAX_PATTERN, "atoms": size},
        )


_REPETITION: Final = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def _pattern_size(pattern: str) -> int:
    """An upper bound on a regular expression's size: its atoms (characters, escapes, classes), each
    counted once per repetition; ``{m,n}`` multiplies the atom or group before it by its largest count,
    nested repetitions multiply. Operators (``* + ? | ^ $``) add no atoms.

    >>> _pattern_size("[a-z]+@[a-z]+[.][a-z]{2,4}"), _pattern_size("1{1000}1{1000}"), _pattern_size("((ab){3}|c){2}")
    (8, 2000, 14)
    """
    totals, lasts = [0], [0]
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "(":
            totals.append(0)
            lasts.append(0)
            i += 1
            continue
        if char == ")" and len(totals) > 1:
            group = totals.pop()
            lasts.pop()
            totals[-1] += group
            lasts[-1] = group
            i += 1
            continue
        repetition = _REPETITION.match(pattern, i) if char == "{" else None
        if repetition is not None and any(repetition.groups()):
            count = max(int(n) for n in repetition.groups() if n)
            totals[-1] += lasts[-1] * (count - 1)
            lasts[-1] *= count
            i = repetition.end()
            continue
        if char in "*+?|^$":
            i += 1
            continue
        if char == "\\":
            i += 2
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[^", i) else i + 1)
            while end > 0 and pattern[end - 1] == "\\":
                end = pattern.find("]", end + 1)
            i = len(pattern) if end < 0 else end + 1
        else:
            i += 1
        totals[-1] += 1
        lasts[-1] = 1
    return sum(totals)


def _amplifies(name: str, rule: str) -> NoReturn:
    _forbid(
        f"{name}() builds a value whose size its arguments choose: {rule}",
        hint=HINT_AMPLIFY,
        details={"function": name, "max": MAX_AMPLIFY},
    )


_TYPED_SIZE_BUILDING: Final = _typed_size_building()


def _function_name_allowed(name: str) -> bool:
    """An untyped function is allowed if curated, or if it names a typed function that is allowed
    (DuckDB's method-call syntax ``x.lower()`` leaves even well-known names untyped)."""
    if DENIED_FUNCTION_NAMES.match(name):
        return False
    if name in ANONYMOUS_FUNCTIONS:
        return True
    typed = exp.FUNCTION_BY_NAME.get(name.upper())
    return typed is not None and typed not in DENIED_FUNCTION_CLASSES


def _params(placeholders: Sequence[exp.Placeholder], tokens: Sequence[Token]) -> tuple[str, ...]:
    """Named ``$params`` in textual order; anything else is refused."""
    dollar = _dollar_names(tokens)
    used: set[str] = set()
    for placeholder in placeholders:
        name = str(placeholder.this or "")
        if not name or name.isdigit():
            label = f"${name}" if name else "?"
            raise SqlError(Code.SQL_PARAM, f"positional parameter {label} is not allowed", hint=HINT_PARAMS)
        if name not in dollar:
            raise SqlError(Code.SQL_PARAM, f"parameter {name!r} must be written ${name}", hint=HINT_PARAMS)
        if not PARAM_NAME.fullmatch(name):
            raise SqlError(
                Code.SQL_PARAM,
                f"parameter ${name} must be a lowercase identifier",
                hint=HINT_PARAMS,
                details={"param": name},
            )
        used.add(name)
    return tuple(name for name in dollar if name in used)


def _dollar_names(tokens: Sequence[Token]) -> dict[str, None]:
    names: dict[str, None] = {}
    for current, following in itertools.pairwise(tokens):
        if current.token_type == TokenType.PARAMETER and following.start == current.end + 1:
            names.setdefault(following.text, None)
    return names


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _write_target(tree: exp.Expr, schema: Schema, views: frozenset[str], source: str) -> exp.Table:
    target = tree.this
    if isinstance(target, exp.Schema):
        target = target.this
    if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
        _forbid(f"{tree.key.upper()} must target an application table", hint=HINT_WRITES)
    name = _table_name(target, source)
    if name in views:
        _forbid(f"{name!r} is a view and cannot be written", hint="Write to the underlying table instead.")
    if name not in schema:
        _unknown_table(name, schema)
    return target


_CteBindings = dict[int, exp.CTE]
"""id() of a table reference -> the CTE it names."""


def _cte_bindings(inventory: _Inventory) -> _CteBindings:
    bindings: _CteBindings = {}
    for table in inventory.tables:
        if isinstance(table.this, exp.Identifier) and not table.db:
            cte = _cte_for(table, table.name.lower())
            if cte is not None:
                bindings[id(table)] = cte
    return bindings


def _bind_tables(
    tables: Iterable[exp.Table], schema: Schema, source: str, *, skip: exp.Table | None, ctes: _CteBindings
) -> set[str]:
    """Check every table reference; return the app tables and views read."""
    reads: set[str] = set()
    for table in tables:
        if table is skip:
            continue
        name = _bind_table(table, schema, source, ctes)
        if name is not None:
            reads.add(name)
    return reads


def _bind_table(table: exp.Table, schema: Schema, source: str, ctes: _CteBindings) -> str | None:
    """The app table a reference reads, None for CTEs and allowed table functions, or a refusal."""
    this = table.this
    if not isinstance(this, exp.Identifier):
        if isinstance(this, TABLE_FUNCTIONS):
            return None
        _forbid_table_function(this)
    name = _table_name(table, source)
    if id(table) in ctes:
        return None
    if name not in schema:
        _unknown_table(name, schema)
    return name


def _table_name(table: exp.Table, source: str) -> str:
    """The lowercase name of an app-table reference; files, other schemas and reserved names are refused."""
    for part in table.parts:
        if part.args.get("quoted") and _quote_char(part, source) != '"':
            _forbid("files cannot be used as tables", hint=HINT_SYSTEM, details={"table": part.name})
    parts = [part.name.lower() for part in table.parts]
    qualified = ".".join(parts)
    if any(part.startswith(RESERVED_PREFIXES) for part in parts):
        _forbid(f"{qualified!r} is a system object", hint=HINT_SYSTEM, details={"table": qualified})
    if parts[:-1] not in ([], ["main"]):
        _forbid(
            f"{qualified!r} is outside the application schema",
            hint=HINT_SYSTEM,
            details={"table": qualified},
        )
    return parts[-1]


def _quote_char(identifier: exp.Expr, source: str) -> str:
    """The character that opens a quoted identifier in the source: '"' for a real identifier,
    "'" (or anything else) when a string literal was read as a table name."""
    start = identifier.meta.get("start")
    return source[start] if isinstance(start, int) and 0 <= start < len(source) else ""


def _cte_for(table: exp.Table, name: str) -> exp.CTE | None:
    """The CTE a bare table name binds to at this point of the statement, if any.

    A CTE sees the CTEs before it in its own WITH (and itself when the WITH is RECURSIVE);
    the body of a query sees all of its WITH; inner queries see the WITHs around them.
    """
    node: exp.Expr = table
    while node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.With):
            ctes = parent.expressions
            position = next((i for i, cte in enumerate(ctes) if cte is node), len(ctes))
            visible = ctes[: position + 1] if parent.args.get("recursive") else ctes[:position]
            found = _find_cte(visible, name)
            if found is not None:
                return found
            node = parent.parent if parent.parent is not None else parent
            continue
        with_ = parent.args.get("with_")
        if isinstance(with_, exp.With) and node is not with_:
            found = _find_cte(with_.expressions, name)
            if found is not None:
                return found
        node = parent
    return None


def _find_cte(ctes: Sequence[exp.Expr], name: str) -> exp.CTE | None:
    for cte in reversed(ctes):
        if isinstance(cte, exp.CTE) and cte.alias.lower() == name:
            return cte
    return None


def _unknown_table(name: str, schema: Schema) -> NoReturn:
    raise SqlError(
        Code.SQL_UNKNOWN_TABLE,
        f"unknown table {name!r}",
        hint=HINT_TABLES,
        details={"table": name, "known_tables": sorted(schema)},
    )


# ---------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------

_Columns = tuple[str, ...] | None
"""The lowercase column names of a source, or None when they cannot be known."""


@dataclass
class _Frame:
    """The sources one SELECT (or write) can see, and the frame around it."""

    parent: _Frame | None
    sources: dict[str, _Columns] = field(default_factory=dict)
    hidden: dict[str, frozenset[str]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()
    tables: dict[str, str] = field(default_factory=dict)
    """Source alias -> the app table or view it names (CTEs, subqueries and functions have none)."""

    def chain(self) -> Iterator[_Frame]:
        frame: _Frame | None = self
        while frame is not None:
            yield frame
            frame = frame.parent


class _Resolver:
    """Resolves column references against the sources in scope and names the output columns.

    Resolution is lenient wherever a source's columns cannot be derived (table functions
    without a column list, VALUES, stars over such sources): DuckDB's binder has the last
    word there. Security never depends on this pass; tables and functions are checked first.
    """

    def __init__(self, schema: Schema, ctes: _CteBindings) -> None:
        self._schema = schema
        self._ctes_of_tables = ctes
        self._cte_columns: dict[int, _Columns] = {}
        self.read: set[tuple[str, str]] = set()
        self.written: set[tuple[str, str]] = set()
        self._placed: list[tuple[str, tuple[str, str], exp.Expr]] = []
        self._columns_of: dict[int, tuple[str, str]] = {}
        """id() of a column reference -> the (relation, column) it resolved to."""

    # statements --------------------------------------------------------------------------

    def statement(self, tree: exp.Expr, target: exp.Table | None) -> tuple[str, ...]:
        if target is None:
            return self._output_names(tree, None)
        self._ctes(tree.args.get("with_"), None)
        columns = tuple(self._schema[target.name.lower()])
        if isinstance(tree, exp.Insert):
            frame = self._insert(tree, target, columns)
        else:
            frame = self._update_or_delete(tree, target, columns)
        returning = tree.args.get("returning")
        if returning is None:
            return ()
        name = target.name.lower()
        only_target = _Frame(
            None, {target.alias_or_name.lower(): columns}, tables={target.alias_or_name.lower(): name}
        )
        return tuple(n for n, _ in self._projection(returning.expressions, only_target, frame))

    def _insert(self, tree: exp.Insert, target: exp.Table, columns: tuple[str, ...]) -> _Frame:
        table = target.name.lower()
        filled = columns
        if isinstance(tree.this, exp.Schema):
            filled = tuple(identifier.name.lower() for identifier in tree.this.expressions)
            for name in filled:
                _require_target_column(name, target, columns)
        self.written.update((table, name) for name in filled)
        source = tree.expression
        if source is not None:
            self.query(source, None)
            if not tree.args.get("by_name"):
                for position, value in _inserted_values(source):
                    if position < len(filled):
                        self._placed.append(("insert", (table, filled[position]), value))
        alias = target.alias_or_name.lower()
        frame = _Frame(None, {alias: columns, "excluded": columns}, tables={alias: table, "excluded": table})
        conflict = tree.args.get("conflict")
        if conflict is not None:
            for key in conflict.args.get("conflict_keys") or []:
                for column in key.find_all(exp.Column):
                    _require_target_column(column.name.lower(), target, columns)
            self._assignments(conflict.expressions, target, columns, frame)
            self._expressions([conflict.args.get("where")], frame)
        self._expressions([tree.args.get("returning")], frame)
        return frame

    def _update_or_delete(self, tree: exp.Expr, target: exp.Table, columns: tuple[str, ...]) -> _Frame:
        alias = target.alias_or_name.lower()
        frame = _Frame(None, {alias: columns}, tables={alias: target.name.lower()})
        from_ = tree.args.get("from_")
        if from_ is not None:
            self._add_source(frame, from_.this)
        for source in tree.args.get("using") or []:
            self._add_source(frame, source)
        for join in tree.args.get("joins") or []:
            self._add_join(frame, join)
        if isinstance(tree, exp.Update):
            self._assignments(tree.expressions, target, columns, frame)
        self._expressions([tree.args.get("where"), tree.args.get("returning")], frame)
        return frame

    def _assignments(
        self, assignments: Sequence[exp.Expr], target: exp.Table, columns: tuple[str, ...], frame: _Frame
    ) -> None:
        table = target.name.lower()
        for assignment in assignments:
            if isinstance(assignment, exp.EQ) and isinstance(assignment.this, exp.Column):
                name = assignment.this.name.lower()
                _require_target_column(name, target, columns)
                self.written.add((table, name))
                self._placed.append(("assign", (table, name), assignment.expression))
                self._expressions([assignment.expression], frame)
            else:
                self._expressions([assignment], frame)

    # queries -----------------------------------------------------------------------------

    def _output_names(self, tree: exp.Expr, parent: _Frame | None) -> tuple[str, ...]:
        named = self._query(tree, parent)
        return tuple(name for name, _ in named)

    def query(self, node: exp.Expr, parent: _Frame | None) -> _Columns:
        named = self._query(node, parent)
        if not all(exact for _, exact in named):
            return None
        return tuple(name.lower() for name, _ in named)

    def _query(self, node: exp.Expr, parent: _Frame | None) -> list[tuple[str, bool]]:
        """Check one query; return its output names, each flagged exact or best-effort."""
        while isinstance(node, (exp.Subquery, exp.Paren)) and not node.alias:
            node = node.this
        self._ctes(node.args.get("with_"), parent)
        if isinstance(node, exp.Select):
            return self._select(node, parent)
        if isinstance(node, exp.SetOperation):
            left = self._query(node.left, parent)
            self._query(node.right, parent)
            exact = all(known for _, known in left)
            output: dict[str, _Columns] = {"": tuple(name.lower() for name, _ in left) if exact else None}
            self._expressions(
                [node.args.get(key) for key in ("order", "limit", "offset")], _Frame(parent, output)
            )
            if node.args.get("by_name"):
                return [("*", False)]
            return left
        if isinstance(node, exp.Subquery):
            columns = self.query(node.this, parent)
            return _named(_renamed(columns, node.alias_column_names))
        self._expressions([node], _Frame(parent))
        if isinstance(node, exp.Values) and node.expressions:
            width = len(node.expressions[0].expressions) if isinstance(node.expressions[0], exp.Tuple) else 1
            return [(f"col{i}", True) for i in range(width)]
        return [("*", False)]

    def _ctes(self, with_: exp.Expr | None, parent: _Frame | None) -> None:
        if not isinstance(with_, exp.With):
            return
        for cte in with_.expressions:
            declared = [name.lower() for name in cte.alias_column_names]
            if with_.args.get("recursive"):
                self._cte_columns[id(cte)] = tuple(declared) if declared else None
            self._cte_columns[id(cte)] = _renamed(self.query(cte.this, parent), declared)

    def _select(self, select: exp.Select, parent: _Frame | None) -> list[tuple[str, bool]]:
        frame = _Frame(parent)
        from_ = select.args.get("from_")
        if from_ is not None:
            self._add_source(frame, from_.this)
        for join in select.args.get("joins") or []:
            self._add_join(frame, join)
        output = self._projection(select.expressions, frame, frame)
        frame.aliases = frozenset(
            projection.alias.lower() for projection in select.expressions if isinstance(projection, exp.Alias)
        )
        rest = [value for key, value in select.args.items() if key not in ("from_", "joins", "with_")]
        self._expressions(rest, frame)
        return output

    def _add_join(self, frame: _Frame, join: exp.Join) -> None:
        before = {column for columns in frame.sources.values() for column in columns or ()}
        alias = self._add_source(frame, join.this)
        using = frozenset(identifier.name.lower() for identifier in join.args.get("using") or [])
        if join.method.upper() == "NATURAL":
            using = frozenset(frame.sources.get(alias) or ()) & before
        if join.kind.upper() in ("SEMI", "ANTI"):
            using = frozenset(frame.sources.get(alias) or ())
        if using:
            frame.hidden[alias] = using
        self._expressions([join.args.get("on")], frame)

    def _add_source(self, frame: _Frame, source: exp.Expr) -> str:
        """Register one FROM/JOIN source in ``frame``; return the name it is known by."""
        alias = source.alias.lower()
        columns: _Columns = None
        if isinstance(source, exp.Table):
            alias = alias or source.name.lower()
            columns = self._table_columns(source, frame)
            if (
                isinstance(source.this, exp.Identifier)
                and id(source) not in self._ctes_of_tables
                and source.name.lower() in self._schema
            ):
                frame.tables[alias] = source.name.lower()
        elif isinstance(source, exp.Subquery) and not isinstance(source.this, exp.Query | exp.Values):
            return self._add_source(frame, source.this)  # a parenthesised join: (a JOIN b ON ...)
        elif isinstance(source, (exp.Subquery, exp.Lateral)):
            inner = source.this.this if isinstance(source.this, exp.Subquery) else source.this
            columns = self.query(inner, frame)
        elif isinstance(source, exp.Values):
            columns = self.query(source, frame)
        elif isinstance(source, exp.Unnest):
            self._expressions(source.expressions, frame)
            alias = alias or "unnest"
            declared = tuple(name.lower() for name in source.alias_column_names)
            columns = declared or (None if source.alias else ("unnest",))
        else:
            self._expressions([source], frame)
        frame.sources[alias] = _renamed(columns, source.alias_column_names)
        for join in source.args.get("joins") or []:
            self._add_join(frame, join)
        return alias

    def _table_columns(self, table: exp.Table, frame: _Frame) -> _Columns:
        if not isinstance(table.this, exp.Identifier):
            self._expressions([table.this], frame)
            if isinstance(table.this, exp.GenerateSeries):
                return ("range",) if table.this.args.get("is_end_exclusive") else ("generate_series",)
            return None
        cte = self._ctes_of_tables.get(id(table))
        if cte is not None:
            return self._cte_columns.get(id(cte))
        known = self._schema.get(table.name.lower())
        return tuple(known) if known is not None else None

    # projections and columns -------------------------------------------------------------

    def _projection(
        self, expressions: Sequence[exp.Expr], frame: _Frame, scope: _Frame
    ) -> list[tuple[str, bool]]:
        """Output names of a select list (or RETURNING list); stars expand over ``frame``."""
        output: list[tuple[str, bool]] = []
        for expression in expressions:
            if isinstance(expression, exp.Star):
                output.extend(_expand_star(expression, frame, None))
                self._star_read(frame, None)
            elif isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star):
                qualifier = expression.table.lower()
                if qualifier not in frame.sources:
                    _unknown_column(f"{qualifier}.*", scope)
                output.extend(_expand_star(expression.this, frame, qualifier))
                self._star_read(frame, qualifier)
            elif expression.output_name:
                output.append((expression.output_name, True))
            else:
                output.append((expression.sql(dialect=_DUCKDB), False))
        return output

    def _expressions(self, nodes: Iterable[object], frame: _Frame) -> None:
        """Resolve every column under ``nodes``; nested queries get their own frame."""
        stack: list[exp.Expr] = []
        for node in nodes:
            if isinstance(node, list):
                stack.extend(item for item in node if isinstance(item, exp.Expr))
            elif isinstance(node, exp.Expr):
                stack.append(node)
        while stack:
            node = stack.pop()
            if isinstance(node, (exp.Select, exp.SetOperation)):
                self.query(node, frame)
            elif isinstance(node, exp.Column):
                found = _resolve_column(node, frame)
                if found is not None:
                    self.read.add(found)
                    self._columns_of[id(node)] = found
            else:
                stack.extend(node.iter_expressions())

    def _star_read(self, frame: _Frame, qualifier: str | None) -> None:
        for alias, columns in frame.sources.items():
            relation = frame.tables.get(alias)
            if relation is not None and columns is not None and qualifier in (None, alias):
                self.read.update((relation, column) for column in columns)

    # types -------------------------------------------------------------------------------

    def _operand(self, node: exp.Expr | None) -> Operand | None:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Placeholder):
            return ("param", str(node.this or ""))
        if isinstance(node, exp.Column):
            found = self._columns_of.get(id(node))
            return None if found is None else ("column", *found)
        return None

    def links(self, tree: exp.Expr) -> tuple[Link, ...]:
        """The bare parameters and columns the statement puts into columns or compares with them."""
        out: list[Link] = []
        for kind, column, value in self._placed:
            other = self._operand(value)
            if other is not None:
                out.append(Link(kind, column, other))  # type: ignore[arg-type]
        assignments = {
            id(node)
            for holder in tree.find_all(exp.Update, exp.OnConflict)
            for node in holder.expressions
            if isinstance(node, exp.EQ)
        }
        for node in tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between):
            if id(node) in assignments:
                continue
            if isinstance(node, exp.In):
                sides = [node.this, *node.expressions]
            elif isinstance(node, exp.Between):
                sides = [node.this, node.args.get("low"), node.args.get("high")]
            else:
                sides = [node.this, node.expression]
            operands = [self._operand(side) for side in sides]
            columns = [o for o in operands if o is not None and o[0] == "column"]
            if not columns:
                continue
            anchor = columns[0]
            for operand in operands:
                if operand is not None and operand is not anchor:
                    out.append(Link("compare", (anchor[1], anchor[2]), operand))
        return tuple(dict.fromkeys(out))


def _expand_star(star: exp.Expr, frame: _Frame, qualifier: str | None) -> list[tuple[str, bool]]:
    names: list[str] = []
    for alias, columns in frame.sources.items():
        if qualifier is not None and alias != qualifier:
            continue
        if columns is None:
            return [("*", False)]
        hidden = frame.hidden.get(alias, frozenset()) if qualifier is None else frozenset()
        names.extend(column for column in columns if column not in hidden)
    excluded = {column.name.lower() for column in star.args.get("except_") or []}
    renamed = {
        alias.this.name.lower(): alias.alias
        for alias in star.args.get("rename") or []
        if isinstance(alias, exp.Alias)
    }
    return [(renamed.get(name, name), True) for name in names if name not in excluded]


def _resolve_column(column: exp.Column, frame: _Frame) -> tuple[str, str] | None:
    """Check that a column reference resolves; return the (app table or view, column) it reads when
    that is known (a CTE, a subquery or an ambiguous unqualified name gives None)."""
    if isinstance(column.this, exp.Star):
        qualifier = column.table.lower()
        if qualifier and not any(qualifier in f.sources for f in frame.chain()):
            _unknown_column(f"{qualifier}.*", frame)
        return None
    parts = [part.name.lower() for part in column.parts]
    if _is_bound_variable(column, parts[0]):
        return None
    if len(parts) >= 3 and parts[0] == "main":
        parts = parts[1:]
    if len(parts) > 1:
        found, columns, scope = _lookup_source(frame, parts[0])
        if found:
            if columns is not None and parts[1] not in columns and parts[1] != "rowid":
                _unknown_column(f"{parts[0]}.{parts[1]}", frame)
            relation = scope.tables.get(parts[0]) if scope is not None else None
            if relation is None or columns is None or parts[1] not in columns:
                return None
            return relation, parts[1]
    return _resolves_unqualified(parts[0], frame, ".".join(parts))


def _lookup_source(frame: _Frame, name: str) -> tuple[bool, _Columns, _Frame | None]:
    for scope in frame.chain():
        if name in scope.sources:
            return True, scope.sources[name], scope
    return False, None, None


def _resolves_unqualified(name: str, frame: _Frame, shown: str) -> tuple[str, str] | None:
    for scope in frame.chain():
        if name in scope.aliases or name in scope.sources:
            return None
        holders = [
            alias for alias, columns in scope.sources.items() if columns is not None and name in columns
        ]
        if any(columns is None for columns in scope.sources.values()):
            return None
        if holders:
            relation = scope.tables.get(holders[0]) if len(holders) == 1 else None
            return None if relation is None else (relation, name)
        if scope.sources and name == "rowid":
            return None
    _unknown_column(shown, frame)


def _is_bound_variable(column: exp.Column, name: str) -> bool:
    """True when ``name`` is a lambda parameter or list-comprehension variable around ``column``."""
    node = column.parent
    while node is not None and not isinstance(node, exp.Query):
        if isinstance(node, exp.Lambda) and any(param.name.lower() == name for param in node.expressions):
            return True
        if (
            isinstance(node, exp.Comprehension)
            and node.expression is not None
            and node.expression.name.lower() == name
        ):
            return True
        node = node.parent
    return False


def _require_target_column(name: str, target: exp.Table, columns: tuple[str, ...]) -> None:
    if name not in columns:
        table = target.name.lower()
        raise SqlError(
            Code.SQL_UNKNOWN_COLUMN,
            f"table {table!r} has no column {name!r}",
            hint="Use the columns listed in details.candidates.",
            details={"column": name, "table": table, "candidates": {table: list(columns)}},
        )


def _unknown_column(name: str, frame: _Frame) -> NoReturn:
    candidates = {
        alias or "(subquery)": list(columns) if columns is not None else ["*"]
        for alias, columns in frame.sources.items()
    }
    raise SqlError(
        Code.SQL_UNKNOWN_COLUMN,
        f"unknown column {name!r}",
        hint="Use the columns listed in details.candidates, qualified by their table alias when ambiguous.",
        details={"column": name, "candidates": candidates},
    )


def _renamed(columns: _Columns, names: Sequence[str]) -> _Columns:
    """Apply a table alias column list, which renames leading columns."""
    renames = tuple(name.lower() for name in names)
    if not renames:
        return columns
    if columns is None:
        return None
    return renames + columns[len(renames) :]


def _named(columns: _Columns) -> list[tuple[str, bool]]:
    return [("*", False)] if columns is None else [(name, True) for name in columns]


def _inserted_values(source: exp.Expr) -> Iterator[tuple[int, exp.Expr]]:
    """(position, expression) of each value an INSERT's source puts into its target's columns."""
    while isinstance(source, (exp.Subquery, exp.Paren)) and not source.alias:
        source = source.this
    if isinstance(source, exp.Values):
        for row in source.expressions:
            items = row.expressions if isinstance(row, exp.Tuple) else [row]
            yield from enumerate(items)
    elif isinstance(source, exp.Select):
        if not any(_is_star(e) for e in source.expressions):
            for position, expression in enumerate(source.expressions):
                yield position, expression.this if isinstance(expression, exp.Alias) else expression
    elif isinstance(source, exp.SetOperation):
        yield from _inserted_values(source.left)
        yield from _inserted_values(source.right)


def _is_star(expression: exp.Expr) -> bool:
    return isinstance(expression, exp.Star) or (
        isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star)
    )


def _has_star(query: exp.Expr) -> bool:
    """A ``*`` in the select list of ``query`` (or of any branch of it, for a set operation)."""
    while isinstance(query, (exp.Subquery, exp.Paren)) and not query.alias:
        query = query.this
    if isinstance(query, exp.SetOperation):
        return _has_star(query.left) or _has_star(query.right)
    return isinstance(query, exp.Select) and any(_is_star(e) for e in query.expressions)


def _width(source: exp.Expr | None) -> int | None:
    """How many values each row of an INSERT's source has, when the text says."""
    while isinstance(source, (exp.Subquery, exp.Paren)) and not source.alias:
        source = source.this
    if isinstance(source, exp.Values) and source.expressions:
        first = source.expressions[0]
        return len(first.expressions) if isinstance(first, exp.Tuple) else 1
    if isinstance(source, exp.SetOperation):
        return _width(source.left)
    if isinstance(source, exp.Select) and not _has_star(source):
        return len(source.expressions)
    return None


def _order_dependence(tree: exp.Expr, target: exp.Table | None) -> tuple[OrderDependence, ...]:
    """Where the statement's meaning depends on the order of a table's columns (see ``OrderDependence``)."""
    found: list[OrderDependence] = []
    if isinstance(tree, exp.Insert) and target is not None and not tree.args.get("by_name"):
        table = target.name.lower()
        if not isinstance(tree.this, exp.Schema):
            last = target.args.get("alias")
            anchor = last.this if isinstance(last, exp.TableAlias) else target.parts[-1]
            end = anchor.meta.get("end")
            found.append(
                OrderDependence(
                    "insert_without_columns",
                    table=table,
                    offset=end + 1 if isinstance(end, int) else None,
                    width=_width(tree.expression),
                )
            )
        if tree.expression is not None and _has_star(tree.expression):
            found.append(OrderDependence("star_into_insert", table=table))
    for operation in tree.find_all(exp.SetOperation):
        if not operation.args.get("by_name") and (_has_star(operation.left) or _has_star(operation.right)):
            found.append(OrderDependence("star_in_set_operation"))
            break
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Expressions (CHECK constraints)
# ---------------------------------------------------------------------------------------------


def _check_expression_node(node: exp.Expr, columns: frozenset[str], context: str) -> None:
    if isinstance(node, exp.Identifier | exp.Var):
        _check_ascii(node.name)
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
        _check_sizes(node)
        return
    if isinstance(node, exp.Anonymous) and node.name.lower() in EXPRESSION_ANONYMOUS:
        _check_sizes(node)
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
    _forbid(f"{context}: {what} not allowed in a check", hint=HINT_CHECK, details=details)


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


# ---------------------------------------------------------------------------------------------
# Raising
# ---------------------------------------------------------------------------------------------


def _forbid(message: str, *, hint: str | None = None, details: dict[str, object] | None = None) -> NoReturn:
    raise SqlError(Code.SQL_FORBIDDEN, message, hint=hint, details=dict(details or {}))


def _limit(message: str, *, limit: int) -> NoReturn:
    raise PolicyError(Code.LIMIT_EXCEEDED, message, hint=HINT_LIMIT, details={"limit": limit})
