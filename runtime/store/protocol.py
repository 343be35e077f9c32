"""What the runtime asks of a database engine: one protocol, two implementations.

``runtime.store.engine.Engine`` (DuckDB, one process owns the file) and
``runtime.store.postgres.PgEngine`` (PostgreSQL, several servers share the database) both answer it;
mypy checks that they do (``_conforms`` below). The sessions they hand out are ``Tx`` and ``Reader``
(``runtime.store.sessions``), whose ``dialect`` spells what differs between the engines.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeVar

from runtime.sql.dialect import Dialect
from runtime.store.sessions import Reader, Tx

T = TypeVar("T")


class Database(Protocol):
    """An engine: the writer lane, snapshot readers, the memory rule, and its dialect."""

    @property
    def dialect(self) -> Dialect: ...

    def transaction(
        self, *, timeout: float | None = None, wait: float | None = None
    ) -> AbstractContextManager[Tx]:
        """The writer lane: one writer transaction at a time; COMMIT only if every statement succeeded."""
        ...

    def snapshot(
        self, *, timeout: float | None = None, single: bool = False
    ) -> AbstractContextManager[Reader]:
        """A read-only snapshot, concurrent with the writer."""
        ...

    def in_transaction(self) -> bool: ...

    def sharing_memory(self, work: Callable[[], T], *, budget: float | None) -> T: ...

    def close(self) -> None: ...


if TYPE_CHECKING:
    from runtime.store.engine import Engine
    from runtime.store.postgres import PgEngine

    def _conforms(duckdb: Engine, postgres: PgEngine) -> tuple[Database, Database]:
        return duckdb, postgres
