"""Human approval of hazardous deploys, through a channel the agent cannot drive over MCP.

When a deploy's hazards reach the policy's severity, the runtime records an approval request
(bound to the proposal and its plan hash, with an expiry) and writes it beside the database in
``.buttress/requests/<id>.json``. The operator runs ``buttress approve <id>``, which signs the
request with the operator secret — kept outside the project directory — and writes
``.buttress/approvals/<id>.json``. The running server verifies the signature, the binding and
the expiry, and marks the approval used inside the deploy transaction: single use, and a
changed plan needs a new approval.

The operator may instead refuse a request (``refuse``, from the control room): the refusal is
signed the same way and filed in ``.buttress/refusals/<id>.json``. A refused plan is never
deployed on that request's behalf (``find_valid`` skips it, so refusing an approved, unused request
revokes the approval), and the agent's retry of the same plan is answered with ``policy.denied``
carrying the operator's reason, instead of a new request. A different plan (a new proposal) asks
again.

Where the requests and the signed decisions are filed is a ``Filing``: a ``Folder`` beside the
database (``.buttress/``), or, when several servers share the database, the database's own
``_buttress.filed`` table (``Table``), so that a request one server made is decided once and honoured
by every server. Each server checks the signatures with the operator key, so servers sharing a
database share that key (``BUTTRESS_OPERATOR_KEY``).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from runtime.boundary.secret import ensure_operator_key, operator_key, operator_key_path
from runtime.errors import Code, DeployError, NotFound, PolicyError
from runtime.migrate.hazards import Hazard
from runtime.store.audit import now_iso
from runtime.store.engine import Session, Tx

if TYPE_CHECKING:
    from runtime.store.protocol import Database


def _key(path: Path | None = None) -> bytes:
    return operator_key(path)


def _payload(request: dict[str, Any]) -> bytes:
    keys = ("id", "proposal_id", "plan_hash", "expires_at")
    return json.dumps({k: request[k] for k in keys}, sort_keys=True).encode()


def sign(request: dict[str, Any], approved_by: str, key_path: Path | None = None) -> dict[str, Any]:
    signature = hmac.new(_key(key_path), _payload(request), hashlib.sha256).hexdigest()
    return {
        **{k: request[k] for k in ("id", "proposal_id", "plan_hash", "expires_at")},
        "approved_by": approved_by,
        "approved_at": now_iso(),
        "signature": signature,
    }


def folder(database: str | Path) -> Path:
    return Path(database).resolve().parent / ".buttress"


class Filing(Protocol):
    """Where requests (``requests``) and the operator's signed decisions (``approvals``,
    ``refusals``) are filed, each a JSON record under its request id."""

    def read(self, drawer: str, name: str, session: Session | None = None) -> dict[str, Any] | None: ...

    def names(self, drawer: str) -> list[str]: ...

    def write(self, drawer: str, name: str, record: dict[str, Any], tx: Tx | None = None) -> None: ...


@dataclass(frozen=True)
class Folder:
    """Files beside the database (``.buttress/<drawer>/<id>.json``); one written in a transaction
    appears once it commits."""

    root: Path

    def read(self, drawer: str, name: str, session: Session | None = None) -> dict[str, Any] | None:
        path = self.root / drawer / f"{name}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def names(self, drawer: str) -> list[str]:
        folder = self.root / drawer
        return sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []

    def write(self, drawer: str, name: str, record: dict[str, Any], tx: Tx | None = None) -> None:
        def file() -> None:
            target = self.root / drawer
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{name}.json").write_text(json.dumps(record, indent=2))

        if tx is None:
            file()
        else:
            tx.on_commit(file, in_lane=True)


@dataclass(frozen=True)
class Table:
    """The shared database's ``_buttress.filed``: every server reads what any of them filed."""

    engine: Database

    def read(self, drawer: str, name: str, session: Session | None = None) -> dict[str, Any] | None:
        sql = "SELECT record FROM _buttress.filed WHERE drawer = ? AND name = ?"
        if session is not None:
            row = session.fetchone(sql, [drawer, name])
        else:
            with self.engine.snapshot() as reader:
                row = reader.fetchone(sql, [drawer, name])
        if row is None:
            return None
        record = json.loads(row[0]) if isinstance(row[0], str) else row[0]
        return record if isinstance(record, dict) else None

    def names(self, drawer: str) -> list[str]:
        with self.engine.snapshot() as reader:
            rows = reader.fetchall(
                "SELECT name FROM _buttress.filed WHERE drawer = ? ORDER BY name", [drawer]
            )
        return [str(r[0]) for r in rows]

    def write(self, drawer: str, name: str, record: dict[str, Any], tx: Tx | None = None) -> None:
        if tx is None:
            with self.engine.transaction() as own:
                self.write(drawer, name, record, own)
            return
        tx.execute(
            tx.dialect.upsert(
                "_buttress.filed", ("drawer", "name", "record", "filed_at"), ("drawer", "name")
            ),
            [drawer, name, json.dumps(record), now_iso()],
        )


