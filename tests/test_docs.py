"""The README documents every tool (as `name`) and every command (as ``buttress name``): an undocumented
one fails here, by name."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcp_server.cli import build_parser
from tools.registry import REGISTRY

README = Path(__file__).resolve().parent.parent / "README.md"


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every subcommand, nested ones spelled out (``audit verify``)."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = commands(sub, f"{prefix}{name} ")
                found.extend(nested or [f"{prefix}{name}"])
    return found


def test_readme_documents_every_tool_and_command() -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    missing = [f"tool `{spec.name}`" for spec in REGISTRY if f"`{spec.name}`" not in text]
    missing += [
        f"command `buttress {name}`" for name in commands(build_parser()) if f"buttress {name}" not in text
    ]
    assert not missing, f"{README.name} does not mention: " + ", ".join(missing)
