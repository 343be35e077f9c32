"""Every tool the server registers, in the order it lists them, and the capability each needs.

A tool projects one runtime operation (``runtime.registry``): the operation's declaration names the
tools that carry it, and its capability is what the policy checks before an agent sees or calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from runtime.api import OPERATIONS
from runtime.boundary.policy import Capability
from tools import change, logic, read, workflows
from tools.base import ToolSpec

REGISTRY: tuple[ToolSpec, ...] = (*read.TOOLS, *change.TOOLS, *logic.TOOLS, *workflows.TOOLS)

TOOL_CAPABILITY: Final[Mapping[str, Capability | None]] = {
    tool: op.declaration.capability for op in OPERATIONS.values() for tool in op.declaration.tools
}
"""Which capability each agent-facing tool needs: its operation's (``@operation(..., tools=...)``)."""
