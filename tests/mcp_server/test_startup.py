"""A server with a stored tool listing answers tools/list before loading the SQL parser or the engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcp_server.server import store_listing

LIST_TOOLS = """
import sys, anyio
from mcp_server.server import build_server, _Unopened
server = build_server(_Unopened(), agent="a", listing_dir=__import__("pathlib").Path(sys.argv[1]))
tools = anyio.run(server.list_tools)
assert len(tools) == 12, [t.name for t in tools]
loaded = sorted(m for m in ("sqlglot", "duckdb", "tools.registry") if m in sys.modules)
assert not loaded, loaded
"""


def test_a_stored_listing_answers_without_loading_parser_or_engine(tmp_path: Path) -> None:
    store_listing(tmp_path)
    subprocess.run([sys.executable, "-c", LIST_TOOLS, str(tmp_path)], check=True)


def test_without_a_stored_listing_the_tools_load_at_start(tmp_path: Path) -> None:
    code = LIST_TOOLS.replace(
        "assert not loaded, loaded", "assert loaded == ['sqlglot', 'tools.registry'], loaded"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "empty")], check=True)
