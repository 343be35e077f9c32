"""Fixtures for the MCP server tests: a real runtime on a temporary DuckDB file and a server over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_server.demo import DEMO_TOOLS
from mcp_server.server import ButtressServer, build_server
from runtime.boundary.policy import ApprovalPolicy, Policy
from runtime.runtime import Runtime


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime with approvals off: these tests are about the tools. The defaults a new user gets
    (hazardous changes wait for `buttress approve`) are tested in test_approvals.py and test_stdio.py."""
    opened = Runtime.open(tmp_path / "app.duckdb", policy=Policy(approvals=ApprovalPolicy(severity="none")))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def server(runtime: Runtime) -> ButtressServer:
    """The server with every registered tool, plus the demo's row-seeding tool for test data."""
    return build_server(runtime, agent="test-agent", extra_tools=DEMO_TOOLS)
