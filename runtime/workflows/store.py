"""Runs, steps, messages, signals and effects as rows of the system schema, read and written inside the
caller's transaction (the writer lane for writes, a snapshot for reads).

Whatever starts a run, publishes a message or sends a signal does it in the same transaction as the
change that caused it: an action's emits, a step's record, a subscription's cursor. So a message or a
run exists if and only if that change committed (the transactional outbox).
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from runtime.boundary.policy import Acting
from runtime.errors import ActionError, Code, NotFound, PolicyError, WorkflowError
from runtime.migrate.ddl import qs
from runtime.results import EffectInfo, MessageInfo, PublishResult, RunInfo, StepInfo
from runtime.schema.spec import TopicSpec, WorkflowSpec, canonical_json
from runtime.store.audit import now_iso
from runtime.store.engine import Session, Tx
from runtime.workflows import values
from runtime.workflows.tables import TERMINAL

ACTIVE: Final = ("running", "waiting", "compensating", "blocked")
RUN_COLUMNS: Final = (
    "run_id, workflow, version, args, args_hash, status, step, calls, wake_at, attempts, step_started_at, "
    "message_cursor, error, outputs, created_by, created_at, updated_at, origin, waiting_on, acting_for, "
    "grant_json, depth"
)
MESSAGE_COLUMNS: Final = (
    "seq, message_id, topic, key, payload, version, held, lease_owner, lease_until, deliveries, acked_at, "
    "created_at"
)
EFFECT_COLUMNS: Final = (
    "effect_id, run_id, step, connector, request, request_hash, state, attempts, response, status_code, "
    "error, version, created_at, sent_at, settled_at, compensates"
)


def utcnow() -> datetime.datetime:
    """Now, as the naive UTC timestamp the TIMESTAMP columns hold."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _json(value: Any) -> Any:
    return None if value is None else json.loads(value) if isinstance(value, str) else value


def _row(names: str, row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip([n.strip() for n in names.split(",")], row, strict=True))


# ------------------------------------------------------------------------------------------- runs


def max_message_seq(session: Session) -> int:
    """The newest message's seq (or above it): the message sequence's last value, read from the
    catalog in constant time (a count or max over the messages would grow with them)."""
    return int(
        session.scalar(
            "SELECT coalesce((SELECT last_value FROM duckdb_sequences() WHERE schema_name = '_buttress' "
            "AND sequence_name = 'message_seq'), 0)"
        )
    )


