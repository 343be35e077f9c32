"""``buttress ui``: registered by ``mcp_server.cli`` (see ``FEATURE_COMMANDS``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, parents: Any) -> None:
    """Add this feature's commands to ``commands`` (an argparse subparsers action)."""
    del commands, parents


def _unused(args: argparse.Namespace) -> int:  # pragma: no cover
    return 0
