"""Every tool the server registers, in the order it lists them."""

from __future__ import annotations

from tools import change, logic, read, workflows
from tools.base import ToolSpec

REGISTRY: tuple[ToolSpec, ...] = (*read.TOOLS, *change.TOOLS, *logic.TOOLS, *workflows.TOOLS)
