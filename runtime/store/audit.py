"""The hash-chained audit log: append (inside the caller's transaction) and verify.

Each row's hash covers its own fields and the previous row's hash, so an edited, deleted,
inserted or reordered row breaks the chain at that point.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from pydantic import BaseModel

from runtime.schema.spec import canonical_json
from runtime.store.engine import Session, Tx

GENESIS = "0" * 64

_COLUMNS = "seq, time, actor, operation, arguments, outcome, error_code, version_before, version_after, proposal_id, prev_hash, hash"


class AuditEntry(BaseModel):
    seq: int
    time: str
    actor: str
    operation: str
    arguments: dict[str, Any]
    outcome: str
    error_code: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    proposal_id: str | None = None
    prev_hash: str
    hash: str


class VerifyResult(BaseModel):
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def row_hash(fields: dict[str, Any]) -> str:
    payload = {k: fields[k] for k in sorted(fields) if k != "hash"}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class AuditLog:
    """Appends rows on the writer lane; remembers the chain head only once a commit succeeds."""

    def __init__(self) -> None:
        self._head: tuple[int, str] | None = None

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
    ) -> int:
        """Append one row in ``tx``; it commits (or not) with the caller's effect."""
        seq, prev = tx.memo.get("audit_head") or self._load_head(tx)
        fields: dict[str, Any] = {
            "seq": seq + 1,
            "time": now_iso(),
            "actor": actor,
            "operation": operation,
            "arguments": arguments,
            "outcome": outcome,
            "error_code": error_code,
            "version_before": version_before,
            "version_after": version_after,
            "proposal_id": proposal_id,
            "prev_hash": prev,
        }
        fields["hash"] = row_hash(fields)
        tx.execute(
            f"INSERT INTO _buttress.audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                fields["seq"],
                fields["time"],
                actor,
                operation,
                canonical_json(arguments),
                outcome,
                error_code,
                version_before,
                version_after,
                proposal_id,
                prev,
                fields["hash"],
            ],
        )
        head = (fields["seq"], fields["hash"])
        tx.memo["audit_head"] = head
        tx.on_commit(lambda: self._advance(head))
        return int(fields["seq"])

    def _advance(self, head: tuple[int, str]) -> None:
        if self._head is None or head[0] > self._head[0]:
            self._head = head

    def forget(self) -> None:
        """Drop the cached head (after an external change, e.g. in tests)."""
        self._head = None


def _entries(cursor: Session, where: str = "", params: list[Any] | None = None) -> list[AuditEntry]:
    import json

    rows = cursor.execute(f"SELECT {_COLUMNS} FROM _buttress.audit {where}", params or []).fetchall()
    names = [c.strip() for c in _COLUMNS.split(",")]
    out = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["arguments"] = json.loads(item["arguments"])
        out.append(AuditEntry.model_validate(item))
    return out


def recent(
    cursor: Session, *, limit: int = 50, after_seq: int = 0, operation: str | None = None
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


def verify(cursor: Session) -> VerifyResult:
    """Recompute the chain in storage order of ``seq``; report the first row that does not fit."""
    entries = _entries(cursor, "ORDER BY seq")
    prev, expected_seq = GENESIS, 1
    for entry in entries:
        fields = entry.model_dump()
        if entry.seq != expected_seq:
            return VerifyResult(
                ok=False,
                entries=len(entries),
                first_bad_seq=entry.seq,
                problem=f"sequence jumps from {expected_seq - 1} to {entry.seq} (row deleted or inserted)",
            )
        if entry.prev_hash != prev:
            return VerifyResult(
                ok=False,
                entries=len(entries),
                first_bad_seq=entry.seq,
                problem="prev_hash does not match the previous row (row deleted, inserted or reordered)",
            )
        if row_hash(fields) != entry.hash:
            return VerifyResult(
                ok=False,
                entries=len(entries),
                first_bad_seq=entry.seq,
                problem="row content does not match its hash (row edited)",
            )
        prev, expected_seq = entry.hash, expected_seq + 1
    return VerifyResult(ok=True, entries=len(entries))
