"""Approval by URL elicitation: when a deploy or rollback waits for an approval, the operator's policy
allows it (``[approvals] elicitation = true``), the client can open URLs (URL-mode elicitation), and the
control room is running for the project, the client is asked to open the control room's approvals page
for that request. Fail-closed: the operator still signs in there and decides; whatever the client
answers, the call still answers ``deploy.needs_approval``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def project_folder(runtime: Any) -> Path | None:
    """The project's ``.buttress`` folder, for a runtime owned here or attached over the socket beside it."""
    engine = getattr(runtime, "engine", None)
    if engine is not None:
        return Path(engine.path).resolve().parent / ".buttress"
    socket = getattr(runtime, "path", None)
    if isinstance(socket, Path) and socket.parent.name == ".buttress":
        return socket.parent
    return None


def approval_url(folder: Path, request_id: str) -> str | None:
    """The control room's approvals page for a request, when a control room runs for the project."""
    marker = folder / "ui.json"
    try:
        base = json.loads(marker.read_text(encoding="utf-8"))["base"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"{str(base).rstrip('/')}/approvals#{request_id}"


async def offer_approval(ctx: Any, error: Any) -> None:
    """Ask the client to open the control room's page for the request ``error`` names (URL mode
    elicitation), when the policy allows it and the client can. Fail-closed: whatever the client
    answers, the call still answers ``deploy.needs_approval``; only the operator decides, there."""
    env = ctx.request_context.lifespan_context
    policy = env.policy
    request_id = error.details.get("approval_request")
    if policy is None or not policy.approvals.elicitation or not request_id:
        return
    capabilities = getattr(ctx, "client_capabilities", None)
    elicitation = getattr(capabilities, "elicitation", None) if capabilities is not None else None
    if elicitation is None or getattr(elicitation, "url", None) is None:
        return
    folder = project_folder(env.ready())
    url = approval_url(folder, str(request_id)) if folder is not None else None
    if url is None:
        return
    try:
        await ctx.elicit_url(
            f"A human must approve this change (request {request_id}); the operator decides in the control room.",
            url=url,
            elicitation_id=str(request_id),
        )
    except Exception:
        logger.debug("approval elicitation not delivered", exc_info=True)
