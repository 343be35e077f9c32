"""The guard's size rules, position by position, for every size-building function.

The function census (``test_function_census.py``) proves that nothing the guard allows escapes the
limits; these tests pin what each rule accepts and refuses, so that a rule naming the wrong argument
(sqlglot reorders some typed functions' arguments) fails here by name.
"""

from __future__ import annotations

import pytest

from runtime.errors import ButtressError, Code
from runtime.sql.allowlists import MAX_AMPLIFY, MAX_ELEMENT, MAX_NAME, MAX_PATTERN, SIZE_BUILDING, SizeRule
from runtime.sql.sqlcheck import analyze_expression, analyze_query

SCHEMA = {"t": ["a", "b", "ts", "l"]}

CONFORMING = {
    "sizes": "2",
    "copied": "'x'",
    "formats": "'%s'",
    "names": "'UTC'",
    "patterns": "'^[a-z]+$'",
}
"""An argument each kind of rule accepts; every other argument is the column ``a``."""

QUIRKS = {("time_bucket", "names"): "INTERVAL 1 HOUR"}
"""sqlglot reads time_bucket's third argument as a bare word, so a quoted time zone there cannot be
told from a column: the guard refuses both, and an interval (an offset) is what it accepts."""


def kinds(rule: SizeRule) -> dict[int, str]:
    return {
        position: kind
        for kind in ("sizes", "copied", "formats", "names", "patterns")
        for position in getattr(rule, kind)
    }


def call(name: str, rule: SizeRule, replace: dict[int, str] | None = None) -> str:
    positions = kinds(rule)
    arguments = [
        QUIRKS.get((name, positions[i]), CONFORMING[positions[i]]) if i in positions else "a"
        for i in range(1 + max(positions))
    ]
    for position, value in (replace or {}).items():
        arguments[position] = value
    return f"SELECT {name}({', '.join(arguments)}) FROM t"


def refusal(sql: str) -> ButtressError:
    with pytest.raises(ButtressError) as caught:
        analyze_query(sql, SCHEMA)
    assert caught.value.code == Code.SQL_FORBIDDEN, caught.value.to_dict()
    return caught.value


@pytest.mark.parametrize("name", sorted(SIZE_BUILDING))
def test_a_call_that_writes_every_ruled_argument_as_its_rule_asks_is_allowed(name: str) -> None:
    analyze_query(call(name, SIZE_BUILDING[name]), SCHEMA)


@pytest.mark.parametrize(
    ("name", "position"),
    sorted((name, position) for name, rule in SIZE_BUILDING.items() for position in kinds(rule)),
)
def test_a_column_in_a_ruled_position_is_refused_naming_the_function(name: str, position: int) -> None:
    error = refusal(call(name, SIZE_BUILDING[name], {position: "b"}))
    # an alias is named as DuckDB spells the function sqlglot parsed it into (str_split_regex: string_split_regex)
    assert SIZE_BUILDING[str(error.details["function"])] == SIZE_BUILDING[name] and error.hint


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT repeat('x', {MAX_AMPLIFY + 1})",
        f"SELECT repeat('xy', {MAX_AMPLIFY // 2 + 1})",
        f"SELECT lpad(a, {MAX_AMPLIFY + 1}, ' ') FROM t",
        f"SELECT list_resize([1], {MAX_AMPLIFY}, 'ab')",
        f"SELECT printf('%{MAX_AMPLIFY + 1}s', a) FROM t",
        "SELECT printf('%*s', 5, a) FROM t",
        f"SELECT timezone('{'x' * (MAX_NAME + 1)}', ts) FROM t",
        f"SELECT regexp_matches(a, '{'x' * (MAX_PATTERN + 1)}') FROM t",
        "SELECT regexp_matches(a, '(x{50}){3}') FROM t",
        "SELECT list_transform(l, lambda x: repeat('x', 2)) FROM t",
        "SELECT list_transform(l, lambda x: range(2)) FROM t",
        f"SELECT list_transform(l, lambda x: printf('%{MAX_ELEMENT + 1}d', x)) FROM t",
        "SELECT [lpad('x', 3, ' ') FOR x IN l] FROM t",
        "SELECT damerau_levenshtein(a, 'x') FROM t",
    ],
)
def test_sizes_past_their_bounds_are_refused(sql: str) -> None:
    refusal(sql)


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT repeat('-', {MAX_AMPLIFY})",
        "SELECT lpad(a, 10, ' '), rpad(a, 10, b) FROM t",
        "SELECT printf('%08.2f', 1.5), format('{:>10}', a) FROM t",
        "SELECT replace(a, ' ', '_'), concat_ws(', ', a, b) FROM t",
        "SELECT regexp_replace(a, '[0-9]+', '#', 'g'), a ~ '^x', a SIMILAR TO 'x%' FROM t",
        "SELECT regexp_extract(a, '([a-z]+)@([a-z]+)', 1) FROM t",
        f"SELECT regexp_matches(a, '{'x' * MAX_PATTERN}') FROM t",
        "SELECT timezone('Europe/Paris', ts), ts AT TIME ZONE 'UTC' FROM t",
        "SELECT time_bucket(INTERVAL 1 DAY, ts), time_bucket(INTERVAL 1 DAY, ts, INTERVAL 1 HOUR) FROM t",
        "SELECT list_transform(l, lambda x: printf('%.2f', x)), list_filter(l, lambda x: x ~ '^a') FROM t",
        "SELECT list_transform(l, lambda x: replace(x, 'a', 'bb')) FROM t",
        "SELECT levenshtein(a, b) FROM t",
    ],
)
def test_bounded_uses_of_size_building_functions_are_allowed(sql: str) -> None:
    analyze_query(sql, SCHEMA)


def test_a_column_check_is_held_to_the_same_rules() -> None:
    analyze_expression("regexp_matches(a, '^[a-z]+$')", ["a", "b"], context="t.a")
    with pytest.raises(ButtressError) as caught:
        analyze_expression("regexp_matches(a, b)", ["a", "b"], context="t.a")
    assert caught.value.code == Code.SQL_FORBIDDEN and caught.value.details["function"] == "regexp_matches"
