"""Size rules: a call whose arguments choose how large a value it builds, or how long it works, must be
given bounded literals.

DuckDB builds such values (``repeat``, ``lpad``, ``printf`` widths, ``range`` as a list) and does such
work (matching a regular expression, looking up a time zone by name) outside its memory limit and
without stopping at the deadline, so the guard bounds the arguments before anything runs.
``check_sizes`` applies the rule of one call (``SIZE_BUILDING`` in ``runtime.sql.allowlists``),
whether sqlglot parsed it into a typed function or left it untyped; ``check_lambda`` refuses such
calls inside a lambda or list comprehension, whose body runs once per element; ``bounded_name``
bounds a looked-up name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, NoReturn

from sqlglot import exp

from runtime.sql.allowlists import (
    HINT_AMPLIFY,
    HINT_LAMBDA,
    HINT_NAME,
    HINT_PATTERN,
    MAX_AMPLIFY,
    MAX_ELEMENT,
    MAX_NAME,
    MAX_PATTERN,
    SIZE_BUILDING,
    SizeRule,
)
from runtime.sql.parsing import DUCKDB
from runtime.sql.refusals import forbid


def check_sizes(node: exp.Expr) -> None:
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
    return node.sql(dialect=DUCKDB).split("(", 1)[0].strip().lower()


def _typed_size_building() -> dict[type[exp.Expr], tuple[str, SizeRule]]:
    """The sqlglot classes that size-building functions parse into, found by parsing each of them."""
    typed: dict[type[exp.Expr], tuple[str, SizeRule]] = {}
    for name, rule in SIZE_BUILDING.items():
        arity = 1 + max((*rule.sizes, *rule.copied, *rule.formats, *rule.names, *rule.patterns))
        arguments = ", ".join(f"a{i}" for i in range(arity))
        tree = DUCKDB.parse(f"SELECT {name}({arguments})")[0]
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
            bounded_name(name, argument(position))
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


def check_lambda(node: exp.Expr) -> None:
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
            forbid(
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


def bounded_name(name: str, argument: exp.Expr | None) -> None:
    """A name DuckDB looks up (a time zone) must be a literal of at most ``MAX_NAME`` characters."""
    length = _literal_length(argument) if argument is not None else None
    if length is None or length > MAX_NAME:
        forbid(
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
        forbid(
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
    forbid(
        f"{name}() builds a value whose size its arguments choose: {rule}",
        hint=HINT_AMPLIFY,
        details={"function": name, "max": MAX_AMPLIFY},
    )


_TYPED_SIZE_BUILDING: Final = _typed_size_building()
