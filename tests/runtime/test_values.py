"""The bounded fetch converts and measures rows per column type; it must agree with ``plain`` and
``size`` (the one definition of the JSON encoding) on every type DuckDB returns."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from runtime.errors import ButtressError, Code
from runtime.runtime import Runtime
from runtime.store.values import fetch, plain, size

EVERY_TYPE = """
SELECT * FROM (VALUES
  (1::TINYINT, 2::SMALLINT, 3::INTEGER, 4::BIGINT, 5::HUGEINT, 6::UTINYINT, 7::UBIGINT, true,
   'text', 'a'::ENUM('a', 'b'), '{"k": 1}'::JSON, 1.5::DOUBLE, 'nan'::DOUBLE, 'inf'::FLOAT,
   '-inf'::DOUBLE, 1.25::DECIMAL(6, 2), DATE '2026-01-02', TIMESTAMP '2026-01-02 03:04:05',
   TIME '01:02:03', [1, 2], {'a': 'x'}, 'ab'::BLOB, '4f0c7d2e-8a51-4c1b-9a0e-2b7c3d4e5f60'::UUID, INTERVAL 3 DAY, map([1], ['m'])),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (-1, -2, -3, -4, -5, 0, 0, false, '', 'b', '[]', -0.0, 0.0, 1e30, 2.5, -9.99, DATE '1999-12-31',
   TIMESTAMP '1999-12-31 23:59:59.5', TIME '23:59:59', [], {'a': NULL}, ''::BLOB, NULL,
   INTERVAL 1 SECOND, map([], []))
) AS t
"""


def reference(rows: list[tuple[Any, ...]]) -> tuple[list[list[Any]], list[int]]:
    converted = [[plain(v) for v in row] for row in rows]
    return converted, [size(row) for row in converted]


def test_the_fast_path_agrees_with_plain_and_size_on_every_type() -> None:
    db = duckdb.connect()
    expected, sizes = reference(db.execute(EVERY_TYPE).fetchall())
    rows, truncated = fetch(db.execute(EVERY_TYPE), max_rows=10, max_bytes=1 << 20)
    assert not truncated
    assert rows == expected
    assert rows[0][12:15] == ["NaN", "Infinity", "-Infinity"]
    # the byte limit falls exactly where the reference sizes say
    for cut in range(1, len(sizes) + 1):
        budget = sum(sizes[:cut])
        kept, more = fetch(db.execute(EVERY_TYPE), max_rows=10, max_bytes=budget)
        assert kept == expected[:cut] and more == (cut < len(sizes))
        if cut < len(sizes):
            kept, more = fetch(db.execute(EVERY_TYPE), max_rows=10, max_bytes=budget + sizes[cut] - 1)
            assert kept == expected[:cut] and more


def test_the_first_row_past_the_byte_limit_is_an_error_and_the_row_limit_truncates() -> None:
    db = duckdb.connect()
    with pytest.raises(ButtressError) as caught:
        fetch(db.execute("SELECT repeat('x', 5000)"), max_rows=10, max_bytes=1024)
    assert caught.value.code == Code.LIMIT_RESULT_BYTES
    rows, truncated = fetch(db.execute("SELECT range FROM range(10)"), max_rows=3, max_bytes=1 << 20)
    assert rows == [[0], [1], [2]] and truncated


@pytest.mark.parametrize(
    "values",
    [
        "('1.5'), (NULL), ('-2.25'), ('0.0')",  # finite: the column passes through
        "('1e308'), ('1e308'), ('-1.0')",  # the sum overflows: the careful path, nothing changes
        "('1.0'), ('nan'), (NULL), ('-inf')",  # NaN and an infinity among finite values
    ],
)
def test_float_columns_pass_through_unless_a_value_is_not_finite(values: str) -> None:
    db = duckdb.connect()
    sql = f"SELECT v::DOUBLE AS v, TRY_CAST(v AS FLOAT) AS f, 'x' || v AS t FROM (VALUES {values}) AS t(v)"
    expected, sizes = reference(db.execute(sql).fetchall())
    rows, _ = fetch(db.execute(sql), max_rows=10, max_bytes=1 << 20)
    assert rows == expected
    kept, more = fetch(db.execute(sql), max_rows=10, max_bytes=sum(sizes) - 1)
    assert kept == expected[:-1] and more


def test_a_value_beyond_what_a_result_can_carry_is_a_coded_error(rt: Runtime) -> None:
    try:
        rt.query("select interval 1 day * 2000000000 as x")
    except ButtressError as error:
        assert error.code == "engine.error" and "CAST" in error.hint
    else:
        raise AssertionError("an interval past timedelta's range came back as a value")
