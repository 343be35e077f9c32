"""The MCP conformance suite's server scenarios for what Buttress offers beyond tools, as a 2025-11-25
client sees them over streamable HTTP: completions, resource subscriptions, the logging level.

Uses ``$BUTTRESS_CONFORMANCE`` (the installed ``conformance`` command of
@modelcontextprotocol/conformance 0.1.16) run by ``$BUTTRESS_NODE`` (Node.js 22 or newer: the suite
needs it). ``.ci/run`` installs both from npm. Skips where they are not set and ``CI`` is unset;
under CI their absence fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.runtime import Runtime

SCENARIOS = ("completion-complete", "resources-subscribe", "resources-unsubscribe", "logging-set-level")


@pytest.fixture(scope="module")
def suite() -> list[str]:
    command, node = os.environ.get("BUTTRESS_CONFORMANCE"), os.environ.get("BUTTRESS_NODE")
    if not command or not node:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(
                "$BUTTRESS_CONFORMANCE and $BUTTRESS_NODE are required under CI (.ci/run installs them)"
            )
        pytest.skip("the MCP conformance suite is not installed (set CI=true to make this a failure)")
    return [node, command]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Buttress MCP server over streamable HTTP on 127.0.0.1 (the suite's client sends no token, so
    this one serves its agent without one, as a library user's server would)."""
    import uvicorn

    from mcp_server.server import build_server

    runtime = Runtime.open(Path(tmp_path_factory.mktemp("conformance")) / "app.duckdb")
    app = build_server(runtime, agent="local").streamable_http_app()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)
    listener.close()
    runtime.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_conformance_suite_passes(suite: list[str], url: str, scenario: str) -> None:
    done = subprocess.run(
        [*suite, "server", "--url", url, "--scenario", scenario],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", "npm_config_update_notifier": "false"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 failed" in done.stdout
