"""How the SQL guard says no: ``forbid`` (``sql.forbidden``) and ``limit`` (``limit.exceeded``).

Every step of the guard refuses through these two, or raises its own ``SqlError`` with a more
specific code (``sql.parse``, ``sql.param``, ``sql.unknown_table``, ``sql.unknown_column``).
"""

from __future__ import annotations

from typing import NoReturn

from runtime.errors import Code, PolicyError, SqlError
from runtime.sql.allowlists import HINT_LIMIT


def forbid(message: str, *, hint: str | None = None, details: dict[str, object] | None = None) -> NoReturn:
    """Refuse with ``sql.forbidden``."""
    raise SqlError(Code.SQL_FORBIDDEN, message, hint=hint, details=dict(details or {}))


def limit(message: str, *, limit: int) -> NoReturn:
    """Refuse with ``limit.exceeded``; ``limit`` is the bound exceeded, reported in details."""
    raise PolicyError(Code.LIMIT_EXCEEDED, message, hint=HINT_LIMIT, details={"limit": limit})