Where: TypeAlias = "Filing | str | Path"
"""A filing, or the database's path (its folder)."""


def filing(where: Where) -> Filing:
    """The filing ``where`` names: itself, or the folder beside a database file."""
    return Folder(folder(where)) if isinstance(where, str | Path) else where


def _expired(expires_at: str) -> bool:
    return datetime.datetime.fromisoformat(expires_at) < datetime.datetime.now(datetime.UTC)


def open_request(
    tx: Tx,
    database: Where,
    *,
    proposal_id: str,
    plan_hash: str,
    hazards: list[Hazard],
    actor: str,
    ttl_minutes: int,
) -> dict[str, Any]:
    """The pending, unexpired request for this plan, or a new one (recorded, and filed once ``tx``
    commits).

    ``policy.denied`` when the operator refused a request for exactly this plan.
    """
    refused = refused_plan(tx, database, proposal_id=proposal_id, plan_hash=plan_hash)
    if refused is not None:
        raise refused_error(refused)
    row = tx.fetchone(
        "SELECT id, expires_at FROM _buttress.approvals WHERE proposal_id = ? AND plan_hash = ? AND used_at IS NULL "
        "ORDER BY requested_at DESC LIMIT 1",
        [proposal_id, plan_hash],
    )
    if row is not None and not _expired(row[1]):
        return {"id": row[0], "proposal_id": proposal_id, "plan_hash": plan_hash, "expires_at": row[1]}
    request_id = "r" + secrets.token_hex(4)
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=ttl_minutes)).isoformat()
    hazards_json = [h.model_dump(mode="json") for h in hazards]
    tx.execute(
        "INSERT INTO _buttress.approvals (id, proposal_id, plan_hash, hazards, requested_by, requested_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [request_id, proposal_id, plan_hash, json.dumps(hazards_json), actor, now_iso(), expires],
    )
    request = {
        "id": request_id,
        "proposal_id": proposal_id,
        "plan_hash": plan_hash,
        "expires_at": expires,
        "requested_by": actor,
        "hazards": hazards_json,
    }
    filing(database).write("requests", request_id, request, tx)
    return request


def find_valid(tx: Tx, database: Where, *, proposal_id: str, plan_hash: str) -> str | None:
    """An approval for exactly this plan, signed by the operator, unexpired and unused: its request id."""
    rows = tx.fetchall(
        "SELECT id, expires_at FROM _buttress.approvals WHERE proposal_id = ? AND plan_hash = ? AND used_at IS NULL",
        [proposal_id, plan_hash],
    )
    for request_id, expires_at in rows:
        approval = filing(database).read("approvals", request_id, tx)
        if approval is None or _expired(expires_at):
            continue
        try:
            expected = sign(
                {
                    "id": request_id,
                    "proposal_id": proposal_id,
                    "plan_hash": plan_hash,
                    "expires_at": expires_at,
                },
                approval.get("approved_by", ""),
            )["signature"]
        except (ValueError, OSError, PolicyError):
            continue
        if hmac.compare_digest(expected, str(approval.get("signature", ""))) and not refusal(
            database,
            {"id": request_id, "proposal_id": proposal_id, "plan_hash": plan_hash, "expires_at": expires_at},
            tx,
        ):
            return str(request_id)
    return None


