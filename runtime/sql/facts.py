"""What the SQL guard reads and what it reports (pure data): the ``Schema`` it binds names against,
and the frozen facts about one accepted statement (``Analysis``, with its ``Link``s and
``OrderDependence``s). ``runtime.sql.sqlcheck`` builds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Analysis", "Link", "OrderDependence", "Schema"]

Schema = Mapping[str, Sequence[str]]
"""App table or view name -> its column names, all lowercase."""


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
