"""Runs and their steps, signals and timers as rows of the system schema, read and written inside the
caller's transaction (the writer lane for writes, a snapshot for reads). A run travels as a ``RunRow``,
built from its row in one place (``RunRow.of``).

Whatever starts a run or sends a signal does it in the same transaction as the change that caused it:
an action's emits, a step's record, a subscription's cursor. So a run exists if and only if that change
committed (the transactional outbox). Messages and subscription cursors are ``messages``; effects are
``effects``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from runtime.boundary.policy import Acting
from runtime.errors import Code, NotFound, PolicyError, WorkflowError
from runtime.results import RunInfo, StepInfo
from runtime.schema.spec import WorkflowSpec, canonical_json
from runtime.store.audit import now_iso
from runtime.store.engine import Session, Tx
from runtime.workflows import values
from runtime.workflows.status import ACTIVE, TERMINAL, RunStatus, StepStatus, literal, status_in


def utcnow() -> datetime.datetime:
    """Now, as the naive UTC timestamp the TIMESTAMP columns hold."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def json_value(value: Any) -> Any:
    """A JSON column's value, parsed (None stays None)."""
    return None if value is None else json.loads(value) if isinstance(value, str) else value


def parse_json(value: Any) -> dict[str, Any]:
    """A JSON column holding an object, parsed ({} for anything else)."""
    parsed = json_value(value)
    return parsed if isinstance(parsed, dict) else {}


def record(names: str, row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dict, by the comma-separated column ``names`` it was selected with."""
    return dict(zip([n.strip() for n in names.split(",")], row, strict=True))


@dataclasses.dataclass(frozen=True, slots=True)
class RunRow:
    """A run as ``_buttress.runs`` holds it, its JSON columns parsed. Its fields, in order, are the
    columns every run is selected with (``RUN_COLUMNS``); ``of`` builds one from such a row."""

    run_id: str
    workflow: str
    version: int
    args: dict[str, Any]
    args_hash: str
    status: RunStatus
    step: int
    calls: list[str]
    wake_at: datetime.datetime | None
    attempts: int
    step_started_at: str | None
    message_cursor: int
    error: dict[str, Any] | None
    outputs: dict[str, Any]
    created_by: str
    created_at: str
    updated_at: str
    origin: str | None
    waiting_on: str | None
    acting_for: str | None
    grant_json: str | None
    depth: int
    lease_epoch: int
    """How many times the run's lease changed hands on a shared database (``leases``); a step's fence
    compares it."""

    @classmethod
    def of(cls, row: Sequence[Any]) -> RunRow:
        """The run a ``SELECT {RUN_COLUMNS}`` row describes."""
        item = record(RUN_COLUMNS, row)
        return cls(
            **{
                **item,
                "args": json_value(item["args"]),
                "status": RunStatus(item["status"]),
                "error": json_value(item["error"]),
                "outputs": json_value(item["outputs"]) or {},
                "depth": int(item["depth"] or 0),
                "lease_epoch": int(item["lease_epoch"] or 0),
            }
        )


RUN_COLUMNS: Final = ", ".join(field.name for field in dataclasses.fields(RunRow))


# ------------------------------------------------------------------------------------------- runs


def max_message_seq(session: Session) -> int:
    """The newest message's seq (or above it): the message sequence's last value, read from the
    catalog in constant time (a count or max over the messages would grow with them)."""
    return int(session.scalar(session.dialect.sequence_last_value("_buttress", "message_seq")))


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
) -> tuple[RunRow, bool]:
    """Create a run (or return the one with this id and the same arguments). The second value is True
    when it was created now. A run id is an idempotency key: the same id with other arguments is
    ``workflow.run_conflict``. ``acting``: on whose behalf it runs (its grant is checked against the
    workflow, and its rate of new runs against the limit); None: the operator's, unrestricted."""
    checked = values.check_args(workflow.params, args, what=f"workflow {workflow.name}")
    args_hash = values.digest({"workflow": workflow.name, "args": checked})
    run_id = run_id or str(uuid.uuid4())
    existing = run_row(tx, run_id)
    if existing is not None:
        if existing.args_hash != args_hash:
            raise WorkflowError(
                Code.RUN_CONFLICT,
                f"run {run_id!r} already exists with other arguments (or another workflow)",
                hint="Use a new run_id for a new run; reuse one only to get the same run back.",
                details={"run_id": run_id, "workflow": existing.workflow},
            )
        return existing, False
    if acting is not None:
        _admit(tx, acting, workflow.name)
    now = now_iso()
    inserted = tx.fetchone(
        "INSERT INTO _buttress.runs (run_id, workflow, version, args, args_hash, status, step, calls, wake_at, "
        "attempts, step_started_at, message_cursor, error, outputs, created_by, created_at, updated_at, "
        f"origin, waiting_on, acting_for, grant_json, depth) VALUES (?, ?, ?, ?, ?, {literal(RunStatus.RUNNING)}, "
        "0, ?, NULL, 0, NULL, ?, NULL, '{}', ?, ?, ?, ?, NULL, ?, ?, ?) "
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
            grant_json(acting),
            0 if acting is None else acting.depth,
        ],
    )
    assert inserted is not None
    return RunRow.of(inserted), True


