"""The operator's commands at their edges, through ``main([...])`` on real project directories: tokens
that keep an agent's entry, ``init`` on an existing project, proposals' dry-run states, ``--json``,
``--actor`` on operator-only commands, a reader that goes away, and what a resolution tells."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from mcp_server import project as projects
from mcp_server.channel import socket_path
from mcp_server.cli import main
from runtime.boundary.policy import AgentPolicy, load
from runtime.errors import ButtressError
from tests.mcp_server.helpers import source_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "booking"


def buttress(capsys: pytest.CaptureFixture[str], *args: str | Path, expect: int = 0) -> tuple[str, str]:
    """``buttress ARGS`` in this process; its stdout and stderr (the exit code asserted)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == expect, out + err
    return out, err


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    root = tmp_path / "shop"
    buttress(capsys, "init", root)
    return root


# ------------------------------------------------------------------------------------------ token


def _sample(name: str, annotation: Any) -> Any:
    """A value for an ``AgentPolicy`` key that differs from its default (by the key's type)."""
    if name == "role":
        return "reader"  # a role that exists, and not the default `buttress token` gives
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _sample(name, args[0])
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return ["book"]
    if annotation is str:
        return f"kept-{name}"
    if annotation is bool:
        return True
    if annotation in (int, float):
        return 7
    raise AssertionError(f"add a sample value for AgentPolicy.{name} ({annotation!r}) to this test")


def test_rotating_a_token_keeps_every_key_of_the_agent_entry(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project / "buttress.toml"
    buttress(capsys, "token", "ci-bot", "--role", "reader", "--project", project)
    hints = typing.get_type_hints(AgentPolicy)
    document = tomlkit.parse(config.read_text())
    entry = document["agents"]["ci-bot"]  # type: ignore[index]
    for name in AgentPolicy.model_fields:
        if name != "token_sha256":
            entry[name] = _sample(name, hints[name])  # type: ignore[index]
    config.write_text(tomlkit.dumps(document))
    before = load(config).agents["ci-bot"]
    out, _ = buttress(capsys, "token", "ci-bot", "--rotate", "--project", project)
    after = load(config).agents["ci-bot"]
    assert after.token_sha256 != before.token_sha256
    assert after.model_dump(exclude={"token_sha256"}) == before.model_dump(exclude={"token_sha256"})
    assert before.role == "reader" and "agent ci-bot (reader) token replaced" in out
    assert "role changed" not in out


def test_a_role_changes_only_when_asked_and_the_change_is_printed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buttress(capsys, "token", "ci-bot", "--role", "reader", "--project", project)
    out, _ = buttress(capsys, "token", "ci-bot", "--rotate", "--role", "maintainer", "--project", project)
    assert "role changed: reader -> maintainer" in out
    assert load(project / "buttress.toml").agents["ci-bot"].role == "maintainer"


def test_a_new_agent_gets_the_developer_role_unless_told_and_token_speaks_json(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = buttress(capsys, "token", "web", "--json", "--project", project)
    answer = json.loads(out)
    assert answer["agent"] == "web" and answer["role"] == "developer" and answer["previous_role"] is None
    assert answer["rotated"] is False and len(answer["token"]) > 30
    policy = load(project / "buttress.toml")
    assert policy.agent_for_token(answer["token"]) == "web"
    out, _ = buttress(capsys, "token", "web", "--rotate", "--role", "reader", "--json", "--project", project)
    rotated = json.loads(out)
    assert (rotated["previous_role"], rotated["role"], rotated["rotated"]) == ("developer", "reader", True)


# ------------------------------------------------------------------------------------------- init


def test_init_on_an_existing_project_says_so_and_changes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = (project / "buttress.toml").read_bytes()
    database = (project / "app.duckdb").stat()
    out, _ = buttress(capsys, "init", project)
    assert "is already a project: nothing changed" in out and "initialised" not in out
    _, err = buttress(capsys, "init", project, "--agent", "someone-else", expect=1)
    assert err.startswith("error [config.invalid]") and "serving agent 'agent'" in err
    assert (project / "buttress.toml").read_bytes() == config
    assert (project / "app.duckdb").stat().st_mtime_ns == database.st_mtime_ns


def test_init_takes_the_directory_as_project_like_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = buttress(capsys, "init", "--project", tmp_path / "a", "--agent", "claude")
    assert f"initialised {tmp_path / 'a'}" in out
    assert projects.Project.load(tmp_path / "a").agent == "claude"
    _, err = buttress(capsys, "init", tmp_path / "b", "--project", tmp_path / "c", expect=1)
    assert err.startswith("error [config.invalid]: two directories given")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_the_generated_config_names_the_socket_the_owner_listens_on(project: Path) -> None:
    database = projects.Project.load(project).database
    socket = socket_path(database)
    if socket.parent.parent == project:  # else the path was too long for a socket: one in /tmp is used
        assert str(socket.relative_to(project)) in (project / "buttress.toml").read_text()
    text = (project / "buttress.toml").read_text()
    assert f".buttress/{database.name}.sock" in text
    assert ".buttress/buttress.sock" not in text


# -------------------------------------------------------------------------------------- proposals


def _propose(capsys: pytest.CaptureFixture[str], project: Path, operations: Any, tmp_path: Path) -> str:
    path = tmp_path / f"ops-{len(list(tmp_path.glob('ops-*')))}.json"
    path.write_text(json.dumps(operations))
    out, _ = buttress(capsys, "propose", "--project", project, path, "--json")
    return str(json.loads(out)["proposal_id"])


ADD_SLOT = {
    "op": "add_action",
    "action": {
        "name": "add_slot",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}, {"name": "capacity", "type": "integer"}],
        "statements": ["insert into slot (id, starts_at, capacity) values ($id, now(), $capacity)"],
    },
}
NOTE = {"op": "add_field", "entity": "booking", "field": {"name": "remark", "type": "text", "nullable": True}}


