"""Database values as JSON: one conversion for query results, action results and dry-run samples,
and the bounded fetch that stops at a row limit, a byte limit and a deadline.

The encoding, which the tools document: numbers and strings as they are; decimals, UUIDs and
anything else exact as text; dates and times in ISO 8601; NaN and the infinities as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (JSON has no literal for them, and ``null`` means NULL).
"""

from __future__ import annotations

import datetime
import decimal
import math
import time
import uuid
from functools import partial
from operator import is_not, itemgetter
from typing import Any, Final

from runtime.errors import Code, EngineError
from runtime.store.sessions import Rows

CHUNK: Final = 256


def plain(value: Any) -> Any:
    """A database value as JSON: numbers and strings as they are, the rest as ISO or plain text.

    A decimal keeps its digits as text (``1.50``), except one without fractional digits, which is a
    number, as an integer is: a ``decimal(p, 0)`` value, a rounded decimal, and PostgreSQL's ``numeric``
    sums and averages of integers answer as DuckDB's HUGEINT and BIGINT do.

    >>> plain(decimal.Decimal("1.50")), plain(decimal.Decimal("128")), plain(datetime.date(2026, 1, 2))
    ('1.50', 128, '2026-01-02')
    >>> plain(float("-inf"))
    '-Infinity'
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, decimal.Decimal) and value.is_finite() and value.as_tuple().exponent == 0:
        return int(value)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def size(value: Any) -> int:
    """About how many bytes ``value`` (already ``plain``) takes as JSON."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, list):
        return 2 + sum(size(v) + 1 for v in value)
    if isinstance(value, dict):
        return 2 + sum(len(k) + 4 + size(v) for k, v in value.items())
    return 8


def records(result: Rows) -> list[dict[str, Any]]:
    """The remaining rows of an executed statement as column-named, JSON-ready dicts."""
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, (plain(v) for v in row), strict=True)) for row in result.fetchall()]


_IDENTITY: Final = frozenset(
    {"boolean", "tinyint", "smallint", "integer", "bigint", "hugeint"}
    | {"utinyint", "usmallint", "uinteger", "ubigint", "uhugeint"}
)
"""Column types whose Python values are already JSON (ints and booleans)."""
_TEXT: Final = frozenset({"varchar", "enum"})


_present = partial(is_not, None)


class _Shape:
    """How to convert and measure the rows of one result, decided once from its column types:
    ints, booleans and text pass through; floats are only looked at for NaN and infinities; the
    rest go through ``plain``. The size of a row equals ``size([plain(v) for v in row])``."""

    def __init__(self, description: Any) -> None:
        kinds = [getattr(d[1], "id", None) for d in description or []]
        self.text = [i for i, k in enumerate(kinds) if k in _TEXT]
        self.floats = [i for i, k in enumerate(kinds) if k in ("float", "double")]
        self.other = [
            i
            for i, k in enumerate(kinds)
            if k not in _IDENTITY and k not in _TEXT and k not in ("float", "double")
        ]
        self.base = 2 + 9 * len(kinds)  # every value as 8 bytes plus a separator, then corrected
        self.passes = not self.text and not self.floats and not self.other

    def rows(self, chunk: list[tuple[Any, ...]]) -> tuple[list[list[Any]], int]:
        """The chunk's rows converted, and their total size; column by column, in C where it can."""
        rows = list(map(list, chunk))
        total = self.base * len(rows)
        if self.passes:
            return rows, total
        for i in self.text:
            present = list(filter(_present, map(itemgetter(i), chunk)))
            total += sum(map(len, present)) - 6 * len(present)
        for i in self.floats:
            # a finite sum means every value is finite (NaN and infinities propagate; an overflow
            # only sends the chunk down the careful path)
            if math.isfinite(sum(filter(None, map(itemgetter(i), chunk)))):
                continue
            for row in rows:
                value = row[i]
                if value is not None and value - value != 0:  # NaN or an infinity
                    row[i] = value = plain(value)
                    total += len(value) - 6
        for i in self.other:
            for row in rows:
                value = row[i] = plain(row[i])
                total += size(value) - 8
        return rows, total


def fetch(
    result: Rows,
    *,
    max_rows: int,
    max_bytes: int,
    deadline: float | None = None,
) -> tuple[list[list[Any]], bool]:
    """Up to ``max_rows`` converted rows of an executed statement, and whether more were left.

    Rows are fetched and converted a chunk at a time: the byte limit stops the result once the
    converted rows pass ``max_bytes`` (``limit.result_bytes`` when even the first row is larger),
    and the deadline is checked between chunks, so the time limit holds while results are produced
    and converted, not only while DuckDB executes.
    """
    rows: list[list[Any]] = []
    used = 0
    shape = _Shape(result.description)
    while len(rows) <= max_rows:
        if deadline is not None and time.monotonic() > deadline:
            raise EngineError(
                Code.QUERY_TIMEOUT,
                "the results took longer than the time limit to produce; nothing more is returned",
                hint="Narrow the query (filters, LIMIT, fewer columns) or ask the operator for a longer limit.",
            )
        try:
            chunk = result.fetchmany(min(CHUNK, max_rows + 1 - len(rows)))
        except OverflowError:
            raise unrepresentable("overflow converting a value") from None
        if not chunk:
            return rows, False
        converted, total = shape.rows(chunk)
        if used + total <= max_bytes and len(rows) + len(converted) <= max_rows:
            rows.extend(converted)  # the whole chunk fits: no row-by-row bookkeeping
            used += total
            continue
        for row in converted:
            used += size(row)
            if used > max_bytes:
                if not rows:
                    raise EngineError(
                        Code.LIMIT_RESULT_BYTES,
                        f"the first row alone is larger than the result limit of {max_bytes} bytes",
                        hint="Select fewer or shorter columns (e.g. left(text, 200)), or ask the operator to "
                        "raise max_result_bytes.",
                        details={"max_result_bytes": max_bytes},
                    )
                return rows, True
            rows.append(row)
            if len(rows) > max_rows:
                rows.pop()
                return rows, True
    return rows, True


def unrepresentable(reason: str) -> EngineError:
    """A value the engine computed that no result can carry (an interval or a time beyond Python's
    range), whichever engine's client met it."""
    return EngineError(
        Code.ENGINE_ERROR,
        "a value in the result is outside what a result can carry (an interval or a time beyond "
        "the representable range)",
        hint="Cast the column to text in the query (e.g. CAST(x AS VARCHAR)), or narrow the value.",
        details={"reason": reason},
    )
