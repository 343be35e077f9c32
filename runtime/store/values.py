"""Database values as JSON: one conversion for query results, action results and dry-run samples."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import duckdb


def plain(value: Any) -> Any:
    """A database value as JSON: numbers and strings as they are, the rest as ISO or plain text.

    >>> plain(decimal.Decimal("1.50")), plain(datetime.date(2026, 1, 2))
    ('1.50', '2026-01-02')
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def records(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The remaining rows of an executed statement as column-named, JSON-ready dicts."""
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, (plain(v) for v in row), strict=True)) for row in result.fetchall()]
