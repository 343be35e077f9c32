"""``buttress runs`` and ``buttress effects`` through ``main([...])``: a command that moves a run acts
through the process that owns the project — the project daemon, which the command starts when nothing
owns the project, or a server that does — and says that the run acts on it at once (the owner's
scheduler runs it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_server import project as projects
from mcp_server.cli import main
from runtime.runtime import Runtime
from tests.fakes.provider import State, serve
from tests.mcp_server.helpers import configure

ATTACHED = "the server that owns the project advances it now"

OPERATIONS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "purchase",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "text"}, {"name": "charge", "type": "text", "nullable": True}],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "paid",
            "kind": "mutation",
            "params": [{"name": "id", "type": "text"}, {"name": "charge", "type": "text"}],
            "statements": ["insert into purchase values ($id, $charge)"],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "checkout",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {
                    "name": "charge",
                    "kind": "effect",
                    "connector": "payments",
                    "args": {"customer": "c1", "amount": 5, "order": {"from": "input.id"}},
                    "retry": {"attempts": 1, "backoff_s": 0.01},
                },
                {
                    "name": "record",
                    "kind": "action",
                    "action": "paid",
                    "args": {"id": {"from": "input.id"}, "charge": {"from": "steps.charge.id"}},
                },
            ],
        },
    },
]


@pytest.fixture
def provider() -> Iterator[State]:
    """A payment provider that answers 503 to everything: every charge's outcome is unknown."""
    state = State(seed=1, fail_rate=1.0, drop_rate=0.0, decline_over=1000)
    server = serve(0, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(tmp_path: Path, provider: State) -> Path:
    """A project with the checkout workflow deployed and one run blocked on an unknown charge."""
    root = tmp_path / "shop"
    assert main(["init", str(root)]) == 0
    configure(root, connectors={"payments": {"url": f"{provider.url}/charges", "timeout_s": 2}})  # type: ignore[attr-defined]
    runtime = projects.Project.load(root).open()
    try:
        proposal = runtime.propose(OPERATIONS)
        assert runtime.dry_run(proposal.proposal_id).passed
        runtime.deploy(proposal.proposal_id)
        runtime.start_workflow("checkout", {"id": "p1"}, run_id="p1")
        settle(runtime)
        assert runtime.get_run("p1").status == "blocked"
    finally:
        runtime.close()
    return root


def settle(runtime: Runtime, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runtime.scheduler.drain()
        if all(r.status in {"blocked", "waiting"} for r in runtime.list_runs(status="active")):
            return
        time.sleep(0.02)


def unknown_effect(capsys: pytest.CaptureFixture[str], project: Path) -> str:
    assert main(["effects", "list", "--state", "unknown", "--project", str(project)]) == 0
    return capsys.readouterr().out.split()[0]


def completed(runtime: Any, run_id: str, seconds: float = 30.0) -> str:
    deadline = time.monotonic() + seconds
    while runtime.get_run(run_id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    return str(runtime.get_run(run_id).status)


def test_resolving_an_effect_with_no_server_starts_the_daemon_which_advances_the_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    effect = unknown_effect(capsys, project)
    args = ["effects", "resolve", effect, "--outcome", "succeeded", "--response", '{"id": "ch_1"}', "--yes"]
    assert main([*args, "--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert f"effect {effect} is resolved" in out and ATTACHED in out
    runtime, _ = projects.connect(projects.Project.load(project))  # attached to the daemon
    try:
        assert completed(runtime, "p1") == "completed"  # what the message said
        assert runtime.query("select * from purchase").rows == [["p1", "ch_1"]]
    finally:
        runtime.close()


def test_resolving_an_effect_while_a_server_owns_the_project_says_it_advances_now(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    effect = unknown_effect(capsys, project)
    owner, channel = projects.connect(projects.Project.load(project), own="http")
    try:
        args = ["effects", "resolve", effect, "--outcome", "succeeded", "--response", '{"id": "ch_1"}']
        assert main([*args, "--yes", "--project", str(project)]) == 0
        assert ATTACHED in capsys.readouterr().out
        assert completed(owner, "p1") == "completed"
        assert main(["runs", "start", "checkout", "--arg", "id=p2", "--project", str(project)]) == 0
        assert ATTACHED in capsys.readouterr().out
    finally:
        assert channel is not None
        channel.close()
        owner.close()


def test_retrying_a_run_with_no_server_starts_the_daemon_which_moves_it(
    project: Path, provider: State, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = provider.requests
    assert main(["runs", "retry", "p1", "--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert "retried at its step" in out and ATTACHED in out
    deadline = time.monotonic() + 30  # the daemon charges again; the provider still fails
    while provider.requests == asked and time.monotonic() < deadline:
        time.sleep(0.05)
    assert provider.requests > asked