def _ship(capsys: pytest.CaptureFixture[str], project: Path, operations: Any, tmp_path: Path) -> str:
    pid = _propose(capsys, project, operations, tmp_path)
    buttress(capsys, "dry-run", "--project", project, pid)
    buttress(capsys, "deploy", "--project", project, pid)
    return pid


def _dry_runs(capsys: pytest.CaptureFixture[str], project: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each proposal's line of ``buttress proposals``, and its ``dry_run`` in ``--json``."""
    lines = buttress(capsys, "proposals", "--project", project)[0].splitlines()
    listed = json.loads(buttress(capsys, "proposals", "--project", project, "--json")[0])
    return {line.split()[0]: line for line in lines}, {p["proposal_id"]: p["dry_run"] for p in listed}


def test_proposals_say_where_each_dry_run_stands(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert buttress(capsys, "proposals", "--project", project)[0].strip() == "no proposals"
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    _ship(capsys, project, [*entities, ADD_SLOT], tmp_path)
    buttress(capsys, "run", "add_slot", "--arg", "id=1", "--arg", "capacity=600", "--project", project)
    passed = _propose(capsys, project, [NOTE], tmp_path)
    buttress(capsys, "dry-run", "--project", project, passed)
    never = _propose(capsys, project, [NOTE], tmp_path)
    rules = json.loads((EXAMPLES / "room-and-rules.json").read_text())["operations"]
    failed = _propose(capsys, project, rules, tmp_path)  # its invariant: no slot above 500 seats
    buttress(capsys, "dry-run", "--project", project, failed, expect=1)
    lines, states = _dry_runs(capsys, project)
    assert "dry-run passed" in lines[passed] and "dry-run failed" in lines[failed]
    assert "not dry-run" in lines[never] and "pending" in lines[never]
    assert (states[passed], states[never], states[failed]) == ("passed", "not_dry_run", "failed")
    buttress(capsys, "deploy", "--project", project, passed)
    lines, states = _dry_runs(capsys, project)
    assert "deployed as 2" in lines[passed] and states[passed] == "passed"
    assert "stale" in lines[never] and "not dry-run" in lines[never] and "dry-run failed" in lines[failed]
    assert buttress(capsys, "proposals", "--project", project, "--pending")[0].strip() == (
        "no pending proposals (on the current version)"
    )
    described = buttress(capsys, "describe", "--project", project)[0]
    assert "pending proposal" not in described


def test_a_passed_dry_run_whose_base_moved_on_is_stale(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    first, second = (
        _propose(capsys, project, entities, tmp_path),
        _propose(capsys, project, entities, tmp_path),
    )
    buttress(capsys, "dry-run", "--project", project, first)
    buttress(capsys, "dry-run", "--project", project, second)
    buttress(capsys, "deploy", "--project", project, first)
    lines, states = _dry_runs(capsys, project)
    assert states == {first: "passed", second: "stale"} and "dry-run stale" in lines[second]


# -------------------------------------------------------------------- approvals and operator actors


def _waiting_request(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An agent's hazardous deploy, waiting for the operator: its request id."""
    _ship(capsys, project, json.loads((EXAMPLES / "entities.json").read_text()), tmp_path)
    runtime = projects.Project.load(project).open()
    try:
        drop = runtime.propose(json.loads((EXAMPLES / "destructive-change.json").read_text()), actor="agent")
        assert runtime.dry_run(drop.proposal_id, actor="agent").passed
        with pytest.raises(ButtressError) as caught:
            runtime.deploy(drop.proposal_id, actor="agent")
    finally:
        runtime.close()
    assert caught.value.code == "deploy.needs_approval"
    return str(caught.value.details["approval_request"])


def test_approve_speaks_json_and_an_agent_cannot_be_named_as_the_approver(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _waiting_request(project, tmp_path, capsys)
    _, err = buttress(capsys, "approve", request, "--project", project, "--yes", "--actor", "agent", expect=1)
    assert err.startswith("error [policy.denied]: `buttress approve` is the operator's command")
    assert not list((project / ".buttress" / "approvals").glob("*.json"))
    out, _ = buttress(capsys, "approve", request, "--project", project, "--yes", "--json")
    answer = json.loads(out)
    assert answer["approved"] is True and answer["approved_by"] == "operator" and answer["request"] == request
    assert answer["requested_by"] == "agent" and {h["code"] for h in answer["hazards"]} >= {"data.drop_field"}
    filed = json.loads((project / ".buttress" / "approvals" / f"{request}.json").read_text())
    assert filed["approved_by"] == "operator"


def test_approve_refuses_a_request_whose_plan_can_no_longer_deploy_before_asking(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _waiting_request(project, tmp_path, capsys)
    moved = tmp_path / "moved.json"
    moved.write_text(
        json.dumps(
            [
                {
                    "op": "add_entity",
                    "entity": {
                        "name": "note",
                        "primary_key": ["id"],
                        "fields": [{"name": "id", "type": "integer"}],
                    },
                }
            ]
        )
    )
    _ship(capsys, project, json.loads(moved.read_text()), tmp_path)  # the version moves on under the request
    _, err = buttress(capsys, "approve", request, "--project", project, "--yes", expect=1)
    assert err.startswith("error [approval.stale]")
    assert "approve this exact plan" not in err
    assert not list((project / ".buttress" / "approvals").glob("*.json"))


@pytest.mark.parametrize(
    "command",
    [
        ["finalize", "--before", "1", "--yes"],
        ["runs", "retry", "r1"],
        ["effects", "resolve", "e1", "--outcome", "succeeded", "--yes"],
        ["audit", "reanchor", "--yes"],
    ],
    ids=lambda c: " ".join(c[:2]) if c[0] in {"runs", "effects", "audit"} else c[0],
)
def test_operator_only_commands_refuse_an_agent_as_actor(
    project: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    _, err = buttress(capsys, *command, "--project", project, "--actor", "claude", expect=1)
    assert "is the operator's command: it acts as the operator, not as 'claude'" in err
    assert err.startswith("error [policy.denied]")
    audit = json.loads(buttress(capsys, "audit", "show", "--project", project, "--json")[0])
    assert all(entry["actor"] == "operator" for entry in audit)


def test_commands_acting_for_an_agent_still_take_actor(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = _propose(capsys, project, json.loads((EXAMPLES / "entities.json").read_text()), tmp_path)
    buttress(capsys, "dry-run", "--project", project, pid, "--actor", "agent")
    audit = json.loads(buttress(capsys, "audit", "show", "--project", project, "--json")[0])
    assert ("agent", "dry_run") in {(e["actor"], e["operation"]) for e in audit}


# ---------------------------------------------------------------------------------------- output


def test_a_reader_that_goes_away_ends_the_command_quietly(project: Path) -> None:
    sql = "select repeat('x', 1000) as filler from range(1000)"  # ~1 MB: more than a pipe holds
    command = [sys.executable, "-m", "mcp_server", "query", sql, "--project", str(project)]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=source_env(),
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()  # `| head -1`
        process.stdout.close()
        code = process.wait(timeout=120)
        err = process.stderr.read().decode()
    assert code == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
