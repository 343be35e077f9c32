"""The closed set of logical field types and their DuckDB spelling — the one place they are mapped.

>>> duckdb_type("decimal(12,2)")
'DECIMAL(12,2)'
>>> parse_type("Decimal( 12 , 2 )")
'decimal(12,2)'
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Callable
from typing import Any, Final

SIMPLE_TYPES: Final[dict[str, str]] = {
    "text": "VARCHAR",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
    "uuid": "UUID",
    "json": "JSON",
}

_DECIMAL = re.compile(r"\Adecimal\(\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\)\Z")

TYPE_NAMES: Final[tuple[str, ...]] = (*SIMPLE_TYPES, "decimal(p,s)")

# Casts that never lose information: the old value can always be recovered from the new one.
_WIDENINGS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("integer", "bigint"),
        ("integer", "double"),
        ("date", "timestamp"),
        ("date", "timestamptz"),
        ("timestamp", "timestamptz"),
    }
)


def parse_type(raw: str) -> str:
    """Normalise a logical type name, or raise ValueError naming the allowed types."""
    text = raw.strip().lower()
    if text in SIMPLE_TYPES:
        return text
    match = _DECIMAL.fullmatch(text)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(
                f"decimal({precision},{scale}) needs 1 <= precision <= 38 and scale <= precision"
            )
        return f"decimal({precision},{scale})"
    raise ValueError(f"unknown type {raw!r}; use one of: {', '.join(TYPE_NAMES)}")


def duckdb_type(logical: str) -> str:
    """The DuckDB column type for a normalised logical type."""
    if logical in SIMPLE_TYPES:
        return SIMPLE_TYPES[logical]
    match = _DECIMAL.fullmatch(logical)
    if match is None:
        raise ValueError(f"not a logical type: {logical!r}")
    return f"DECIMAL({match.group(1)},{match.group(2)})"


def is_widening(old: str, new: str) -> bool:
    """True when every value of ``old`` converts to ``new`` and back unchanged."""
    if old == new or new == "text" or (old, new) in _WIDENINGS:
        return True
    old_dec, new_dec = _DECIMAL.fullmatch(old), _DECIMAL.fullmatch(new)
    if old_dec and new_dec:
        op, os_ = int(old_dec.group(1)), int(old_dec.group(2))
        np_, ns = int(new_dec.group(1)), int(new_dec.group(2))
        return ns >= os_ and (np_ - ns) >= (op - os_)
    if old == "integer" and new_dec:
        return int(new_dec.group(1)) - int(new_dec.group(2)) >= 10
    if old == "bigint" and new_dec:
        return int(new_dec.group(1)) - int(new_dec.group(2)) >= 19
    return False


def python_type(logical: str) -> type:
    """The Python type used to validate an argument of this logical type."""
    import datetime
    import decimal
    import uuid

    if logical.startswith("decimal"):
        return decimal.Decimal
    return {
        "text": str,
        "integer": int,
        "bigint": int,
        "double": float,
        "boolean": bool,
        "date": datetime.date,
        "timestamp": datetime.datetime,
        "timestamptz": datetime.datetime,
        "uuid": uuid.UUID,
        "json": object,
    }[logical]


def constant_fits(value: Any, logical: str) -> bool:
    """A JSON constant (a default, a step's argument) is a valid value of ``logical``.

    >>> constant_fits(3, "bigint"), constant_fits("3", "integer"), constant_fits("2025-01-31", "date")
    (True, False, True)
    """
    if logical == "json":
        return True
    if logical == "text":
        return isinstance(value, str)
    if logical in {"integer", "bigint"}:
        limit = 2**31 if logical == "integer" else 2**63
        return isinstance(value, int) and not isinstance(value, bool) and -limit <= value < limit
    if logical == "double":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if logical == "boolean":
        return isinstance(value, bool)
    if logical.startswith("decimal"):
        return _parses(value, lambda v: decimal.Decimal(str(v)), (int, float, str))
    if logical == "date":
        return _parses(value, datetime.date.fromisoformat, (str,))
    if logical in {"timestamp", "timestamptz"}:
        return _parses(value, datetime.datetime.fromisoformat, (str,))
    if logical == "uuid":
        return _parses(value, uuid.UUID, (str,))
    return False


def _parses(value: Any, parse: Callable[[Any], object], kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    try:
        parse(value)
    except (ValueError, ArithmeticError):
        return False
    return True