def consume(tx: Tx, request_id: str, approved_by: str = "operator") -> None:
    tx.execute(
        "UPDATE _buttress.approvals SET approved_by = ?, approved_at = ?, used_at = ? WHERE id = ?",
        [approved_by, now_iso(), now_iso(), request_id],
    )


HANDSHAKE = (
    "Do not retry at once: give the operator the request id from details.approval_request (they run "
    "`buttress approve <id>`, or decide in the control room); once it is approved, call the same deploy or "
    "rollback again and it goes through once, for that exact plan, before details.expires_at. If the operator "
    "refuses, the retry answers policy.denied with their reason; if the version moves on first, propose again."
)
"""The approval handshake as an agent hears it: the same words in the error's hint, the deploy and
rollback tools' descriptions and the README (a test keeps them equal)."""


def needs_approval_error(
    request: dict[str, Any], hazards: list[Hazard], *, what: str = "deploy"
) -> DeployError:
    return DeployError(
        Code.DEPLOY_NEEDS_APPROVAL,
        f"this {what} carries {len(hazards)} hazard(s) that need a human approval (request {request['id']})",
        hint=HANDSHAKE,
        details={
            "approval_request": request["id"],
            "expires_at": request["expires_at"],
            "hazards": [h.model_dump(mode="json") for h in hazards],
        },
    )


__all__ = [
    "HANDSHAKE",
    "Filing",
    "Folder",
    "Table",
    "Where",
    "approve",
    "consume",
    "decidable",
    "ensure_operator_key",
    "filing",
    "find_valid",
    "folder",
    "needs_approval_error",
    "open_request",
    "operator_key_path",
    "pending",
    "refusal",
    "refuse",
    "refused_error",
    "refused_plan",
    "request_status",
    "sign",
    "stale_reason",
    "subject",
]


def pending(database: Where, request_id: str) -> dict[str, Any]:
    """The request an agent's ``deploy.needs_approval`` named, as the server filed it."""
    request = filing(database).read("requests", request_id)
    if request is None:
        where = f" in {folder(database) / 'requests'}" if isinstance(database, str | Path) else ""
        raise PolicyError(
            Code.NOT_FOUND,
            f"no approval request {request_id!r}{where}",
            hint="The agent's deploy.needs_approval error names the request id (details.approval_request).",
        )
    return request


def approve(
    database: Where, request: dict[str, Any], *, approved_by: str, tx: Tx | None = None
) -> dict[str, Any]:
    """Sign ``request`` with the operator secret and file the approval where the servers look for it
    (in ``tx`` when given). Filed beside a database file, it never opens the database, so it works
    while a server owns it."""
    ensure_operator_key()
    signed = sign(request, approved_by=approved_by)
    filing(database).write("approvals", str(request["id"]), signed, tx)
    return signed


def subject(request: dict[str, Any]) -> str:
    """What a request asks to do, in words: a deploy of a proposal, or a rollback between versions."""
    name = str(request["proposal_id"])
    if name.startswith("rollback:"):
        _, current, target = name.split(":")
        return f"rollback from version {current} to version {target}"
    return f"deploy of proposal {name}"


# ------------------------------------------------------------------------------------------- refusals

_REQUEST_COLUMNS = (
    "id",
    "proposal_id",
    "plan_hash",
    "hazards",
    "requested_by",
    "requested_at",
    "expires_at",
    "approved_by",
    "approved_at",
    "used_at",
)


def _refusal_payload(request: dict[str, Any], refused_by: str, reason: str) -> bytes:
    bound = {k: request[k] for k in ("id", "proposal_id", "plan_hash", "expires_at")}
    return json.dumps(
        {**bound, "decision": "refused", "refused_by": refused_by, "reason": reason}, sort_keys=True
    ).encode()


