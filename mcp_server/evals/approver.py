"""The simulated operator: answers the approval requests of a run as the scenario says.

A hazardous deploy (or a rollback dropping data) waits for a human: the server writes a request
beside the database and the agent gets ``deploy.needs_approval``. In an evaluation the operator is
simulated through the same channel ``buttress approve`` uses (signing the request with the
operator secret; never through MCP). With ``[operator] approves = true`` every request is
approved; otherwise none is, and the agent must live with the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from runtime.boundary import approvals
from runtime.errors import ButtressError

APPROVER = "eval-operator"
SWEEP_INTERVAL_S = 0.1


@dataclass
class Approver:
    """The operator of one run."""

    database: Path
    approves: bool
    approved: list[str] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)

    def decide(self, request_id: str) -> bool:
        """Approve or decline one request (once); True when approved."""
        if request_id in self.approved:
            return True
        if not self.approves:
            if request_id not in self.declined:
                self.declined.append(request_id)
            return False
        try:
            request = approvals.pending(self.database, request_id)
            approvals.approve(self.database, request, approved_by=APPROVER)
        except ButtressError:
            return False
        self.approved.append(request_id)
        return True

    async def ask(self, request_id: str) -> bool:
        """``decide`` off the event loop (it signs and writes files)."""
        return await anyio.to_thread.run_sync(self.decide, request_id)

    def sweep(self) -> None:
        """Decide every request the server has filed and not been answered yet."""
        folder = approvals.folder(self.database) / "requests"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.stem not in self.approved and path.stem not in self.declined:
                self.decide(path.stem)

    async def watch(self) -> None:
        """Sweep until cancelled (for agents the runner does not drive: external commands)."""
        while True:
            await anyio.to_thread.run_sync(self.sweep)
            await anyio.sleep(SWEEP_INTERVAL_S)
