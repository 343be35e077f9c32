"""The hash-chained audit log: append, defer, anchor and verify. The ``Auditor`` writing it is here;
what a row and its hash are, the capping of arguments, the anchor file and the chain's verification
are ``runtime.store.auditchain``'s (importable from here).

Each row's hash covers its own fields and the previous row's hash, so an edited, inserted or
reordered row breaks the chain at that point. A row deleted from the *end* leaves a shorter chain
that still verifies; the **anchor** catches that: a small file beside the database
(``.buttress/<database>.audit-anchor.json``) holding the newest sequence number and hash the
runtime committed, signed with the operator secret. ``verify`` requires the row at the anchored
sequence to exist with the anchored hash, and reports the missing range otherwise. The anchor is
checked when the runtime opens; while it disagrees with the database it is not moved, so the
evidence stays until the operator re-anchors (``buttress audit reanchor``).

Rows are appended in three ways:

* ``Auditor.append(tx, ...)`` inside the caller's transaction: the row commits with the effect;
* ``Auditor.defer(...)`` for reads and refusals, which change nothing: rows are group-committed
  by a background thread within ``DEFER_DELAY`` seconds (and before any audit read, and on close),
  so a refused call never waits for a busy writer lane;
* the chain follows the order calls were decided: rows are only ever taken from the deferred queue
  inside the writer lane, and a change appending in its transaction first writes the rows deferred
  before it (one INSERT for all of them and its own), so a refusal decided before a change has the
  lower sequence number. If that transaction does not commit, the rows it took go back to the front
  of the queue for whoever holds the lane next;
* either way, arguments are capped (``cap``): a refused call with megabytes of arguments stores a
  preview, the size and a sha256, never the megabytes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final

from runtime.errors import ButtressError
from runtime.schema.spec import canonical_json
from runtime.store.auditchain import (
    COLUMNS,
    GENESIS,
    Anchor,
    AnchorFile,
    AnchorRow,
    anchor_path,
    cap,
    now_iso,
    recent,
    row_hash,
    verify,
)
from runtime.store.engine import Engine, Session, Tx

logger = logging.getLogger(__name__)


DEFER_DELAY: Final = 0.05
ANCHOR_DELAY: Final = 0.05


@dataclass
class _Deferred:
    time: str
    actor: str
    operation: str
    arguments: dict[str, Any]
    outcome: str
    error_code: str | None
    version: int | None
    proposal_id: str | None


class Auditor:
    """Appends rows on the writer lane, group-commits deferred rows, and keeps the anchor current.

    The chain head is remembered only once a commit succeeds.
    """

    def __init__(
        self, engine: Engine, *, anchor: AnchorFile | AnchorRow | None = None, lane_wait: float = 10.0
    ) -> None:
        self._engine = engine
        self._anchor = anchor
        self._lane_wait = lane_wait
        self._head: tuple[int, str] | None = None
        self._deferred: list[_Deferred] = []
        self._claim: tuple[Tx, list[_Deferred]] | None = None
        """Deferred rows a transaction in the lane took and wrote; gone once it commits."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._anchored: tuple[int, str] | None = None  # the head the anchor file holds
        self._anchoring = anchor is not None
        self._anchor_lock = threading.Lock()
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for work: only then does a commit need to wake it
        self._closed = False
        self.problem: str | None = None
        """Why the anchor disagrees with the database (set at open); the anchor is then left as is."""

    @property
    def anchor(self) -> AnchorFile | AnchorRow | None:
        return self._anchor

    # appending ----------------------------------------------------------------------------

    def _load_head(self, tx: Tx) -> tuple[int, str]:
        if self._head is None or tx.dialect.shared:  # another server may have appended since
            row = tx.fetchone("SELECT seq, hash FROM _buttress.audit ORDER BY seq DESC LIMIT 1")
            self._head = (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
        return self._head

    def append(
        self,
        tx: Tx,
        *,
        actor: str,
        operation: str,
        arguments: dict[str, Any],
        outcome: str,
        error_code: str | None = None,
        version_before: int | None = None,
        version_after: int | None = None,
        proposal_id: str | None = None,
        time: str | None = None,
    ) -> int:
        """Append one row in ``tx``, after the rows deferred before it; they commit (or not) with the
        caller's effect."""
        row = {
            "time": time or now_iso(),
            "actor": actor,
            "operation": operation,
            "arguments": arguments,
            "outcome": outcome,
            "error_code": error_code,
            "version_before": version_before,
            "version_after": version_after,
            "proposal_id": proposal_id,
        }
        return self._insert(tx, [*self._take(tx), row])

    def append_many(self, tx: Tx, rows: list[dict[str, Any]]) -> None:
        """Append many rows in ``tx`` (a batch of woken timers), after the rows deferred before them;
        each row is chained to the one before it exactly as ``append`` would chain it."""
        if rows:
            self._insert(tx, [*self._take(tx), *rows])

    def _insert(self, tx: Tx, rows: list[dict[str, Any]]) -> int:
        """Chain ``rows`` onto the head and insert them, one statement per 200 rows; returns the last
        sequence number. An INSERT costs about the same for one row as for many."""
        seq, prev = tx.memo.get("audit_head") or self._load_head(tx)
        values: list[Any] = []
        for item in rows:
            seq += 1
            fields: dict[str, Any] = {
                "seq": seq,
                "time": item.get("time") or now_iso(),
                "actor": item["actor"],
                "operation": item["operation"],
                "arguments": cap(item["arguments"]),
                "outcome": item["outcome"],
                "error_code": item.get("error_code"),
                "version_before": item.get("version_before"),
                "version_after": item.get("version_after"),
                "proposal_id": item.get("proposal_id"),
                "prev_hash": prev,
            }
            fields["hash"] = row_hash(fields)
            prev = fields["hash"]
            values.append(
                [
                    fields["seq"],
                    fields["time"],
                    fields["actor"],
                    fields["operation"],
                    canonical_json(fields["arguments"]),
                    fields["outcome"],
                    fields["error_code"],
                    fields["version_before"],
                    fields["version_after"],
                    fields["proposal_id"],
                    fields["prev_hash"],
                    fields["hash"],
                ]
            )
        placeholder = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        for start in range(0, len(values), 200):
            chunk = values[start : start + 200]
            tx.execute(
                f"INSERT INTO _buttress.audit ({COLUMNS}) VALUES {', '.join([placeholder] * len(chunk))}",
                [v for row in chunk for v in row],
            )
        head = (seq, prev)
        tx.memo["audit_head"] = head
        tx.on_commit(lambda: self._advance(head), in_lane=True)
        return seq

    def _take(self, tx: Tx) -> list[dict[str, Any]]:
        """The rows deferred so far, taken from the queue by ``tx`` (which holds the writer lane).

        Rows taken by an earlier transaction that did not commit (its claim is still there: a commit
        clears it before the lane is released) go back first, in their order.
        """
        with self._lock:
            if self._claim is not None and self._claim[0] is not tx:
                self._deferred[:0] = self._claim[1]
                self._claim = None
            taken, self._deferred = self._deferred, []
            if not taken:
                return []
            if self._claim is None:
                self._claim = (tx, taken)
                tx.on_commit(lambda: self._release(tx), in_lane=True)
            else:
                self._claim[1].extend(taken)
        return [
            {
                "time": item.time,
                "actor": item.actor,
                "operation": item.operation,
                "arguments": item.arguments,
                "outcome": item.outcome,
                "error_code": item.error_code,
                "version_before": item.version,
                "version_after": item.version,
                "proposal_id": item.proposal_id,
            }
            for item in taken
        ]

    def _release(self, tx: Tx) -> None:
        with self._lock:
            if self._claim is not None and self._claim[0] is tx:
                self._claim = None

    def _advance(self, head: tuple[int, str]) -> None:
        if self._head is None or head[0] > self._head[0]:
            self._head = head
        if self._anchoring:
            self._start()
            self._nudge()

    def _nudge(self) -> None:
        """Wake the thread if it is idle; while it gathers a batch, new work waits for that batch
        (waking it per commit costs every caller a GIL hand-off)."""
        with self._lock:
            if self._idle:
                self._idle = False
                self._wake.notify()

    def forget(self) -> None:
        """Drop the cached head (after an external change, e.g. in tests)."""
        self._head = None

    # deferring ----------------------------------------------------------------------------

    def defer(
        self,
        *,
        actor: str,
        operation: str,
        arguments: dict[str, Any],
        outcome: str,
        error_code: str | None = None,
        version: int | None = None,
        proposal_id: str | None = None,
    ) -> None:
        """Queue a row for a call that changed nothing (a read or a refusal); it commits shortly."""
        item = _Deferred(
            now_iso(), actor, operation, cap(arguments), outcome, error_code, version, proposal_id
        )
        self._start()
        with self._lock:
            self._deferred.append(item)
        self._nudge()

    def flush(self, *, wait: float | None = None) -> None:
        """Write the queued rows now, in one writer transaction (waiting at most ``wait`` for the lane).

        Returns once every row queued before the call has committed, also those another transaction
        was writing at the time (it waits for the lane, and takes back what did not commit).
        """
        with self._flushing:
            with self._lock:
                if not self._deferred and self._claim is None:
                    return
            with self._engine.transaction(wait=wait) as tx:
                rows = self._take(tx)
                if rows:
                    self._insert(tx, rows)

    # the background thread ------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._run, name="buttress-audit", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while (
                    not self._closed and not self._deferred and self._claim is None and not self._anchor_due()
                ):
                    self._idle = True
                    self._wake.wait()
                self._idle = False
                if self._closed:
                    return
            self._wake_after(DEFER_DELAY)
            try:
                self.flush(wait=self._lane_wait)
            except ButtressError:
                logger.debug("deferred audit rows wait for the writer lane", exc_info=True)
            except Exception:
                logger.exception("deferred audit rows could not be written")
            self._write_anchor()

    def _wake_after(self, delay: float) -> None:
        """Gather a batch for ``delay`` seconds (cut short only by ``close``)."""
        deadline = monotonic() + delay
        with self._lock:
            while not self._closed and (left := deadline - monotonic()) > 0:
                self._wake.wait(left)

    def _anchor_due(self) -> bool:
        return self._anchoring and self._head is not None and self._head != self._anchored

    # the anchor -----------------------------------------------------------------------------

    def check_anchor(self, reader: Session) -> None:
        """At open: compare the anchor with the database. On agreement the anchor follows the chain
        from now on; otherwise ``problem`` says why and the anchor is left untouched."""
        if self._anchor is None:
            return
        anchored = reader.scalar("SELECT value FROM _buttress.meta WHERE key = 'audit_anchored'") == "yes"
        result = verify(reader, self._anchor if anchored else None)
        if result.ok:
            row = reader.fetchone("SELECT seq, hash FROM _buttress.audit ORDER BY seq DESC LIMIT 1")
            self._head = (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
            self._anchoring = True
            self._write_anchor()
            if not anchored:
                with contextlib.suppress(ButtressError), self._engine.transaction(wait=self._lane_wait) as tx:
                    upsert = tx.dialect.upsert("_buttress.meta", ("key", "value"), ("key",))
                    tx.execute(upsert, ["audit_anchored", "yes"])
        else:
            self.problem = result.problem
            self._anchoring = False
            logger.warning("audit log: %s", result.problem)

    def reanchor(self, reader: Session) -> Anchor | None:
        """Anchor the chain as it is now (an operator's decision after reading ``problem``)."""
        if self._anchor is None:
            return None
        row = reader.fetchone("SELECT seq, hash, time FROM _buttress.audit ORDER BY seq DESC LIMIT 1")
        anchor = (
            Anchor(0, GENESIS, now_iso()) if row is None else Anchor(int(row[0]), str(row[1]), str(row[2]))
        )
        with self._anchor_lock:
            self._anchor.replace(anchor)
            self._head, self._anchored = (anchor.seq, anchor.hash), (anchor.seq, anchor.hash)
        self.problem = None
        self._anchoring = True
        return anchor

    def _write_anchor(self) -> None:
        with self._anchor_lock:
            head = self._head
            if not self._anchoring or self._anchor is None or head is None or head == self._anchored:
                return
            try:
                self._anchor.write(Anchor(head[0], head[1], now_iso()))
                self._anchored = head
            except (OSError, ButtressError):
                logger.warning("the audit anchor could not be written", exc_info=True)

    def close(self) -> None:
        """Write every queued row and the final anchor; stop the background thread."""
        with contextlib.suppress(ButtressError):
            self.flush()
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._write_anchor()


__all__ = [
    "ANCHOR_DELAY",
    "DEFER_DELAY",
    "GENESIS",
    "Anchor",
    "AnchorFile",
    "AnchorRow",
    "Auditor",
    "anchor_path",
    "cap",
    "now_iso",
    "recent",
    "row_hash",
    "verify",
]
