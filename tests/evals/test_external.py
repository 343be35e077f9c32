"""External agents: a separate program using the MCP SDK, given the server in its environment —
over stdio (the command serving the project) and over HTTP (a URL and a bearer token)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from mcp_server.evals import scenario as scenarios
from mcp_server.evals.external import ENV_VARS
from mcp_server.evals.runner import AgentChoice, Options, Transport, run
from mcp_server.evals.scorecard import table
from tests.evals.conftest import ROOT

AGENT = ROOT / "examples" / "eval_agent.py"
RENAME = [
    {"tool": "describe_app"},
    {
        "tool": "propose_change",
        "arguments": {
            "base_version": "$version",
            "operations": [
                {"op": "rename_field", "entity": "customer", "field": "mail", "new_name": "email"},
                {
                    "op": "replace_view",
                    "view": {"name": "mailing_list", "sql": "select name, email as mail from customer"},
                },
                {
                    "op": "replace_action",
                    "action": {
                        "name": "add_customer",
                        "kind": "mutation",
                        "params": [
                            {"name": "id", "type": "integer"},
                            {"name": "name", "type": "text"},
                            {"name": "mail", "type": "text"},
                        ],
                        "statements": ["insert into customer (id, name, email) values ($id, $name, $mail)"],
                    },
                },
                {
                    "op": "replace_action",
                    "action": {
                        "name": "find_by_mail",
                        "kind": "query",
                        "params": [{"name": "mail", "type": "text"}],
                        "statements": ["select id, name from customer where email = $mail"],
                    },
                },
            ],
        },
    },
    {"tool": "dry_run", "arguments": {"proposal_id": "$proposal_id"}},
    {"tool": "deploy", "arguments": {"proposal_id": "$proposal_id"}},
]


def command(playbook: Path) -> str:
    return shlex.join([sys.executable, str(AGENT), str(playbook)])


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_an_external_sdk_agent_passes_a_builtin_scenario(tmp_path: Path, transport: Transport) -> None:
    playbook = tmp_path / "rename.json"
    playbook.write_text(json.dumps(RENAME), encoding="utf-8")
    options = Options(
        agent=AgentChoice(script=None, command=command(playbook)), transport=transport, keep=tmp_path
    )
    card = run(scenarios.resolve(["rename-field"]), options)
    result = card.scenarios[0].runs[0]
    assert card.exit_code == 0, [c for c in result.checks if not c.passed]
    assert result.agent_exit_code == 0 and result.agent_error is None
    assert result.tool_calls == {"deploy": 1, "describe_app": 1, "dry_run": 1, "propose": 1}
    log = (Path(str(result.directory)) / "agent.log").read_text(encoding="utf-8")
    assert log.splitlines()[-4:] == ["describe_app: ok", "propose_change: ok", "dry_run: ok", "deploy: ok"]
    assert card.agent == {
        "kind": "command",
        "name": command(playbook),
        "label": f"command: {command(playbook)}",
    }


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_agent_is_given_the_server_and_the_task_but_not_the_project(
    tmp_path: Path, transport: Transport
) -> None:
    dump = tmp_path / "env.json"
    script = f"import json, os; json.dump(dict(os.environ), open({str(dump)!r}, 'w'))"
    agent = AgentChoice(script=None, command=shlex.join([sys.executable, "-c", script]))
    card = run(scenarios.resolve(["rename-field"]), Options(agent=agent, transport=transport, keep=tmp_path))
    env = json.loads(dump.read_text(encoding="utf-8"))
    given = {name for name in ENV_VARS if name in env}
    both = set(ENV_VARS) - {"BUTTRESS_MCP_COMMAND", "BUTTRESS_MCP_URL", "BUTTRESS_MCP_TOKEN"}
    if transport == "stdio":
        assert given == both | {"BUTTRESS_MCP_COMMAND"}
        assert "serve --project" in env["BUTTRESS_MCP_COMMAND"]
        server = json.loads(Path(env["BUTTRESS_MCP_CONFIG"]).read_text())["mcpServers"]["buttress"]
        assert shlex.split(env["BUTTRESS_MCP_COMMAND"])[-len(server["args"]) - 1 :] == [
            server["command"],
            *server["args"],
        ]
    else:
        assert given == both | {"BUTTRESS_MCP_URL", "BUTTRESS_MCP_TOKEN"}
        assert env["BUTTRESS_MCP_URL"].startswith("http://127.0.0.1:")
        server = json.loads(Path(env["BUTTRESS_MCP_CONFIG"]).read_text())["mcpServers"]["buttress"]
        assert server["headers"] == {"Authorization": f"Bearer {env['BUTTRESS_MCP_TOKEN']}"}
    assert Path(env["BUTTRESS_EVAL_PROMPT"]).read_text() == scenarios.resolve(["rename-field"])[0].prompt
    assert env["BUTTRESS_EVAL_SCENARIO"] == "rename-field" and env["BUTTRESS_EVAL_RUN"] == "1"
    project = Path(str(card.scenarios[0].runs[0].directory)) / "project"
    assert not any(str(project) in value for name, value in env.items() if name.startswith("BUTTRESS_EVAL"))
    assert card.exit_code == 1  # it did nothing


def test_an_agent_command_that_fails_is_reported_with_its_exit_code_and_the_end_of_its_log() -> None:
    command = "echo 'looking for the tools'; echo 'no idea what to do' >&2; exit 3"
    card = run(
        scenarios.resolve(["add-required-field"]), Options(agent=AgentChoice(script=None, command=command))
    )
    result = card.scenarios[0].runs[0]
    assert (result.agent_exit_code, card.exit_code) == (3, 1)
    assert result.agent_error == (
        "the agent command exited with 3; the end of agent.log:\nlooking for the tools\nno idea what to do"
    )
    assert result.logs is None


def test_a_failing_agent_s_logs_are_kept_where_its_error_points(tmp_path: Path) -> None:
    options = Options(agent=AgentChoice(script=None, command="echo gave up; exit 2"), logs=tmp_path / "out")
    result = run(scenarios.resolve(["rename-field"]), options).scenarios[0].runs[0]
    kept = tmp_path / "out" / "runs" / "rename-field" / "command-1"
    assert result.agent_error == f"the agent command exited with 2 (see {kept / 'agent.log'})"
    assert result.logs == str(kept) and (kept / "agent.log").read_text() == "gave up\n"


def test_an_agent_command_out_of_time_is_stopped() -> None:
    options = Options(agent=AgentChoice(script=None, command="sleep 30"), timeout_s=0.5)
    card = run(scenarios.resolve(["add-required-field"]), options)
    result = card.scenarios[0].runs[0]
    assert result.agent_exit_code is None and "ran out of time" in str(result.agent_error)
    assert result.wall_time_s < 15


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_an_external_agent_recovers_from_kills_and_the_scorecard_says_so(
    tmp_path: Path, transport: Transport
) -> None:
    playbook = tmp_path / "rename.json"
    playbook.write_text(json.dumps(RENAME), encoding="utf-8")
    options = Options(
        agent=AgentChoice(script=None, command=command(playbook)),
        transport=transport,
        faults=("kill@2:before", "kill@deploy"),
        keep=tmp_path,
    )
    card = run(scenarios.resolve(["rename-field"]), options)
    result = card.scenarios[0].runs[0]
    assert card.exit_code == 0, [c for c in result.checks if not c.passed]
    assert [(f.fired, f.step, f.tool, f.when, f.killed, f.recovered) for f in result.faults] == [
        (True, 2, "propose_change", "before", 1, True),
        (True, 5, "deploy", "after", 1, True),
    ]
    assert result.server_starts >= 3 and result.steps == 7  # its own resends count as steps
    assert result.tool_calls["deploy"] == 2 and result.refusals == {"deploy.already_applied": 1}
    log = (Path(str(result.directory)) / "agent.log").read_text(encoding="utf-8").splitlines()
    assert "propose_change: connection lost (MCPError); reconnecting" in log
    assert log[-2:] == ["deploy: connection lost (MCPError); reconnecting", "deploy: ok"]
    assert "faults" in table(card) and "2/2" in table(card)


def test_a_scenario_s_own_faults_that_an_agent_never_reaches_fail_its_run() -> None:
    card = run(
        scenarios.resolve(["payment-with-crashes"]), Options(agent=AgentChoice(script=None, command="true"))
    )
    result = card.scenarios[0].runs[0]
    assert result.agent_exit_code == 0 and result.server_starts == 0
    assert [(f.spec.split(" ")[0], f.fired, f.recovered) for f in result.faults] == [
        ("kill@start_workflow#2:after", False, None),
        ("kill@random", False, None),
    ]
    assert "and the agent made 0 call(s)" in result.faults[0].message
    assert not result.passed
    text = table(card)
    assert "0/2" in text and "FAULT NOT FIRED payment-with-crashes run 1 kill@start_workflow#2:after" in text