def grant_json(acting: Acting | None) -> str | None:
    """What a run or a message records of the grant it works under (None: none to record)."""
    if acting is None or acting.grant is None:
        return None
    return canonical_json(acting.model_dump(mode="json", include={"grant", "runs_per_minute", "max_depth"}))


def acting_of(run: RunRow) -> Acting | None:
    """On whose behalf a run works (None: the operator's, or from before grants)."""
    return acting(run.acting_for, run.grant_json, run.depth)


def acting(agent: Any, grant: Any, depth: Any) -> Acting | None:
    """On whose behalf a run or a message works, from its ``acting_for``, ``grant_json`` and ``depth``
    columns (None: the operator's, or from before grants)."""
    if not agent:
        return None
    stored = json_value(grant)
    if not isinstance(stored, dict):
        return Acting(agent=str(agent), depth=int(depth or 0))
    return Acting.model_validate({**stored, "agent": str(agent), "depth": int(depth or 0)})


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


def run_row(session: Session, run_id: str) -> RunRow | None:
    row = session.fetchone(f"SELECT {RUN_COLUMNS} FROM _buttress.runs WHERE run_id = ?", [run_id])
    return None if row is None else RunRow.of(row)


def require_run(session: Session, run_id: str) -> RunRow:
    found = run_row(session, run_id)
    if found is None:
        raise NotFound("run", run_id, hint="list_runs shows the runs that exist.")
    return found


def run_info(row: RunRow, workflow: WorkflowSpec | None) -> RunInfo:
    step = None
    if row.status not in TERMINAL and workflow is not None and 0 <= row.step < len(workflow.steps):
        step = workflow.steps[row.step].name
    wake = row.wake_at
    return RunInfo(
        run_id=row.run_id,
        workflow=row.workflow,
        version=row.version,
        status=row.status.value,
        step=step,
        attempts=row.attempts,
        wake_at=wake.isoformat() if isinstance(wake, datetime.datetime) else wake,
        waiting_on=row.waiting_on,
        error=row.error,
        args=row.args,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        origin=row.origin,
        acting_for=row.acting_for,
        depth=row.depth,
    )


def list_runs(session: Session, *, workflow: str | None, status: str | None, limit: int) -> list[RunRow]:
    where, params = ["TRUE"], []
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if status is not None:
        if status == "active":
            where.append(status_in(ACTIVE))
        else:
            where.append("status = ?")
            params.append(status)
    rows = session.fetchall(
        f"SELECT {RUN_COLUMNS} FROM _buttress.runs WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, run_id LIMIT ?",
        [*params, limit],
    )
    return [RunRow.of(row) for row in rows]


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
            output=json_value(r[5]),
            error=json_value(r[6]),
            version=r[7],
            started_at=r[8],
            finished_at=r[9],
        )
        for r in rows
    ]


def record_step(
    tx: Tx,
    run: RunRow,
    *,
    seq: int,
    name: str,
    kind: str,
    status: StepStatus,
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
            run.run_id,
            seq,
            name,
            kind,
            status,
            attempts,
            None if output is None else canonical_json(output),
            None if error is None else canonical_json(error),
            version,
            run.step_started_at or now,
            now,
        ],
    )


