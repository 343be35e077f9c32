"""Agent SQL text to exactly one statement: its tokens, then its one sqlglot tree (DuckDB dialect).

The first steps of the guard, each refusing what it cannot accept (``runtime.sql.sqlcheck`` draws
the whole flow): ``prepare`` checks size, NUL bytes, that the tokens hold exactly one statement and
that brackets do not nest too deeply; ``refuse_verb`` refuses statement families by their leading
keyword; ``parse`` and ``parse_condition`` run sqlglot with its errors raised.

The same tokenizer serves the runtime's text helpers (``__all__``): splitting a script into
statements and embedding or rewriting one statement without touching its strings, quoted names
and comments.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Final, NoReturn

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from runtime.errors import Code, SqlError
from runtime.sql.allowlists import CLOSING, HINT_ONE_STATEMENT, OPENING, REFUSED_VERBS
from runtime.sql.refusals import forbid, limit

__all__ = [
    "MAX_DEPTH",
    "MAX_SQL_LENGTH",
    "embed",
    "split_statements",
    "statement_body",
    "substitute_params",
]

MAX_SQL_LENGTH: Final = 100_000
MAX_DEPTH: Final = 64

DUCKDB: Final = Dialect.get_or_raise("duckdb")


@functools.lru_cache(maxsize=2048)
def statement_body(sql: str) -> str:
    """One statement's text without its terminating ';', for embedding in generated SQL.

    Embed it on lines of its own (``embed``): a trailing line comment then ends where the text
    ends. Raises like ``analyze_query`` when the text is not exactly one statement.
    """
    return prepare(sql, max_length=MAX_SQL_LENGTH, max_depth=MAX_DEPTH)[2]


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
    tokens = tokenize(sql)
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
    tokens = tokenize(sql)
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
# One statement
# ---------------------------------------------------------------------------------------------


def prepare(sql: str, *, max_length: int, max_depth: int) -> tuple[str, list[Token], str]:
    """Return (text to parse, its tokens, text without its terminator) for exactly one statement."""
    if len(sql) > max_length:
        limit(f"SQL is {len(sql)} characters long; the limit is {max_length}", limit=max_length)
    if "\x00" in sql:
        forbid("SQL must not contain NUL characters")
    source = sql.strip()
    tokens = tokenize(source)
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


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql``; text the tokenizer cannot read is a ``sql.parse`` error with its place."""
    try:
        return DUCKDB.tokenize(sql)
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
                limit(f"brackets are nested deeper than {max_depth}", limit=max_depth)
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


def refuse_verb(tokens: Sequence[Token]) -> None:
    """Refuse a statement family named by its leading keyword (``REFUSED_VERBS``) before parsing."""
    verb = tokens[0].text.upper()
    hint = REFUSED_VERBS.get(verb)
    if hint is not None:
        raise SqlError(
            Code.SQL_FORBIDDEN, f"{verb} statements are not allowed", hint=hint, details={"verb": verb}
        )


def parse(source: str, tokens: list[Token], max_depth: int) -> exp.Expr:
    """The one statement tree, sqlglot's errors raised (a Command it falls back to is refused later, by
    ``statement_kind`` and the walk)."""
    try:
        trees = DUCKDB.parser(error_level=ErrorLevel.RAISE).parse(tokens, source)
    except ParseError as error:
        _parse_error(error)
    except RecursionError:
        limit("the statement is nested too deeply to parse", limit=max_depth)
    statements = [tree for tree in trees if tree is not None]
    if len(statements) != 1:
        forbid("expected exactly one statement", hint=HINT_ONE_STATEMENT)
    return statements[0]


def parse_condition(source: str, tokens: list[Token], max_depth: int) -> exp.Expr:
    """The one scalar expression the tokens hold (a column CHECK)."""
    try:
        trees = DUCKDB.parser(error_level=ErrorLevel.RAISE).parse_into(exp.Condition, tokens, source)
    except ParseError as error:
        _parse_error(error)
    except RecursionError:
        limit("the expression is nested too deeply to parse", limit=max_depth)
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
