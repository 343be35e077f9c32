"""Fault injection: SIGKILL the real server at named or random steps. The reference agents
reconnect and retry (idempotency keys where a retry could act twice) and score the same as
without faults; a call that is not safe to resend is handed back to the script."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.evals import scenario as scenarios
from mcp_server.evals.faults import FaultPlan
from mcp_server.evals.runner import AgentChoice, Options, Transport, run
from mcp_server.evals.scorecard import ScenarioResult, table
from runtime.errors import ButtressError

SEED = 7


def verdicts(result: ScenarioResult) -> list[tuple[str, bool]]:
    return [(check.id, check.passed) for check in result.runs[0].checks]


def scored(scenario: str, *, transport: Transport = "stdio", faults: tuple[str, ...] = ()) -> ScenarioResult:
    options = Options(transport=transport, faults=faults, seed=SEED)
    card = run(scenarios.resolve([scenario]), options)
    return card.scenarios[0]


def test_kill_at_random_steps_is_drawn_from_the_seed() -> None:
    first = FaultPlan.of(["kill@random", "kill@random"], seed=SEED, horizon=20)
    again = FaultPlan.of(["kill@random", "kill@random"], seed=SEED, horizon=20)
    assert first.kills == again.kills
    assert len({k.step for k in first.kills}) == 2


def test_concurrent_reference_scores_the_same_with_the_server_killed_at_random_steps() -> None:
    calm = scored("double-booking")
    killed = scored("double-booking", faults=("kill@random", "kill@random", "kill@random"))
    assert calm.passed and killed.passed
    assert verdicts(killed) == verdicts(calm)
    run_ = killed.runs[0]
    assert len(run_.faults) == 3 and all(f.fired and f.killed == 1 and f.recovered for f in run_.faults)
    # each kill takes the project's owner (the sessions' servers attach to the next one): the calls
    # under the kills were answered again, with nothing lost
    assert run_.server_starts >= calm.runs[0].server_starts


def test_reference_over_http_scores_the_same_with_the_server_killed_at_random_steps() -> None:
    calm = scored("split-field", transport="http")
    killed = scored("split-field", transport="http", faults=("kill@random", "kill@random"))
    assert calm.passed and killed.passed
    assert verdicts(killed) == verdicts(calm)
    assert killed.runs[0].faults and killed.runs[0].server_starts > 1


def test_a_deploy_whose_answer_is_lost_is_recognised_as_applied() -> None:
    result = scored("rename-field", faults=("kill@deploy:after",))
    run_ = result.runs[0]
    assert result.passed, [c for c in run_.checks if not c.passed]
    assert [(f.tool, f.when, f.recovered) for f in run_.faults] == [("deploy", "after", True)]
    assert run_.refusals.get("deploy.already_applied") == 1  # the retry, answered after the restart
    assert run_.tool_calls["deploy"] == 2


def test_a_lost_call_without_idempotency_key_is_handed_back_to_the_script(example: Path) -> None:
    (example / "agents" / "reference.py").write_text(
        "async def run(agent):\n"
        "    await agent.ship([{'op': 'add_field', 'entity': 'task', 'field': "
        "{'name': 'done', 'type': 'boolean', 'default': False}}])\n"
        "    await agent.call('app_add_task', id=3, title='lost answer')\n",
        encoding="utf-8",
    )
    card = run([scenarios.load(example)], Options(faults=("kill@app_add_task:after",)))
    run_ = card.scenarios[0].runs[0]
    assert run_.agent_error is not None and "not retried by itself" in run_.agent_error
    assert run_.tool_calls["run_action"] == 1  # it committed once; nobody sent it again


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("kill@0", "steps count from 1"),
        ("kill@deploy#0", "a tool's calls count from 1"),
        ("kill@frobnicate", "the server has no tool 'frobnicate'"),
    ],
)
@pytest.mark.parametrize(
    "agent", [AgentChoice(), AgentChoice(script=None, command="true")], ids=["scripted", "command"]
)
def test_a_fault_that_can_never_fire_is_refused_before_any_run(
    fault: str, why: str, agent: AgentChoice
) -> None:
    with pytest.raises(ButtressError) as caught:
        run(scenarios.resolve(["rename-field"]), Options(agent=agent, faults=(fault,)))
    assert caught.value.code == "config.invalid"
    assert caught.value.message == f"fault {fault!r} can never fire: {why}"


def test_a_kill_the_agent_never_reaches_fails_the_run_and_says_so() -> None:
    card = run(
        scenarios.resolve(["rename-field"]),
        Options(transport="memory", faults=("kill@50", "kill@app_anything")),
    )
    run_ = card.scenarios[0].runs[0]
    assert all(c.passed for c in run_.checks) and not run_.passed and card.exit_code == 1
    assert [(f.fired, f.message) for f in run_.faults] == [
        (False, "did not fire: it was due at call 50, and the agent made 5 call(s)"),
        (False, "did not fire: it was due at call 1 of app_anything, and the agent made 5 call(s)"),
    ]
    assert "FAULT NOT FIRED rename-field run 1 kill@50: did not fire" in table(card)


def test_the_in_process_transport_is_refused_for_an_agent_command() -> None:
    options = Options(agent=AgentChoice(script=None, command="true"), transport="memory")
    with pytest.raises(ButtressError) as caught:
        run(scenarios.resolve(["rename-field"]), options)
    assert caught.value.code == "config.invalid" and "--transport stdio or http" in caught.value.hint


def test_a_malformed_fault_is_refused() -> None:
    with pytest.raises(ButtressError) as caught:
        run(scenarios.resolve(["rename-field"]), Options(faults=("crash@3",)))
    assert caught.value.code == "config.invalid" and "kill@STEP" in caught.value.message
