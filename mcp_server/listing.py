"""A stored ``tools/list`` answer, so that a server answers its first ``tools/list`` before it loads
the tool modules (their input schemas need the SQL parser, their runtime the database engine).

The answer is stored under a key that covers everything shaping a tool's schema: the source of the
``tools``, ``runtime`` and ``mcp_server`` packages, the versions of Python, mcp and pydantic, and
the names of any extra tools. Any change gives a new key: that start loads the tools before
answering, as if there were no store, and writes the new answer. Only the static tools are stored;
per-action ``app_`` tools depend on the deployed version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

from mcp.types import Tool
from pydantic import ValidationError

logger = logging.getLogger(__name__)

PACKAGES = ("tools", "runtime", "mcp_server")
SOURCE_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "tools-"


def fingerprint(extra_tools: Iterable[str] = ()) -> str:
    """The key of the current code's tool listing."""
    digest = hashlib.sha256()
    for part in (sys.version, version("mcp"), version("pydantic"), *sorted(extra_tools)):
        digest.update(part.encode() + b"\0")
    for package in PACKAGES:
        for path in sorted((SOURCE_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(SOURCE_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def load(directory: Path, key: str) -> list[Tool] | None:
    """The stored listing for ``key``, or None when there is none (or it does not parse)."""
    path = directory / f"{PREFIX}{key}.json"
    try:
        return [Tool.model_validate(item) for item in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, ValidationError):
        return None


def save(directory: Path, key: str, tools: list[Tool]) -> None:
    """Store the listing for ``key`` and remove listings of older code; best effort."""
    data = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob(f"{PREFIX}*.json"):
            old.unlink(missing_ok=True)
        temporary = directory / f".{PREFIX}{key}.json.tmp"
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(directory / f"{PREFIX}{key}.json")
    except OSError:
        logger.debug("tool listing not stored in %s", directory, exc_info=True)
