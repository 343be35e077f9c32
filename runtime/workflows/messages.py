"""Messages and subscription cursors as rows of the system schema, read and written inside the caller's
transaction (the writer lane for writes, a snapshot for reads).

A message is published in the same transaction as the change that caused it (an action's emits, a
publish step's record), so it exists if and only if that change committed (the transactional outbox).
An external topic's messages are claimed under a lease and acknowledged; a subscription's cursor is
moved in the transaction that handles its next message.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from runtime.boundary.policy import Acting
from runtime.errors import ActionError, Code, PolicyError
from runtime.migrate.ddl import qs
from runtime.results import MessageInfo, PublishResult
from runtime.schema.spec import TopicSpec, canonical_json
from runtime.store.audit import now_iso
from runtime.store.engine import Session, Tx
from runtime.workflows import store, values
from runtime.workflows.status import RunStatus, literal

MESSAGE_COLUMNS: Final = (
    "seq, message_id, topic, key, payload, version, held, lease_owner, lease_until, deliveries, acked_at, "
    "created_at"
)


def publish(
    tx: Tx,
    topic: TopicSpec,
    payload: Mapping[str, Any],
    *,
    version: int,
    actor: str,
    message_id: str | None = None,
    held: str | None = None,
    acting: Acting | None = None,
) -> PublishResult:
    """Append a message (checked against its topic) in the caller's transaction, and wake the runs that
    wait for its topic. A ``message_id`` seen before returns that message instead (deduplication).
    ``held``: why it is held back instead (its topic is not in the current version)."""
    checked = values.check_payload(topic, payload)
    if acting is not None and acting.max_depth is not None and acting.depth > acting.max_depth:
        raise store.chain_error(acting, f"publish on {topic.name}")
    if acting is not None and not acting.allows("topics", topic.name):
        raise PolicyError(
            Code.POLICY_DENIED,
            f"agent {acting.agent!r} may not publish on topic {topic.name!r}",
            hint="This is the operator's decision (buttress.toml: topics = [...]); ask them rather than retrying.",
            details={"agent": acting.agent, "topic": topic.name},
        )
    if message_id is not None:
        found = tx.fetchone("SELECT seq, topic FROM _buttress.messages WHERE message_id = ?", [message_id])
        if found is not None:
            return PublishResult(message_id=message_id, seq=int(found[0]), topic=str(found[1]), replayed=True)
    message_id = message_id or str(uuid.uuid4())
    key = checked.get(topic.key) if topic.key else None
    seq = int(tx.scalar("SELECT nextval('_buttress.message_seq')"))
    tx.execute(
        "INSERT INTO _buttress.messages (seq, message_id, topic, key, payload, version, external, held, "
        "lease_owner, lease_until, deliveries, acked_at, acked_by, created_at, created_by, acting_for, "
        "grant_json, depth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, NULL, NULL, ?, ?, ?, ?, ?)",
        [
            seq,
            message_id,
            topic.name,
            None if key is None else str(key),
            canonical_json(checked),
            version,
            topic.external,
            held,
            now_iso(),
            actor,
            None if acting is None else acting.agent,
            store.grant_json(acting),
            0 if acting is None else acting.depth,
        ],
    )
    if held is not None:
        return PublishResult(message_id=message_id, seq=seq, topic=topic.name)
    tx.execute(
        f"UPDATE _buttress.runs SET status = {literal(RunStatus.RUNNING)}, wake_at = NULL, updated_at = ? "
        f"WHERE status = {literal(RunStatus.WAITING)} AND waiting_on = ?",
        [now_iso(), f"topic:{topic.name}"],
    )
    return PublishResult(message_id=message_id, seq=seq, topic=topic.name)


def retain_payload(tx: Tx, topic: str, seq: int, values: Mapping[str, Any]) -> list[str]:
    """Keep payload values a message could not carry (fields its topic's current version lacks) where
    the version that dropped them keeps those of undelivered messages, so that deploying a version
    with the field again gives them back. Returns the fields retained; a field no retained data of
    its topic covers (finalized) is not."""
    kept = []
    for name, value in values.items():
        row = tx.fetchone(
            "SELECT table_name FROM _buttress.retained WHERE kind = 'payload' AND entity = ? AND field = ? "
            "AND status = 'active' ORDER BY version DESC, step DESC LIMIT 1",
            [topic, name],
        )
        if row is None:
            continue
        tx.execute(f"INSERT INTO {qs(str(row[0]))} VALUES (?, ?)", [seq, canonical_json(value)])
        kept.append(name)
    return kept


def take_message(
    tx: Tx, run: store.RunRow, topic: str, match: Mapping[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """The first message of ``topic`` published since the run last took one whose payload has the
    ``match`` values (None if there is none yet)."""
    conditions = ["topic = ?", "seq > ?", "held IS NULL"]
    params: list[Any] = [topic, run.message_cursor]
    for name, value in match.items():
        conditions.append(f"{tx.dialect.json_value('payload', name)} = {tx.dialect.json_param()}")
        params.append(canonical_json(value))
    row = tx.fetchone(
        f"SELECT seq, payload FROM _buttress.messages WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT 1",
        params,
    )
    if row is None:
        return None
    payload = store.json_value(row[1])
    return int(row[0]), payload if isinstance(payload, dict) else {}


def message_info(row: Sequence[Any], pending: bool | None = None) -> MessageInfo:
    """A message row as the agent sees it; ``pending``: a subscription has still to reach it."""
    item = store.record(MESSAGE_COLUMNS, row)
    lease = item["lease_until"]
    if item["held"] is not None:
        state = "held"
    elif item["acked_at"] is not None:
        state = "acknowledged"
    elif isinstance(lease, datetime.datetime) and lease > store.utcnow():
        state = "leased"
    elif pending is False:
        state = "delivered"
    else:
        state = "waiting"
    return MessageInfo(
        seq=item["seq"],
        message_id=item["message_id"],
        topic=item["topic"],
        key=item["key"],
        payload=store.json_value(item["payload"]) or {},
        version=item["version"],
        held=item["held"],
        lease_owner=item["lease_owner"],
        lease_until=lease.isoformat() if isinstance(lease, datetime.datetime) else lease,
        deliveries=item["deliveries"],
        acked_at=item["acked_at"],
        created_at=item["created_at"],
        state=state,
    )


def list_messages(session: Session, *, topic: str | None, undelivered: bool, limit: int) -> list[MessageInfo]:
    where, params = ["TRUE"], []
    if topic is not None:
        where.append("m.topic = ?")
        params.append(topic)
    if undelivered:
        where.append(
            "(m.held IS NOT NULL OR (m.external AND m.acked_at IS NULL) OR EXISTS (SELECT 1 FROM "
            "_buttress.cursors AS c WHERE c.active AND c.topic = m.topic AND c.last_seq < m.seq))"
        )
    pending = (
        "(m.external AND m.acked_at IS NULL) OR EXISTS (SELECT 1 FROM _buttress.cursors AS c WHERE c.active "
        "AND c.topic = m.topic AND c.last_seq < m.seq)"
    )
    rows = session.fetchall(
        f"SELECT {', '.join('m.' + c.strip() for c in MESSAGE_COLUMNS.split(','))}, ({pending}) "
        f"FROM _buttress.messages AS m WHERE {' AND '.join(where)} ORDER BY m.seq DESC LIMIT ?",
        [*params, limit],
    )
    return [message_info(r[:-1], pending=bool(r[-1])) for r in rows]


def claim(
    tx: Tx, topic: TopicSpec, consumer: str, *, limit: int, lease_s: float
) -> tuple[list[MessageInfo], datetime.datetime]:
    """Lease up to ``limit`` messages of an external topic to ``consumer``: the oldest not acknowledged
    and not leased, and, per key, only the oldest unacknowledged one (so a key's messages are handled
    in order)."""
    now = store.utcnow()
    until = now + datetime.timedelta(seconds=lease_s)
    rows = tx.fetchall(
        "UPDATE _buttress.messages SET lease_owner = ?, lease_until = ?, deliveries = deliveries + 1 "
        "WHERE seq IN (SELECT m.seq FROM _buttress.messages AS m WHERE m.topic = ? AND m.held IS NULL "
        "AND m.acked_at IS NULL AND (m.lease_until IS NULL OR m.lease_until < ?) AND (m.key IS NULL OR NOT "
        "EXISTS (SELECT 1 FROM _buttress.messages AS e WHERE e.topic = m.topic AND e.key = m.key "
        "AND e.seq < m.seq AND e.acked_at IS NULL AND e.held IS NULL)) ORDER BY m.seq LIMIT ?) "
        f"RETURNING {MESSAGE_COLUMNS}",
        [consumer, until, topic.name, now, limit],
    )
    return sorted((message_info(r) for r in rows), key=lambda m: m.seq), until


def ack(tx: Tx, consumer: str, message_ids: Sequence[str]) -> list[str]:
    """Acknowledge messages this consumer holds; raise ``message.not_leased`` naming the others."""
    rows = tx.fetchall(
        "UPDATE _buttress.messages SET acked_at = ?, acked_by = ?, lease_until = NULL "
        f"WHERE message_id IN (SELECT {tx.dialect.text_list_param()}) AND lease_owner = ? AND acked_at IS NULL "
        "RETURNING message_id",
        [now_iso(), consumer, list(message_ids), consumer],
    )
    acked = [str(r[0]) for r in rows]
    missing = [m for m in message_ids if m not in acked]
    if missing:
        already = {
            str(r[0])
            for r in tx.fetchall(
                f"SELECT message_id FROM _buttress.messages WHERE message_id IN (SELECT {tx.dialect.text_list_param()}) "
                "AND acked_at IS NOT NULL AND acked_by = ?",
                [missing, consumer],
            )
        }
        missing = [m for m in missing if m not in already]
        acked += sorted(already)
    if missing:
        raise ActionError(
            Code.MESSAGE_NOT_LEASED,
            f"{len(missing)} of the messages are not leased to {consumer!r} (another consumer took them "
            "after the lease ran out, or the ids are wrong)",
            hint="Claim again with claim_messages and acknowledge before lease_until; deduplicate by message_id.",
            details={"message_ids": missing[:20], "consumer": consumer},
        )
    return acked


# ---------------------------------------------------------------------------------- subscriptions


def move_cursor(tx: Tx, subscription: str, seen: int, to: int) -> bool:
    """Move a subscription's cursor from ``seen`` to ``to``; False if it moved meanwhile (another
    delivery got there first: this one must not commit)."""
    return (
        tx.fetchone(
            "UPDATE _buttress.cursors SET last_seq = ? WHERE subscription = ? AND last_seq = ? AND active "
            "RETURNING subscription",
            [to, subscription, seen],
        )
        is not None
    )
