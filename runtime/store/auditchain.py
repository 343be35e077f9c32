"""The audit chain as data: what a row's hash covers (``row_hash``, from ``GENESIS``), arguments capped
to a preview, the anchor file (the newest committed sequence number and hash, signed with the operator
secret), and the log read back: its latest entries, and the whole chain verified against its anchor a
batch at a time.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runtime.boundary import secret
from runtime.errors import PolicyError
from runtime.results import AuditEntry, VerifyResult
from runtime.schema.spec import canonical_json
from runtime.store.engine import Session

GENESIS = "0" * 64


MAX_STRING: Final = 2000
MAX_ITEMS: Final = 100
MAX_ARGUMENTS_BYTES: Final = 16_384

COLUMNS = "seq, time, actor, operation, arguments, outcome, error_code, version_before, version_after, proposal_id, prev_hash, hash"


def row_hash(fields: dict[str, Any]) -> str:
    payload = {k: fields[k] for k in sorted(fields) if k != "hash"}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


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

    def replace(self, anchor: Anchor) -> None:
        """Re-anchor (the operator's decision): the same as ``write``."""
        self.write(anchor)


class AnchorRow:
    """The anchor of a database several servers share: a signed row of its system schema
    (``_buttress.anchors``), so that every server, a new one included, checks the same head. It only
    moves forward: a server whose view of the head is older than the row leaves the row as it is.

    Kept in the database it guards, it still catches a log cut short by anyone without the operator
    secret (who cannot sign a row for an older head); someone holding an older signed row as well as
    write access to the database could put both back together, which the file anchor of a database
    one process owns does not allow."""

    path = "_buttress.anchors"

    def __init__(self, engine: Any, database: str, key_path: Path | None = None) -> None:
        self.engine = engine
        self.database = database
        self.key_path = key_path

    def read(self) -> tuple[Anchor | None, str | None]:
        """The anchor and None, or None and why it cannot be trusted (None, None when absent)."""
        with self.engine.snapshot() as reader:
            row = reader.fetchone("SELECT seq, hash, time, mac FROM _buttress.anchors WHERE name = 'audit'")
        if row is None:
            return None, None
        anchor = Anchor(seq=int(row[0]), hash=str(row[1]), time=str(row[2]))
        try:
            expected = secret.mac(anchor.payload(), self.key_path)
        except PolicyError:
            return None, "the operator secret that signs the audit anchor is missing on this machine"
        if not hmac.compare_digest(expected, str(row[3])):
            return (
                None,
                "the audit anchor in _buttress.anchors is not signed by this machine's operator secret",
            )
        return anchor, None

    def write(self, anchor: Anchor) -> None:
        """Move the anchor forward to ``anchor`` (left as it is when it already anchors a later row)."""
        self._put(anchor, "WHERE _buttress.anchors.seq < excluded.seq")

    def replace(self, anchor: Anchor) -> None:
        """Re-anchor (the operator's decision), backwards too."""
        self._put(anchor, "")

    def _put(self, anchor: Anchor, only: str) -> None:
        mac = secret.mac(anchor.payload(), self.key_path)
        with self.engine.transaction() as tx:
            tx.execute(
                "INSERT INTO _buttress.anchors (name, seq, hash, time, mac) VALUES ('audit', ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, time = excluded.time, "
                f"mac = excluded.mac {only}",
                [anchor.seq, anchor.hash, anchor.time, mac],
            )


def anchor_path(database: str | Path) -> Path:
    """Where the anchor of ``database`` lives: ``.buttress/<name>.audit-anchor.json`` beside it."""
    database = Path(database).resolve()
    return database.parent / ".buttress" / f"{database.name}.audit-anchor.json"


def _count(cursor: Session) -> int:
    return int(cursor.scalar("SELECT count(*) FROM _buttress.audit"))


def _entries(cursor: Session, where: str = "", params: list[Any] | None = None) -> list[AuditEntry]:
    rows = cursor.execute(f"SELECT {COLUMNS} FROM _buttress.audit {where}", params or []).fetchall()
    names = [c.strip() for c in COLUMNS.split(",")]
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


def verify(cursor: Session, anchor_file: AnchorFile | AnchorRow | None = None) -> VerifyResult:
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