def refuse(
    database: Where, request: dict[str, Any], *, refused_by: str, reason: str, tx: Tx | None = None
) -> dict[str, Any]:
    """Sign a refusal of ``request`` with the operator secret and file it beside the database.

    The agent's retry of this exact plan is answered with ``policy.denied`` and ``reason``; an
    approval already filed for the request is no longer honoured. Like ``approve``, it never opens
    the database.
    """
    ensure_operator_key()
    record = {
        **{k: request[k] for k in ("id", "proposal_id", "plan_hash", "expires_at")},
        "refused_by": refused_by,
        "refused_at": now_iso(),
        "reason": reason,
        "signature": hmac.new(
            _key(), _refusal_payload(request, refused_by, reason), hashlib.sha256
        ).hexdigest(),
    }
    filing(database).write("refusals", str(request["id"]), record, tx)
    return record


def refusal(
    database: Where, request: dict[str, Any], session: Session | None = None
) -> dict[str, Any] | None:
    """The operator's signed refusal of ``request`` (bound to its plan), or None."""
    record = filing(database).read("refusals", str(request["id"]), session)
    if record is None:
        return None
    try:
        expected = hmac.new(
            _key(),
            _refusal_payload(request, str(record.get("refused_by", "")), str(record.get("reason", ""))),
            hashlib.sha256,
        ).hexdigest()
    except (ValueError, OSError, PolicyError):
        return None
    if not hmac.compare_digest(expected, str(record.get("signature", ""))):
        return None
    return record


def _approval(
    database: Where, request: dict[str, Any], session: Session | None = None
) -> dict[str, Any] | None:
    """The operator's signed approval of ``request``, or None."""
    record = filing(database).read("approvals", str(request["id"]), session)
    if record is None:
        return None
    try:
        expected = sign(request, str(record.get("approved_by", "")))["signature"]
    except (ValueError, OSError, PolicyError):
        return None
    if not hmac.compare_digest(expected, str(record.get("signature", ""))):
        return None
    return record


def refused_plan(tx: Session, database: Where, *, proposal_id: str, plan_hash: str) -> dict[str, Any] | None:
    """The refusal of any request made for exactly this plan, or None."""
    rows = tx.fetchall(
        "SELECT id, expires_at FROM _buttress.approvals WHERE proposal_id = ? AND plan_hash = ? "
        "ORDER BY requested_at DESC",
        [proposal_id, plan_hash],
    )
    for request_id, expires_at in rows:
        record = refusal(
            database,
            {"id": request_id, "proposal_id": proposal_id, "plan_hash": plan_hash, "expires_at": expires_at},
            tx,
        )
        if record is not None:
            return record
    return None


def refused_error(record: dict[str, Any]) -> PolicyError:
    """What the agent hears when it retries a plan the operator refused."""
    request = {"proposal_id": record["proposal_id"]}
    reason = str(record.get("reason") or "").strip()
    return PolicyError(
        Code.POLICY_DENIED,
        f"the operator refused the {subject(request)} (request {record['id']})"
        + (f": {reason}" if reason else ""),
        hint="Do not retry this plan. Read the operator's reason, then propose a different change, or ask "
        "the operator.",
        details={
            "approval_request": record["id"],
            "refused_by": record.get("refused_by"),
            "refused_at": record.get("refused_at"),
            "reason": reason,
        },
    )


def request_status(
    database: Where, row: dict[str, Any], session: Session | None = None
) -> tuple[str, dict[str, Any] | None]:
    """Where a recorded request stands, and the decision on file (approval or refusal record):
    ``used`` (a deploy consumed its approval), ``refused``, ``expired``, ``approved`` (the agent may
    retry) or ``pending`` (waiting for the operator)."""
    if row.get("used_at"):
        return "used", _approval(database, row, session) or {
            "approved_by": row.get("approved_by"),
            "approved_at": row.get("approved_at"),
        }
    refused = refusal(database, row, session)
    if refused is not None:
        return "refused", refused
    if _expired(str(row["expires_at"])):
        return "expired", None
    approved = _approval(database, row, session)
    if approved is not None:
        return "approved", approved
    return "pending", None