def advance(
    tx: Tx,
    run: RunRow,
    *,
    step: int,
    status: RunStatus,
    outputs: Mapping[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    wake_at: datetime.datetime | None = None,
    attempts: int = 0,
    waiting_on: str | None = None,
    keep_started: bool = False,
    message_cursor: int | None = None,
) -> None:
    """Move the run on, fenced: only if it is still where ``run`` says (status, step, attempts and
    lease epoch); otherwise another worker moved it first, or another server took its lease, and this
    transaction must not commit (``engine.conflict``)."""
    started = run.step_started_at if keep_started else (now_iso() if attempts == 0 else None)
    updated = tx.fetchone(
        "UPDATE _buttress.runs SET status = ?, step = ?, outputs = ?, error = ?, wake_at = ?, attempts = ?, "
        "waiting_on = ?, step_started_at = coalesce(?, step_started_at), message_cursor = coalesce(?, message_cursor), "
        "updated_at = ? WHERE run_id = ? AND status = ? AND step = ? AND attempts = ? AND lease_epoch = ? "
        "RETURNING run_id",
        [
            status,
            step,
            canonical_json(dict(outputs if outputs is not None else run.outputs)),
            None if error is None else canonical_json(error),
            wake_at,
            attempts,
            waiting_on,
            started,
            message_cursor,
            now_iso(),
            run.run_id,
            run.status,
            run.step,
            run.attempts,
            run.lease_epoch,
        ],
    )
    if updated is None:
        from runtime.errors import EngineError

        raise EngineError(
            Code.ENGINE_CONFLICT,
            f"run {run.run_id} moved while this step ran",
            hint="Nothing was committed; the run continues from where it is.",
            details={"run_id": run.run_id},
        )


# ----------------------------------------------------------------------------------------- signals


def send_signal(tx: Tx, run_id: str, name: str, payload: Mapping[str, Any], *, actor: str) -> int:
    """Record a signal for a run and wake it if it waits for that signal."""
    run = require_run(tx, run_id)
    if run.status in TERMINAL:
        raise WorkflowError(
            Code.RUN_NOT_ACTIVE,
            f"run {run_id} is {run.status}; it takes no signal",
            hint="Signal a run that is still running or waiting (get_run shows its status).",
            details={"run_id": run_id, "status": run.status.value},
        )
    seq = int(tx.scalar("SELECT coalesce(max(seq), 0) + 1 FROM _buttress.signals WHERE run_id = ?", [run_id]))
    tx.execute(
        "INSERT INTO _buttress.signals VALUES (?, ?, ?, ?, FALSE, ?, ?)",
        [run_id, seq, name, canonical_json(dict(payload)), now_iso(), actor],
    )
    tx.execute(
        f"UPDATE _buttress.runs SET status = {literal(RunStatus.RUNNING)}, wake_at = NULL, updated_at = ? "
        f"WHERE run_id = ? AND status = {literal(RunStatus.WAITING)} AND waiting_on = ?",
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
    payload = json_value(row[1])
    return payload if isinstance(payload, dict) else {}


# ------------------------------------------------------------------------------------------ timers


def sleeping_runs(tx: Tx, run_ids: Sequence[str], now: datetime.datetime) -> list[RunRow]:
    """The runs among ``run_ids`` whose sleep is (still) due, as ``tx`` sees them."""
    rows = tx.fetchall(
        f"SELECT {RUN_COLUMNS} FROM _buttress.runs WHERE run_id IN (SELECT {tx.dialect.text_list_param()}) "
        f"AND status = {literal(RunStatus.WAITING)} AND waiting_on LIKE 'sleep:%' AND wake_at <= ?",
        [list(run_ids), now],
    )
    return [RunRow.of(row) for row in rows]


def finish_sleeps(tx: Tx, finished: Sequence[tuple[RunRow, str, int, bool]], *, version: int) -> None:
    """Complete many due sleeps at once: a step record each, and each run moved on (in bulk)."""
    if not finished:
        return
    now = now_iso()
    records = []
    for run, name, following, last in finished:
        assert run.wake_at is not None  # a due sleep has its time
        slept = {"slept_until": run.wake_at.isoformat()}
        records.append(
            (
                run.run_id,
                run.step,
                name,
                canonical_json(slept),
                version,
                run.step_started_at or now,
                following,
                RunStatus.COMPLETED if last else RunStatus.RUNNING,
                canonical_json({**run.outputs, name: slept}),
            )
        )
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS woken (run_id VARCHAR, step INTEGER, name VARCHAR, output JSON, "
        "version INTEGER, started_at VARCHAR, following INTEGER, status VARCHAR, outputs JSON)"
    )
    tx.execute("DELETE FROM woken")
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        tx.execute(
            f"INSERT INTO woken VALUES {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?, ?)'] * len(chunk))}",
            [value for woken in chunk for value in woken],
        )
    tx.execute(
        f"INSERT INTO _buttress.steps SELECT run_id, step, name, 'sleep', {literal(StepStatus.COMPLETED)}, 1, "
        "output, NULL, version, started_at, ? FROM woken",
        [now],
    )
    tx.execute(
        "UPDATE _buttress.runs AS r SET step = w.following, status = w.status, outputs = w.outputs, wake_at = NULL, "
        "waiting_on = NULL, attempts = 0, step_started_at = ?, updated_at = ? FROM woken AS w WHERE r.run_id = w.run_id",
        [now, now],
    )
