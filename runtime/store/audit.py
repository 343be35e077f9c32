"""The hash-chained audit log: append, defer, anchor and verify.

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
import datetime
import hashlib
import hmac
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any, Final

from runtime.boundary import secret
from runtime.errors import ButtressError, PolicyError
from runtime.results import AuditEntry, VerifyResult
from runtime.schema.spec import canonical_json
from runtime.store.engine import Engine, Session, Tx

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
DEFER_DELAY: Final = 0.05
ANCHOR_DELAY: Final = 0.05
MAX_STRING: Final = 2000
MAX_ITEMS: Final = 100
MAX_ARGUMENTS_BYTES: Final = 16_384

_COLUMNS = "seq, time, actor, operation, arguments, outcome, error_code, version_before, version_after, proposal_id, prev_hash, hash"


def row_hash(fields: dict[str, Any]) -> str:
    payload = {k: fields[k] for k in sorted(fields) if k != "hash"}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


# ------------------------------------------------------------------------------------------ capping


def cap(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as stored in the audit log: long strings and lists shortened, the whole bounded.

    >>> cap({"sql": "x" * 5000})["sql"][-40:]
    '… [5000 characters, sha256 c59d3c0480cc]'
    """
    capped = _cap(arguments)
    assert isinstance(capped, dict)
    text = canonical_json(capped)
    if len(text) <= MAX_ARGUMENTS_BYTES:
        return capped
    full = canonical_json(arguments)
    return {
        "_capped": True,
        "bytes": len(full.encode()),
        "sha256": hashlib.sha256(full.encode()).hexdigest(),
        "preview": text[:MAX_STRING],
    }


