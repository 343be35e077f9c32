"""Leases: on a database several servers share, which server advances a run.

Every server runs a scheduler. A pass claims the due runs nobody holds (or whose holder's lease ran
out) in one writer transaction: the run's ``lease_owner`` becomes this server, ``lease_until`` the
database's clock plus the lease, and ``lease_epoch`` grows by one when the run changes hands. Only the
holder advances a run, and every step's fence compares the epoch it read (``Runner.fence``,
``store.advance``), so a server whose lease was taken over commits nothing more for that run.

Transactions are fenced whatever the clocks say, since the writer lane orders them. What a lease
protects in time is the one thing outside a transaction: an effect's request. Before sending, the
holder renews the lease in the intent's transaction for the connector's timeout plus the lease
(``hold``), and sends only while that renewal is younger than the lease (``Holding.fresh``): another
server can take the run over only after the request has been answered or timed out, so an effect is
never sent by two servers at once. Times are the database's clock, so servers' clocks do not
matter; a server stalled for longer than the lease between the renewal's check and its send is the
one case left, as with every lease.

On a database one process owns (DuckDB) there is nothing to share: runs carry epoch 0 and no owner.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from runtime.store.engine import Tx
from runtime.workflows.store import RunRow


def server_identity() -> str:
    """This server's name in ``lease_owner``: host, process and a random part (a restarted process
    with a reused pid is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _until(tx: Tx) -> str:
    """The SQL for the database's clock (UTC, as ``wake_at`` is) plus ``?`` seconds."""
    return f"{tx.dialect.utc_now} + {tx.dialect.seconds('?')}"


def free(now: str) -> str:
    """The condition that a run may be claimed by the server bound to its ``?``: nobody holds it,
    this server does, or its holder's lease ran out before ``now`` (SQL)."""
    return f"(lease_owner IS NULL OR lease_owner = ? OR lease_until < {now})"


def claim(tx: Tx, run_ids: Sequence[str], *, owner: str, seconds: float) -> list[str]:
    """Take the leases of those of ``run_ids`` that are free for ``owner``; the ones taken. A run taken
    from another holder (or from none) moves to the next epoch."""
    if not run_ids:
        return []
    rows = tx.fetchall(
        f"UPDATE _buttress.runs SET lease_epoch = CASE WHEN lease_owner = ? THEN lease_epoch "
        f"ELSE coalesce(lease_epoch, 0) + 1 END, lease_owner = ?, lease_until = {_until(tx)} "
        f"WHERE run_id IN (SELECT {tx.dialect.text_list_param()}) AND {free(tx.dialect.utc_now)} RETURNING run_id",
        [owner, owner, seconds, list(run_ids), owner],
    )
    return [str(row[0]) for row in rows]


@dataclass
class Holding:
    """A lease renewed at ``since`` (monotonic) for ``seconds`` beyond the request's timeout."""

    seconds: float
    since: float = field(default_factory=time.monotonic)

    def fresh(self) -> bool:
        """Still young enough to start a request: no other server can take the run before it ends."""
        return time.monotonic() - self.since < self.seconds


def hold(tx: Tx, run: RunRow, *, owner: str, seconds: float, request_s: float) -> Holding | None:
    """Renew ``owner``'s lease of ``run`` (same epoch) for a request of up to ``request_s`` seconds plus
    the lease; None when this server no longer holds it."""
    renewed = tx.fetchone(
        f"UPDATE _buttress.runs SET lease_until = {_until(tx)} "
        "WHERE run_id = ? AND lease_owner = ? AND lease_epoch = ? RETURNING run_id",
        [request_s + seconds, run.run_id, owner, run.lease_epoch],
    )
    return None if renewed is None else Holding(seconds)