def request_rows(
    session: Session, where: str = "", params: list[Any] | None = None, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Recorded requests (newest first, at most ``limit``), as dicts with their hazards parsed.
    ``where`` is a fixed clause written by the caller, never text from a request."""
    bound = "" if limit is None else f" LIMIT {int(limit)}"
    rows = session.fetchall(
        f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM _buttress.approvals {where} ORDER BY requested_at DESC{bound}",
        params or [],
    )
    out = []
    for row in rows:
        item = dict(zip(_REQUEST_COLUMNS, row, strict=True))
        item["hazards"] = json.loads(item["hazards"])
        out.append(item)
    return out


def stale_reason(session: Session, row: dict[str, Any]) -> str | None:
    """Why the plan a request was made for can no longer deploy (None: it still can): the version it
    was made on is no longer current, it was deployed already, or its last dry-run on the current
    version failed. Approving such a request would be asking a human about something that cannot
    happen."""
    current = int(session.scalar("SELECT max(number) FROM _buttress.versions"))
    subject_id = str(row["proposal_id"])
    if subject_id.startswith("rollback:"):
        _, start, _target = subject_id.split(":")
        if int(start) != current:
            return f"the rollback was planned from version {start}, and the current version is {current}"
        return None
    found = session.fetchone(
        "SELECT p.base_version, (SELECT min(number) FROM _buttress.versions AS v WHERE v.proposal_id = p.id), "
        "p.plan_hash FROM _buttress.proposals AS p WHERE p.id = ?",
        [subject_id],
    )
    if found is None:
        return "its proposal no longer exists"
    base, deployed, plan_hash = found
    if deployed is not None:
        return f"proposal {subject_id} is already deployed as version {deployed}"
    if int(base) != current or plan_hash != row["plan_hash"]:
        return f"proposal {subject_id} was made on version {base}, and the current version is {current}"
    ran = session.fetchone(
        "SELECT passed FROM _buttress.dry_runs WHERE proposal_id = ? AND base_version = ? AND plan_hash = ? "
        "ORDER BY id DESC LIMIT 1",
        [subject_id, current, plan_hash],
    )
    if ran is None:
        return f"proposal {subject_id} has not been dry-run on version {current}"
    if not ran[0]:
        return f"the last dry-run of proposal {subject_id} failed"
    return None


def decidable(
    session: Session, database: Where, request_id: str, *, approving: bool = True
) -> dict[str, Any]:
    """The recorded request ``request_id`` if the operator can still decide it: not used by a
    deploy, not refused, not expired (``approval.invalid`` otherwise; ``not_found`` if unknown). An
    approved request can still be refused (which revokes the approval) or approved again."""
    found = request_rows(session, "WHERE id = ?", [request_id])
    if not found:
        raise NotFound(
            "approval request",
            request_id,
            hint="The agent's deploy.needs_approval error names the request id (details.approval_request).",
        )
    row = found[0]
    status, _ = request_status(database, row, session)
    if status in {"used", "refused", "expired"}:
        why = {
            "used": "its approval was already used by the deploy it allowed",
            "refused": "it was already refused",
            "expired": f"it expired at {row['expires_at']}",
        }[status]
        raise PolicyError(
            Code.APPROVAL_INVALID,
            f"request {request_id} can no longer be decided: {why}",
            hint="Nothing to do. If the agent retries an expired request, it opens a new one to decide.",
            details={"approval_request": request_id, "status": status},
        )
    stale = stale_reason(session, row) if approving else None
    if stale is not None:
        raise PolicyError(
            Code.APPROVAL_STALE,
            f"request {request_id} cannot be approved: {stale}, so its plan cannot deploy",
            hint="Nothing to approve: the agent proposes (and dry-runs) the change again on the current version, "
            "and a deploy of that asks anew. You may still refuse this request.",
            details={"approval_request": request_id, "status": "stale", "reason": stale},
        )
    return row
