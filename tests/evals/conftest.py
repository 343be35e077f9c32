"""Shared helpers for the evaluation tests: the example scenario of docs/eval.md, extracted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "eval.md"
FILE_BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def doc_files() -> dict[str, str]:
    """Every fenced block of docs/eval.md marked ``file=PATH``, by path."""
    return {path: body for path, body in FILE_BLOCK.findall(DOC.read_text(encoding="utf-8"))}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The doc's files written under ``tmp_path``; the path of its ``todo-done`` scenario."""
    for name, body in doc_files().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return tmp_path / "todo-done"