def _cap(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_STRING + 64:  # a string capped once stays as it is
            return value
        digest = hashlib.sha256(value.encode()).hexdigest()[:12]
        return f"{value[:MAX_STRING]}… [{len(value)} characters, sha256 {digest}]"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): _cap(v) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["_more_keys"] = len(items) - MAX_ITEMS
        return out
    if isinstance(value, list | tuple):
        out_list = [_cap(v) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            out_list.append(f"… [{len(value) - MAX_ITEMS} more items]")
        return out_list
    if value is None or isinstance(value, bool | int | float):
        return value
    return _cap(str(value))


# ------------------------------------------------------------------------------------------- anchor


@dataclass(frozen=True)
class Anchor:
    """The newest committed head of the chain, kept beside the database and signed."""

    seq: int
    hash: str
    time: str

    def payload(self) -> bytes:
        return canonical_json({"seq": self.seq, "hash": self.hash}).encode()


class AnchorFile:
    """Reads and writes one database's anchor; the signature uses the operator secret."""

    def __init__(self, path: Path, database: str, key_path: Path | None = None) -> None:
        self.path = path
        self.database = database
        self.key_path = key_path

    def read(self) -> tuple[Anchor | None, str | None]:
        """The anchor and None, or None and why it cannot be trusted (None, None when absent)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            anchor = Anchor(seq=int(raw["seq"]), hash=str(raw["hash"]), time=str(raw["time"]))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"the audit anchor {self.path} is unreadable"
        try:
            expected = secret.mac(anchor.payload(), self.key_path)
        except PolicyError:
            return None, "the operator secret that signs the audit anchor is missing on this machine"
        if not hmac.compare_digest(expected, str(raw.get("mac", ""))):
            return None, f"the audit anchor {self.path} is not signed by this machine's operator secret"
        return anchor, None

    def write(self, anchor: Anchor) -> None:
        """Replace the anchor atomically (write, then rename)."""
        record = {
            "database": self.database,
            "seq": anchor.seq,
            "hash": anchor.hash,
            "time": anchor.time,
            "mac": secret.mac(anchor.payload(), self.key_path),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=2), encoding="utf-8")
        temporary.replace(self.path)


def anchor_path(database: str | Path) -> Path:
    """Where the anchor of ``database`` lives: ``.buttress/<name>.audit-anchor.json`` beside it."""
    database = Path(database).resolve()
    return database.parent / ".buttress" / f"{database.name}.audit-anchor.json"


# ------------------------------------------------------------------------------------------ auditor


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

    def __init__(self, engine: Engine, *, anchor: AnchorFile | None = None, lane_wait: float = 10.0) -> None:
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
    def anchor(self) -> AnchorFile | None:
        return self._anchor

    # appending ----------------------------------------------------------------------------

    def _load_head(self, tx: Tx) -> tuple[int, str]:
        if self._head is None:
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
                f"INSERT INTO _buttress.audit ({_COLUMNS}) VALUES {', '.join([placeholder] * len(chunk))}",
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
                    tx.execute("INSERT OR REPLACE INTO _buttress.meta VALUES ('audit_anchored', 'yes')")
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
            self._anchor.write(anchor)
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


# ---------------------------------------------------------------------------------------- reading


def _count(cursor: Session) -> int:
    return int(cursor.scalar("SELECT count(*) FROM _buttress.audit"))


def _entries(cursor: Session, where: str = "", params: list[Any] | None = None) -> list[AuditEntry]:
    rows = cursor.execute(f"SELECT {_COLUMNS} FROM _buttress.audit {where}", params or []).fetchall()
    names = [c.strip() for c in _COLUMNS.split(",")]
    out = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["arguments"] = json.loads(item["arguments"])
        out.append(AuditEntry.model_validate(item))
    return out


def recent(
    cursor: Session,
    *,
    limit: int = 50,
    after_seq: int = 0,
    operation: str | None = None,
) -> list[AuditEntry]:
    """The newest ``limit`` entries; with ``after_seq``, the first ``limit`` entries after it (for paging)."""
    where = "WHERE seq > ?"
    params: list[Any] = [after_seq]
    if operation:
        where += " AND operation = ?"
        params.append(operation)
    if after_seq > 0:
        return _entries(cursor, where + " ORDER BY seq LIMIT ?", [*params, limit])
    rows = _entries(cursor, where + " ORDER BY seq DESC LIMIT ?", [*params, limit])
    return list(reversed(rows))


VERIFY_BATCH: Final = 2000
"""Rows ``verify`` reads at a time: it holds one batch, never the whole log (which every new owner checks
when it opens the database)."""


def verify(cursor: Session, anchor_file: AnchorFile | None = None) -> VerifyResult:
    """Recompute the chain in storage order of ``seq``; report the first row that does not fit, and
    (with an anchor) rows that the anchor proves were committed but are gone. Reads the log a batch at
    a time, so its memory does not grow with the log."""
    prev, expected_seq, count = GENESIS, 1, 0
    hashes: dict[int, str] = {}  # the anchored row's, once passed
    anchor, distrust = anchor_file.read() if anchor_file is not None else (None, None)
    last_seq = 0
    while True:
        batch = _entries(cursor, "WHERE seq > ? ORDER BY seq LIMIT ?", [last_seq, VERIFY_BATCH])
        for entry in batch:
            count += 1
            if entry.seq != expected_seq:
                return VerifyResult(
                    ok=False,
                    entries=_count(cursor),
                    first_bad_seq=entry.seq,
                    problem=f"sequence jumps from {expected_seq - 1} to {entry.seq} (row deleted or inserted)",
                    missing=[expected_seq, entry.seq - 1] if entry.seq > expected_seq else None,
                )
            if entry.prev_hash != prev:
                return VerifyResult(
                    ok=False,
                    entries=_count(cursor),
                    first_bad_seq=entry.seq,
                    problem="prev_hash does not match the previous row (row deleted, inserted or reordered)",
                )
            if row_hash(entry.model_dump()) != entry.hash:
                return VerifyResult(
                    ok=False,
                    entries=_count(cursor),
                    first_bad_seq=entry.seq,
                    problem="row content does not match its hash (row edited)",
                )
            if anchor is not None and entry.seq == anchor.seq:
                hashes[entry.seq] = entry.hash
            prev, expected_seq = entry.hash, expected_seq + 1
        if len(batch) < VERIFY_BATCH:
            break
        last_seq = batch[-1].seq
    entries = count
    if anchor_file is None:
        return VerifyResult(ok=True, entries=entries)
    if distrust is not None:
        return VerifyResult(ok=False, entries=entries, problem=distrust)
    if anchor is None:
        if entries:
            return VerifyResult(
                ok=False,
                entries=entries,
                problem=f"the audit anchor {anchor_file.path} is missing: the newest rows cannot be checked",
            )
        return VerifyResult(ok=True, entries=0)
    shown = {"seq": anchor.seq, "hash": anchor.hash, "time": anchor.time}
    last = expected_seq - 1
    if anchor.seq > last:
        return VerifyResult(
            ok=False,
            entries=entries,
            first_bad_seq=last + 1,
            problem=f"rows {last + 1} to {anchor.seq} were committed (the anchor of {anchor.time} says so) "
            "and are gone: the end of the log was deleted",
            missing=[last + 1, anchor.seq],
            anchor=shown,
        )
    if anchor.seq > 0 and hashes.get(anchor.seq) != anchor.hash:
        return VerifyResult(
            ok=False,
            entries=entries,
            first_bad_seq=anchor.seq,
            problem=f"row {anchor.seq} differs from the anchored one: the log was rewritten",
            anchor=shown,
        )
    return VerifyResult(ok=True, entries=entries, anchor=shown)