def start_run(
    tx: Tx,
    workflow: WorkflowSpec,
    args: Mapping[str, Any],
    *,
    version: int,
    actor: str,
    run_id: str | None = None,
    origin: str | None = None,
    acting: Acting | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create a run (or return the one with this id and the same arguments). The second value is True
    when it was created now. A run id is an idempotency key: the same id with other arguments is
    ``workflow.run_conflict``. ``acting``: on whose behalf it runs (its grant is checked against the
    workflow, and its rate of new runs against the limit); None: the operator's, unrestricted."""
    checked = values.check_args(workflow.params, args, what=f"workflow {workflow.name}")
    args_hash = values.digest({"workflow": workflow.name, "args": checked})
    run_id = run_id or str(uuid.uuid4())
    existing = run_row(tx, run_id)
    if existing is not None:
        if existing["args_hash"] != args_hash:
            raise WorkflowError(
                Code.RUN_CONFLICT,
                f"run {run_id!r} already exists with other arguments (or another workflow)",
                hint="Use a new run_id for a new run; reuse one only to get the same run back.",
                details={"run_id": run_id, "workflow": existing["workflow"]},
            )
        return existing, False
    if acting is not None:
        _admit(tx, acting, workflow.name)
    now = now_iso()
    inserted = tx.fetchone(
        "INSERT INTO _buttress.runs (run_id, workflow, version, args, args_hash, status, step, calls, wake_at, "
        "attempts, step_started_at, message_cursor, error, outputs, created_by, created_at, updated_at, "
        "origin, waiting_on, acting_for, grant_json, depth) VALUES (?, ?, ?, ?, ?, 'running', 0, ?, NULL, 0, NULL, "
        "?, NULL, '{}', ?, ?, ?, ?, NULL, ?, ?, ?) "
        f"RETURNING {RUN_COLUMNS}",
        [
            run_id,
            workflow.name,
            version,
            canonical_json(checked),
            args_hash,
            list(workflow.calls),
            max_message_seq(tx),
            actor,
            now,
            now,
            origin,
            None if acting is None else acting.agent,
            _grant_json(acting),
            0 if acting is None else acting.depth,
        ],
    )
    assert inserted is not None
    return _run(inserted), True


def _grant_json(acting: Acting | None) -> str | None:
    if acting is None or acting.grant is None:
        return None
    return canonical_json(acting.model_dump(mode="json", include={"grant", "runs_per_minute", "max_depth"}))


def acting_of(row: Mapping[str, Any]) -> Acting | None:
    """On whose behalf a run or a message works (None: the operator's, or from before grants)."""
    agent = row.get("acting_for")
    if not agent:
        return None
    stored = _json(row.get("grant_json"))
    if not isinstance(stored, dict):
        return Acting(agent=str(agent), depth=int(row.get("depth") or 0))
    return Acting.model_validate({**stored, "agent": str(agent), "depth": int(row.get("depth") or 0)})


def chain_error(acting: Acting, what: str) -> PolicyError:
    return PolicyError(
        Code.LIMIT_CHAIN,
        f"a chain of messages and runs for {acting.agent!r} reached {acting.depth} hops, past the limit of "
        f"{acting.max_depth}: it may not {what}",
        hint="A subscription, a workflow and an action's emits feed each other without end: break the "
        "cycle, or bound it with max_depth on a subscription (the operator sets [limits] max_chain_depth).",
        details={"agent": acting.agent, "depth": acting.depth, "limit": acting.max_depth},
    )


def _admit(tx: Tx, acting: Acting, workflow: str) -> None:
    """The agent's grant covers ``workflow`` and its calls have started fewer runs than allowed in the
    last minute (``policy.denied``, ``limit.rate``)."""
    if not acting.allows("workflows", workflow):
        raise PolicyError(
            Code.POLICY_DENIED,
            f"agent {acting.agent!r} may not start workflow {workflow!r}",
            hint="This is the operator's decision (buttress.toml: workflows = [...]); ask them rather than "
            "retrying.",
            details={"agent": acting.agent, "workflow": workflow},
        )
    if acting.max_depth is not None and acting.depth > acting.max_depth:
        raise chain_error(acting, f"start workflow {workflow}")
    limit = acting.runs_per_minute
    if limit is None:
        return
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).isoformat(
        timespec="microseconds"
    )
    started = int(
        tx.scalar(
            "SELECT count(*) FROM _buttress.runs WHERE acting_for = ? AND created_at > ?",
            [acting.agent, since],
        )
    )
    if started >= limit:
        raise PolicyError(
            Code.LIMIT_RATE,
            f"agent {acting.agent!r} started {started} runs in the last minute; the limit is {limit}",
            hint="Wait a little and try again; the operator sets max_runs_per_minute under [limits].",
            details={"agent": acting.agent, "started": started, "limit": limit},
        )


def run_row(session: Session, run_id: str) -> dict[str, Any] | None:
    row = session.fetchone(f"SELECT {RUN_COLUMNS} FROM _buttress.runs WHERE run_id = ?", [run_id])
    return None if row is None else _run(row)


def _run(row: Sequence[Any]) -> dict[str, Any]:
    out = _row(RUN_COLUMNS, row)
    out["args"] = _json(out["args"])
    out["outputs"] = _json(out["outputs"]) or {}
    out["error"] = _json(out["error"])
    out["depth"] = int(out["depth"] or 0)
    return out


def require_run(session: Session, run_id: str) -> dict[str, Any]:
    found = run_row(session, run_id)
    if found is None:
        raise NotFound("run", run_id, hint="list_runs shows the runs that exist.")
    return found


