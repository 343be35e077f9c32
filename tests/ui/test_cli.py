"""`buttress ui` as a command: it serves a project no `buttress serve` owns (and an agent's serve started
later attaches to it), `--login` prints a fresh sign-in link for the running one, and the errors say
what to do."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from mcp_server.channel import socket_path
from mcp_server.cli import build_parser
from mcp_server.demo import SLOT
from runtime.boundary.policy import add_agent
from tests.mcp_server.helpers import source_env
from tests.ui.conftest import agent_over_stdio, buttress, control_room, make_project

SERVE = (sys.executable, "-m", "mcp_server", "serve")
BESIDE = re.compile(r"(http://127\.0\.0\.1:\d+)/ui/login\?token=\S+")


def test_the_control_room_owns_a_project_nobody_serves_and_sees_an_agent_attach_and_deploy(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "shop")
    with control_room(project) as room, httpx2.Client(base_url=room.base, follow_redirects=False) as browser:
        assert browser.get(room.login).status_code == 303
        assert browser.get("/").status_code == 200
        assert browser.get("/live").json()["version"] == 0
        assert socket_path(project / "app.duckdb").exists()  # it serves the project's other processes
        with agent_over_stdio(project) as agent:  # the agent's `buttress serve` attaches to the control room
            assert agent.ship([{"op": "add_entity", "entity": SLOT}]) == 1
        deadline = time.monotonic() + 10
        while browser.get("/live").json()["version"] != 1:
            assert time.monotonic() < deadline, "the deploy never showed"
            time.sleep(0.1)
        assert 'Version <strong id="overview-version">1</strong>' in browser.get("/").text

        fresh = buttress("ui", "--login", "--project", str(project))
        assert fresh.returncode == 0, fresh.stderr
        link = fresh.stdout.strip()
        assert link.startswith(f"{room.base}/login?token=")
        with httpx2.Client(follow_redirects=False) as second:
            assert second.get(link).status_code == 303
            assert second.get(link).status_code == 401  # once only
    assert "Traceback" not in room.errors()


def test_login_without_a_running_control_room_says_how_to_start_one(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop")
    done = buttress("ui", "--login", "--project", str(project))
    assert done.returncode == 1
    assert "error [not_found]" in done.stderr and "buttress ui --project" in done.stderr


def test_a_port_in_use_is_refused_with_a_hint(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = buttress("ui", "--project", str(project), "--port", str(port))
    assert done.returncode == 1
    assert "error [config.invalid]" in done.stderr and "--port" in done.stderr


def test_ui_takes_the_shared_project_option_and_a_port() -> None:
    args = build_parser().parse_args(["ui", "--project", "/p", "--port", "0"])
    assert (args.project, args.port, args.login) == ("/p", 0, False)
    assert build_parser().parse_args(["ui"]).port == 8766
    assert build_parser().parse_args(["serve", "--http", "--ui"]).ui is True


def test_serve_http_ui_serves_the_control_room_beside_mcp_and_an_agents_token_opens_neither_page_nor_act(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "shop")
    token = add_agent(project / "buttress.toml", "web-agent", "developer")
    log = tmp_path / "serve.log"
    with log.open("w", encoding="utf-8") as errors:
        process = subprocess.Popen(
            [*SERVE, "--project", str(project), "--http", "--ui", "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **source_env()},
        )
    try:
        deadline = time.monotonic() + 60
        while (found := BESIDE.search(log.read_text(encoding="utf-8"))) is None:
            assert process.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, f"no sign-in link: {log.read_text(encoding='utf-8')}"
            time.sleep(0.1)
        origin, link = found.group(1), found.group(0)
        bearer = {"Authorization": f"Bearer {token}"}
        with httpx2.Client(base_url=origin, follow_redirects=False) as agent:
            assert agent.get("/ui/", headers=bearer).status_code == 401
            assert agent.get("/ui/audit", headers=bearer).status_code == 401
            assert agent.post("/ui/act/verify_audit", headers=bearer, data={"csrf": "x"}).status_code == 401
            assert agent.post("/mcp", json={}, headers={"Accept": "application/json"}).status_code == 401
        with httpx2.Client(base_url=origin, follow_redirects=False) as browser:
            signed = browser.get(link)
            assert signed.status_code == 303 and signed.headers["location"] == "/ui/"
            overview = browser.get("/ui/")
            assert overview.status_code == 200 and 'href="/ui/workflows"' in overview.text
            assert browser.get("/ui/live").json()["version"] == 0
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert "Traceback" not in log.read_text(encoding="utf-8")


def test_serve_ui_without_http_says_what_to_run(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop")
    done = buttress("serve", "--project", str(project), "--ui")
    assert done.returncode == 1
    assert "error [config.invalid]" in done.stderr and "--http" in done.stderr
