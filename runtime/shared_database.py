"""What a runtime does on a database other servers share (PostgreSQL), mixed into ``Runtime``.

Each writer transaction reads the current version (``_refresh_current``, run at its start); another
server's deploy or rollback reaches this one through the change feed (``_remote_change``) or, for a
name it has not heard of yet, ``catch_up``; agent SQL reads as its own role
(``provision_agent_role``). Every server runs a scheduler; the runs' leases decide which advances
what (``workflows.leases``). On a database this process owns (DuckDB) each of these does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Protocol, cast

from runtime.context import Current
from runtime.errors import ButtressError
from runtime.store import catalog
from runtime.store.engine import Engine, Tx

logger = logging.getLogger(__name__)


class _Host(Protocol):
    """What of ``Runtime`` these methods use."""

    engine: Engine
    _current: Current
    _closing: threading.Event
    agent_role: bool

    def after_version_change(self, version: int) -> None: ...

    def catch_up(self) -> bool: ...


class SharedDatabase:
    """The shared-database side of ``Runtime``."""

    def provision_agent_role(self: _Host) -> None:
        """On a shared database: agent SQL reads as its own role from now on (no system schema,
        SELECT on the application's tables, its own time and memory limits). An owner that may not
        create roles keeps reading agent SQL as itself, behind the SQL guard alone, and says so."""
        from runtime.store.postgres import provision_agent_role

        try:
            provision_agent_role(cast(Any, self.engine))
        except ButtressError as error:
            logger.warning("agent SQL reads as the owner: the agent role could not be set up (%s)", error)
            return
        self.agent_role = True

    def _refresh_current(self: _Host, tx: Tx) -> None:
        """At the start of a writer transaction on a shared database: the version it runs against is
        the one committed, whichever server deployed it."""
        if catalog.current_number(tx) != self._current.number:
            number, spec = catalog.current_version(tx)
            self._current = Current.of(number, spec)

    def _remote_change(self: _Host, payload: str | None) -> None:
        """Another server committed a version (``payload``), or the watch's poll came round (None)."""
        del payload
        with contextlib.suppress(ButtressError):
            self.catch_up()

    def catch_up(self: _Host) -> bool:
        """On a shared database: read the current version and, when another server moved it, take it
        and tell the listeners; True when it moved. A call naming something this server has not heard
        of yet (an action, a table) catches up once before it is refused. Nothing to do on a database
        this process owns."""
        if not self.engine.dialect.shared:
            return False
        with self.engine.snapshot() as reader:
            number = catalog.current_number(reader)
            if number == self._current.number:
                return False
            number, spec = catalog.current_version(reader)
        if number == self._current.number:
            return False
        self._current = Current.of(number, spec)
        self.after_version_change(number)
        return True
