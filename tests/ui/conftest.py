"""Fixtures for the control room's end-to-end tests: a project made with `buttress init`, the real
`buttress ui` as a subprocess, an agent speaking MCP over stdio to `buttress serve`, and a headless
Chromium driven by Selenium (one Chromium per session, one of the others per module)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client, StdioServerParameters

from tests.mcp_server.helpers import call, error_of, serve_command, ship, source_env

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")


def buttress(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one `buttress` command in a subprocess (this checkout, the test session's operator secret)."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **source_env()},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def make_project(folder: Path, agent: str = "claude") -> Path:
    """A project created by `buttress init`, as an operator creates one (the command, in this process)."""
    from mcp_server.cli import main

    assert main(["init", str(folder), "--agent", agent]) == 0
    return folder


@dataclass
class ControlRoomProcess:
    """A running `buttress ui`: its address, the one-time sign-in link it printed, its log."""

    process: subprocess.Popen[str]
    base: str
    login: str
    log: Path

    def errors(self) -> str:
        """What the process wrote on stderr so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def control_room(project: Path) -> Iterator[ControlRoomProcess]:
    """`buttress ui --port 0` on ``project``, until the block ends; its sign-in link read from its output."""
    log = project.parent / f"{project.name}-ui.log"
    with log.open("w", encoding="utf-8") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_server", "ui", "--project", str(project), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **source_env()},
        )
    try:
        found = _read_link(process, log, timeout=60)
        yield ControlRoomProcess(process, found.group(1), found.group(0), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_link(process: subprocess.Popen[str], log: Path, *, timeout: float) -> re.Match[str]:
    """The sign-in link from the process's output (read by a thread: a pipe's reads block)."""
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                raise AssertionError(f"buttress ui exited: {seen}{log.read_text()}") from None
            continue
        seen += line
        found = LINK.search(line)
        if found:
            return found
    raise AssertionError(f"buttress ui printed no sign-in link within {timeout} s: {seen}")


class Agent:
    """An agent acting over real MCP: the SDK client, over stdio, talking to `buttress serve`."""

    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self._portal = portal
        self._client = client

    def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured result."""
        return self._portal.call(lambda: call(self._client, tool, **arguments))

    def refused(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must fail; its structured error."""
        return error_of(self._portal.call(lambda: self._client.call_tool(tool, arguments)))

    def ship(self, operations: list[dict[str, Any]]) -> int:
        """Propose, dry-run and deploy (no approval needed); the new version."""
        return self._portal.call(lambda: ship(self._client, operations))


@contextmanager
def agent_over_stdio(project: Path) -> Iterator[Agent]:
    """The project's agent, connected to its own `buttress serve` (with the demo's seeding tool)."""
    command, *args = serve_command(project, "--demo-seed")
    parameters = StdioServerParameters(command=command, args=args, env=source_env())
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(parameters)) as client:
        agent = Agent(portal, client)
        agent.call("describe_app")  # the server has opened (or attached to) the project
        yield agent


def page_path(path: str) -> str:
    """A page's route with sample values for its parameters (``/proposals/p1``, ``/workflows/runs/r1``)."""
    return path.replace("{proposal_id}", "p1").replace("{run_id:path}", "r1")


def browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver: ``BUTTRESS_CHROMIUM`` / ``BUTTRESS_CHROMEDRIVER``, else Debian's."""
    return (
        os.environ.get("BUTTRESS_CHROMIUM") or "/usr/bin/chromium",
        os.environ.get("BUTTRESS_CHROMEDRIVER") or "/usr/bin/chromedriver",
    )


def require_browser() -> tuple[str, str]:
    """The browser and its driver, or skip (locally) / fail (in CI) when either is missing."""
    chromium, driver = browser_paths()
    missing = [path for path in (chromium, driver) if not Path(path).is_file()]
    if missing:
        message = f"the browser tests need Chromium and chromedriver; missing: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (set BUTTRESS_CHROMIUM / BUTTRESS_CHROMEDRIVER)")
        pytest.skip(message)
    return chromium, driver


def screenshot_folder() -> Path:
    """Where page screenshots go: ``$BUTTRESS_SCREENSHOTS``, else ``.screenshots/ui`` (ignored by git)."""
    folder = Path(os.environ.get("BUTTRESS_SCREENSHOTS") or ROOT / ".screenshots" / "ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module."""
    binary, driver_path = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


Shoot = Callable[[str], None]
