"""The one walk over a parsed statement: what it is made of, every part of it allowed.

``statement_kind`` accepts the top node (a SELECT, or a write where writes are allowed);
``inventory`` walks every node once, no deeper than ``max_depth``, refusing any node not on the
allow-list, non-ASCII identifiers, functions refused by class or name, and sources that are not
tables, subqueries, VALUES or allowed table functions, and applies the size rules
(``runtime.sql.sizes``); it collects the table references, which ``runtime.sql.tables`` binds,
and the placeholders, which ``named_params`` checks against the tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from runtime.errors import Code, SqlError
from runtime.sql.allowlists import (
    ANONYMOUS_FUNCTIONS,
    COSTLY_FUNCTIONS,
    DENIED_FUNCTION_CLASSES,
    DENIED_FUNCTION_NAMES,
    HINT_ASCII,
    HINT_CONSTRUCT,
    HINT_FUNCTION,
    HINT_PARAMS,
    HINT_READ_ONLY,
    HINT_SYSTEM,
    HINT_WRITES,
    PARAM_NAME,
    STATEMENT_CLASSES,
    TABLE_FUNCTIONS,
    WRITE_STATEMENTS,
    Kind,
)
from runtime.sql.refusals import forbid, limit
from runtime.sql.sizes import bounded_name, check_lambda, check_sizes


def statement_kind(tree: exp.Expr, *, writable: bool) -> Kind:
    """The statement's kind from its top node; a write only where writes are allowed."""
    kind = STATEMENT_CLASSES.get(type(tree))
    if kind is None:
        if isinstance(tree, exp.Command):
            forbid(f"unsupported statement {str(tree.this).upper()!r}", hint=HINT_WRITES)
        forbid(f"{tree.key.upper()} is not a statement this call runs", hint=HINT_WRITES)
    if kind != "select" and not writable:
        forbid(f"{kind.upper()} is not allowed here", hint=HINT_READ_ONLY)
    return kind


def walk(tree: exp.Expr, max_depth: int) -> Iterator[exp.Expr]:
    """Every node, depth first in source order; refuses trees deeper than ``max_depth``."""
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            limit(f"the expression tree is deeper than {max_depth} levels", limit=max_depth)
        yield node
        for child in node.iter_expressions(reverse=True):
            stack.append((child, depth + 1))


@dataclass(frozen=True)
class Inventory:
    """What the walk collected: the table references and placeholders, and whether there is a WITH."""

    tables: tuple[exp.Table, ...]
    placeholders: tuple[exp.Placeholder, ...]
    has_ctes: bool


def inventory(tree: exp.Expr, allowed: frozenset[type[exp.Expr]], max_depth: int) -> Inventory:
    """Walk every node once: refuse what is too deep or not allowed, collect tables and placeholders."""
    tables: list[exp.Table] = []
    placeholders: list[exp.Placeholder] = []
    has_ctes = False
    for node in walk(tree, max_depth):
        kind = type(node)
        if kind not in allowed:
            if not isinstance(node, exp.Func):
                _forbid_node(node)
            _check_function(node)
        elif kind is exp.Identifier or kind is exp.Var:
            check_ascii(node.name)
        elif isinstance(node, exp.Table):
            tables.append(node)
        elif isinstance(node, exp.Placeholder):
            placeholders.append(node)
        elif kind is exp.CTE:
            has_ctes = True
        elif kind is exp.Lambda or kind is exp.Comprehension:
            check_lambda(node)
        elif kind is exp.AtTimeZone:
            bounded_name("AT TIME ZONE", node.args.get("zone"))
        elif kind is exp.SimilarTo:
            check_sizes(node)
        elif kind is exp.From or kind is exp.Join or kind is exp.Lateral:
            _check_source(node.this)
        elif kind in WRITE_STATEMENTS and node is not tree:
            forbid(f"{node.key.upper()} is only allowed as the whole statement", hint=HINT_WRITES)
        elif kind is exp.Update and not node.expressions:
            forbid("UPDATE without SET is not allowed", hint=HINT_WRITES)
        elif kind is exp.Returning and node.args.get("into"):
            forbid("RETURNING ... INTO is not allowed", hint=HINT_CONSTRUCT)
    return Inventory(tuple(tables), tuple(placeholders), has_ctes)


def _check_source(source: exp.Expr) -> None:
    """What may follow FROM, JOIN or LATERAL: tables, subqueries, VALUES and the allowed table functions."""
    if isinstance(source, (exp.Table, exp.Subquery, exp.Values, exp.Lateral, *TABLE_FUNCTIONS)):
        return
    forbid_table_function(source)


def forbid_table_function(function: exp.Expr) -> NoReturn:
    """Refuse a function used as a table source, named as the agent wrote it."""
    name = function.sql_name().lower() if isinstance(function, exp.Func) else function.key
    if isinstance(function, exp.Anonymous):
        name = function.name.lower()
    forbid(f"table function {name}() is not allowed", hint=HINT_SYSTEM, details={"function": name})


def _forbid_node(node: exp.Expr) -> NoReturn:
    if isinstance(node, exp.Command):
        forbid(f"unsupported statement {str(node.this).upper()!r}", hint=HINT_WRITES)
    if isinstance(node, (exp.Insert, exp.Update, exp.Delete)):
        forbid(f"{node.key.upper()} is not allowed here", hint=HINT_READ_ONLY)
    forbid(f"unsupported SQL construct: {node.key}", hint=HINT_CONSTRUCT, details={"construct": node.key})


def check_ascii(name: str) -> None:
    """Refuse an identifier that is not plain ASCII."""
    if not name.isascii():
        forbid(f"identifier {name!r} is not ASCII", hint=HINT_ASCII, details={"identifier": name})


def _check_function(node: exp.Func) -> None:
    if isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc)):
        name = node.name.lower()
        check_ascii(name)
        if name in COSTLY_FUNCTIONS:
            forbid(
                f"function {name}() is not allowed: {COSTLY_FUNCTIONS[name]}",
                hint=HINT_FUNCTION,
                details={"function": name},
            )
        if not _function_name_allowed(name):
            forbid(f"function {name}() is not allowed", hint=HINT_FUNCTION, details={"function": name})
        check_sizes(node)
        return
    if type(node) in DENIED_FUNCTION_CLASSES:
        name = node.sql_name().lower()
        forbid(f"function {name}() is not allowed", hint=HINT_FUNCTION, details={"function": name})
    check_sizes(node)


def _function_name_allowed(name: str) -> bool:
    """An untyped function is allowed if curated, or if it names a typed function that is allowed
    (DuckDB's method-call syntax ``x.lower()`` leaves even well-known names untyped)."""
    if DENIED_FUNCTION_NAMES.match(name):
        return False
    if name in ANONYMOUS_FUNCTIONS:
        return True
    typed = exp.FUNCTION_BY_NAME.get(name.upper())
    return typed is not None and typed not in DENIED_FUNCTION_CLASSES


def named_params(placeholders: Sequence[exp.Placeholder], tokens: Sequence[Token]) -> tuple[str, ...]:
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