def run_info(row: Mapping[str, Any], workflow: WorkflowSpec | None) -> RunInfo:
    step = None
    if row["status"] not in TERMINAL and workflow is not None and 0 <= row["step"] < len(workflow.steps):
        step = workflow.steps[row["step"]].name
    wake = row["wake_at"]
    return RunInfo(
        run_id=row["run_id"],
        workflow=row["workflow"],
        version=row["version"],
        status=row["status"],
        step=step,
        attempts=row["attempts"],
        wake_at=wake.isoformat() if isinstance(wake, datetime.datetime) else wake,
        waiting_on=row.get("waiting_on"),
        error=row["error"],
        args=row["args"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        origin=row["origin"],
        acting_for=row.get("acting_for"),
        depth=int(row.get("depth") or 0),
    )


def list_runs(
    session: Session, *, workflow: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    where, params = ["TRUE"], []
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if status is not None:
        if status == "active":
            where.append(f"status IN ({', '.join(repr(s) for s in ACTIVE)})")
        else:
            where.append("status = ?")
            params.append(status)
    rows = session.fetchall(
        f"SELECT {RUN_COLUMNS} FROM _buttress.runs WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, run_id LIMIT ?",
        [*params, limit],
    )
    return [_run(row) for row in rows]


def steps_of(session: Session, run_id: str) -> list[StepInfo]:
    rows = session.fetchall(
        "SELECT seq, name, kind, status, attempts, output, error, version, started_at, finished_at "
        "FROM _buttress.steps WHERE run_id = ? ORDER BY seq",
        [run_id],
    )
    return [
        StepInfo(
            seq=r[0],
            name=r[1],
            kind=r[2],
            status=r[3],
            attempts=r[4],
            output=_json(r[5]),
            error=_json(r[6]),
            version=r[7],
            started_at=r[8],
            finished_at=r[9],
        )
        for r in rows
    ]


def record_step(
    tx: Tx,
    run: Mapping[str, Any],
    *,
    seq: int,
    name: str,
    kind: str,
    status: str,
    attempts: int,
    output: Any,
    error: dict[str, Any] | None,
    version: int,
    first: bool = False,
) -> None:
    """Record a step's outcome. ``first``: no record of this step can exist yet (a forward step that
    completes: a failed record is deleted before its step is retried), so a plain INSERT does, which
    costs DuckDB a quarter of the upsert; a record that exists after all fails the transaction."""
    now = now_iso()
    upsert = (
        ""
        if first
        else " ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, "
        "output = excluded.output, error = excluded.error, finished_at = excluded.finished_at"
    )
    tx.execute(
        "INSERT INTO _buttress.steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + upsert,
        [
            run["run_id"],
            seq,
            name,
            kind,
            status,
            attempts,
            None if output is None else canonical_json(output),
            None if error is None else canonical_json(error),
            version,
            run.get("step_started_at") or now,
            now,
        ],
    )


def advance(
    tx: Tx,
    run: Mapping[str, Any],
    *,
    step: int,
    status: str,
    outputs: Mapping[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    wake_at: datetime.datetime | None = None,
    attempts: int = 0,
    waiting_on: str | None = None,
    keep_started: bool = False,
    message_cursor: int | None = None,
) -> None:
    """Move the run on, fenced: only if it is still where ``run`` says (status and step); otherwise
    another worker moved it first and this transaction must not commit (``engine.conflict``)."""
    started = run.get("step_started_at") if keep_started else (now_iso() if attempts == 0 else None)
    updated = tx.fetchone(
        "UPDATE _buttress.runs SET status = ?, step = ?, outputs = ?, error = ?, wake_at = ?, attempts = ?, "
        "waiting_on = ?, step_started_at = coalesce(?, step_started_at), message_cursor = coalesce(?, message_cursor), "
        "updated_at = ? WHERE run_id = ? AND status = ? AND step = ? AND attempts = ? RETURNING run_id",
        [
            status,
            step,
            canonical_json(dict(outputs if outputs is not None else run["outputs"])),
            None if error is None else canonical_json(error),
            wake_at,
            attempts,
            waiting_on,
            started,
            message_cursor,
            now_iso(),
            run["run_id"],
            run["status"],
            run["step"],
            run["attempts"],
        ],
    )
    if updated is None:
        from runtime.errors import EngineError

        raise EngineError(
            Code.ENGINE_CONFLICT,
            f"run {run['run_id']} moved while this step ran",
            hint="Nothing was committed; the run continues from where it is.",
            details={"run_id": run["run_id"]},
        )


# ----------------------------------------------------------------------------------------- signals


def send_signal(tx: Tx, run_id: str, name: str, payload: Mapping[str, Any], *, actor: str) -> int:
    """Record a signal for a run and wake it if it waits for that signal."""
    run = require_run(tx, run_id)
    if run["status"] in TERMINAL:
        raise WorkflowError(
            Code.RUN_NOT_ACTIVE,
            f"run {run_id} is {run['status']}; it takes no signal",
            hint="Signal a run that is still running or waiting (get_run shows its status).",
            details={"run_id": run_id, "status": run["status"]},
        )
    seq = int(tx.scalar("SELECT coalesce(max(seq), 0) + 1 FROM _buttress.signals WHERE run_id = ?", [run_id]))
    tx.execute(
        "INSERT INTO _buttress.signals VALUES (?, ?, ?, ?, FALSE, ?, ?)",
        [run_id, seq, name, canonical_json(dict(payload)), now_iso(), actor],
    )
    tx.execute(
        "UPDATE _buttress.runs SET status = 'running', wake_at = NULL, updated_at = ? "
        "WHERE run_id = ? AND status = 'waiting' AND waiting_on = ?",
        [now_iso(), run_id, f"signal:{name}"],
    )
    return seq


def take_signal(tx: Tx, run_id: str, name: str) -> dict[str, Any] | None:
    """The oldest unconsumed signal ``name`` of the run, consumed now (None if there is none)."""
    row = tx.fetchone(
        "SELECT seq, payload FROM _buttress.signals WHERE run_id = ? AND name = ? AND NOT consumed "
        "ORDER BY seq LIMIT 1",
        [run_id, name],
    )
    if row is None:
        return None
    tx.execute("UPDATE _buttress.signals SET consumed = TRUE WHERE run_id = ? AND seq = ?", [run_id, row[0]])
    payload = _json(row[1])
    return payload if isinstance(payload, dict) else {}


# ---------------------------------------------------------------------------------------- messages


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
        raise chain_error(acting, f"publish on {topic.name}")
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
            _grant_json(acting),
            0 if acting is None else acting.depth,
        ],
    )
    if held is not None:
        return PublishResult(message_id=message_id, seq=seq, topic=topic.name)
    tx.execute(
        "UPDATE _buttress.runs SET status = 'running', wake_at = NULL, updated_at = ? "
        "WHERE status = 'waiting' AND waiting_on = ?",
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
    tx: Tx, run: Mapping[str, Any], topic: str, match: Mapping[str, Any]
) -> tuple[int, dict[str, Any]] | None:
    """The first message of ``topic`` published since the run last took one whose payload has the
    ``match`` values (None if there is none yet)."""
    conditions = ["topic = ?", "seq > ?", "held IS NULL"]
    params: list[Any] = [topic, run["message_cursor"]]
    for name, value in match.items():
        conditions.append("json_extract(payload, ?) = CAST(? AS JSON)")
        params += [f"$.{name}", canonical_json(value)]
    row = tx.fetchone(
        f"SELECT seq, payload FROM _buttress.messages WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT 1",
        params,
    )
    if row is None:
        return None
    payload = _json(row[1])
    return int(row[0]), payload if isinstance(payload, dict) else {}


def message_info(row: Sequence[Any], pending: bool | None = None) -> MessageInfo:
    """A message row as the agent sees it; ``pending``: a subscription has still to reach it."""
    item = _row(MESSAGE_COLUMNS, row)
    lease = item["lease_until"]
    if item["held"] is not None:
        state = "held"
    elif item["acked_at"] is not None:
        state = "acknowledged"
    elif isinstance(lease, datetime.datetime) and lease > utcnow():
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
        payload=_json(item["payload"]) or {},
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
    now = utcnow()
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
        "WHERE message_id IN (SELECT unnest(?)) AND lease_owner = ? AND acked_at IS NULL RETURNING message_id",
        [now_iso(), consumer, list(message_ids), consumer],
    )
    acked = [str(r[0]) for r in rows]
    missing = [m for m in message_ids if m not in acked]
    if missing:
        already = {
            str(r[0])
            for r in tx.fetchall(
                "SELECT message_id FROM _buttress.messages WHERE message_id IN (SELECT unnest(?)) "
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


# ----------------------------------------------------------------------------------------- effects


def effect_row(session: Session, effect_id: str) -> dict[str, Any] | None:
    row = session.fetchone(f"SELECT {EFFECT_COLUMNS} FROM _buttress.effects WHERE effect_id = ?", [effect_id])
    if row is None:
        return None
    out = _row(EFFECT_COLUMNS, row)
    for key in ("request", "response", "error"):
        out[key] = _json(out[key])
    return out


def effect_info(row: Mapping[str, Any]) -> EffectInfo:
    created = datetime.datetime.fromisoformat(row["created_at"])
    age = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
    return EffectInfo(
        effect_id=row["effect_id"],
        run_id=row["run_id"],
        step=row["step"],
        connector=row["connector"],
        state=row["state"],
        attempts=row["attempts"],
        request=row["request"],
        response=row["response"],
        status_code=row["status_code"],
        error=row["error"],
        version=row["version"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
        settled_at=row["settled_at"],
        age_s=round(age, 3),
    )


def list_effects(session: Session, *, state: str | None, run_id: str | None, limit: int) -> list[EffectInfo]:
    where, params = ["TRUE"], []
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    rows = session.fetchall(
        f"SELECT {EFFECT_COLUMNS} FROM _buttress.effects WHERE {' AND '.join(where)} "
        "ORDER BY CASE state WHEN 'unknown' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, created_at LIMIT ?",
        [*params, limit],
    )
    out = []
    for row in rows:
        item = _row(EFFECT_COLUMNS, row)
        for key in ("request", "response", "error"):
            item[key] = _json(item[key])
        out.append(effect_info(item))
    return out


def parse_json(value: Any) -> dict[str, Any]:
    parsed = _json(value)
    return parsed if isinstance(parsed, dict) else {}


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


# ------------------------------------------------------------------------------------------ timers


def sleeping_runs(tx: Tx, run_ids: Sequence[str], now: datetime.datetime) -> list[dict[str, Any]]:
    """The runs among ``run_ids`` whose sleep is (still) due, as ``tx`` sees them."""
    rows = tx.fetchall(
        f"SELECT {RUN_COLUMNS} FROM _buttress.runs WHERE run_id IN (SELECT unnest(?)) AND status = 'waiting' "
        "AND waiting_on LIKE 'sleep:%' AND wake_at <= ?",
        [list(run_ids), now],
    )
    out = []
    for row in rows:
        item = _row(RUN_COLUMNS, row)
        item["outputs"] = _json(item["outputs"]) or {}
        out.append(item)
    return out


def finish_sleeps(tx: Tx, finished: Sequence[tuple[dict[str, Any], str, int, bool]], *, version: int) -> None:
    """Complete many due sleeps at once: a step record each, and each run moved on (in bulk)."""
    if not finished:
        return
    now = now_iso()
    records = [
        (
            run["run_id"],
            run["step"],
            name,
            canonical_json({"slept_until": run["wake_at"].isoformat()}),
            version,
            run["step_started_at"] or now,
            following,
            "completed" if last else "running",
            canonical_json({**run["outputs"], name: {"slept_until": run["wake_at"].isoformat()}}),
        )
        for run, name, following, last in finished
    ]
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS woken (run_id VARCHAR, step INTEGER, name VARCHAR, output JSON, "
        "version INTEGER, started_at VARCHAR, following INTEGER, status VARCHAR, outputs JSON)"
    )
    tx.execute("DELETE FROM woken")
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        tx.execute(
            f"INSERT INTO woken VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?, ?)'] * len(chunk))}",
            [value for record in chunk for value in record],
        )
    tx.execute(
        "INSERT INTO _buttress.steps SELECT run_id, step, name, 'sleep', 'completed', 1, output, NULL, version, "
        "started_at, ? FROM woken",
        [now],
    )
    tx.execute(
        "UPDATE _buttress.runs AS r SET step = w.following, status = w.status, outputs = w.outputs, wake_at = NULL, "
        "waiting_on = NULL, attempts = 0, step_started_at = ?, updated_at = ? FROM woken AS w WHERE r.run_id = w.run_id",
        [now, now],
    )
