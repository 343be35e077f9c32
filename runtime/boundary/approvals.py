"""Human approval of hazardous deploys, through a channel the agent cannot drive over MCP.

When a deploy's hazards reach the policy's severity, the runtime records an approval request
(bound to the proposal and its plan hash, with an expiry) and writes it beside the database in
``.buttress/requests/<id>.json``. The operator runs ``buttress approve <id>``, which signs the
request with the operator secret — kept outside the project directory — and writes
``.buttress/approvals/<id>.json``. The running server verifies the signature, the binding and
the expiry, and marks the approval used inside the deploy transaction: single use, and a
changed plan needs a new approval.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

from runtime.boundary.secret import ensure_operator_key, operator_key, operator_key_path
from runtime.errors import Code, DeployError, PolicyError
from runtime.migrate.hazards import Hazard
from runtime.store.audit import now_iso
from runtime.store.engine import Tx


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


def _expired(expires_at: str) -> bool:
    return datetime.datetime.fromisoformat(expires_at) < datetime.datetime.now(datetime.UTC)


def open_request(
    tx: Tx,
    database: str,
    *,
    proposal_id: str,
    plan_hash: str,
    hazards: list[Hazard],
    actor: str,
    ttl_minutes: int,
) -> dict[str, Any]:
    """The pending, unexpired request for this plan, or a new one (recorded and written to disk)."""
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
    target = folder(database) / "requests"
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{request_id}.json").write_text(json.dumps(request, indent=2))
    return request


def find_valid(tx: Tx, database: str, *, proposal_id: str, plan_hash: str) -> str | None:
    """An approval for exactly this plan, signed by the operator, unexpired and unused: its request id."""
    rows = tx.fetchall(
        "SELECT id, expires_at FROM _buttress.approvals WHERE proposal_id = ? AND plan_hash = ? AND used_at IS NULL",
        [proposal_id, plan_hash],
    )
    for request_id, expires_at in rows:
        path = folder(database) / "approvals" / f"{request_id}.json"
        if not path.exists() or _expired(expires_at):
            continue
        try:
            approval = json.loads(path.read_text())
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
        if hmac.compare_digest(expected, str(approval.get("signature", ""))):
            return str(request_id)
    return None


def consume(tx: Tx, request_id: str, approved_by: str = "operator") -> None:
    tx.execute(
        "UPDATE _buttress.approvals SET approved_by = ?, approved_at = ?, used_at = ? WHERE id = ?",
        [approved_by, now_iso(), now_iso(), request_id],
    )


def needs_approval_error(
    request: dict[str, Any], hazards: list[Hazard], *, what: str = "deploy"
) -> DeployError:
    return DeployError(
        Code.DEPLOY_NEEDS_APPROVAL,
        f"this {what} carries {len(hazards)} hazard(s) that need a human approval (request {request['id']})",
        hint=(
            f"Ask the operator to run `buttress approve {request['id']} --project <dir>`, then call {what} "
            "again. The approval is for this exact plan and expires."
        ),
        details={
            "approval_request": request["id"],
            "expires_at": request["expires_at"],
            "hazards": [h.model_dump(mode="json") for h in hazards],
        },
    )


__all__ = [
    "approve",
    "consume",
    "ensure_operator_key",
    "find_valid",
    "folder",
    "needs_approval_error",
    "open_request",
    "operator_key_path",
    "pending",
    "sign",
    "subject",
]


def pending(database: str | Path, request_id: str) -> dict[str, Any]:
    """The request an agent's ``deploy.needs_approval`` named, as the server wrote it beside the database."""
    path = folder(database) / "requests" / f"{request_id}.json"
    if not path.is_file():
        raise PolicyError(
            Code.NOT_FOUND,
            f"no approval request {request_id!r} in {path.parent}",
            hint="The agent's deploy.needs_approval error names the request id (details.approval_request).",
        )
    request: dict[str, Any] = json.loads(path.read_text())
    return request


def approve(database: str | Path, request: dict[str, Any], *, approved_by: str) -> dict[str, Any]:
    """Sign ``request`` with the operator secret and file the approval where the server looks for it.

    Never opens the database, so it works while a server owns it.
    """
    ensure_operator_key()
    target = folder(database) / "approvals"
    target.mkdir(parents=True, exist_ok=True)
    signed = sign(request, approved_by=approved_by)
    (target / f"{request['id']}.json").write_text(json.dumps(signed, indent=2))
    return signed


def subject(request: dict[str, Any]) -> str:
    """What a request asks to do, in words: a deploy of a proposal, or a rollback between versions."""
    name = str(request["proposal_id"])
    if name.startswith("rollback:"):
        _, current, target = name.split(":")
        return f"rollback from version {current} to version {target}"
    return f"deploy of proposal {name}"
