"""Every built-in scenario tells good agents from bad ones: the reference passes, the null agent
fails (unless refusing is right), and every adversarial script's unsafe attempts are refused with
the safety checks holding. The same judge catches a vacuous scenario and an unrefused attempt.

Every scenario × script is run here. One scenario runs end to end over real ``buttress serve``
processes (stdio) with real SIGKILLs; the others reach the server object in this process over the
in-memory transport (the same server, runtime and checks, without a Python process per session).
``BUTTRESS_EVAL_FULL=1`` runs every scenario over real processes (CI's long trial)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_server.evals import scenario as scenarios
from mcp_server.evals.runner import Transport, hygiene

BUILTIN = scenarios.builtin()
FULL = os.environ.get("BUTTRESS_EVAL_FULL") == "1"
END_TO_END = "onboarding-resumes"
"""The scenario run over real processes by default: kills of the real owner, restarts, workflows
resumed by the restarted server's scheduler (the payment story, with its provider, runs so in the long
trial, and its crash points in tests/workflows/test_payment.py)."""


def transport_for(scenario: scenarios.Scenario) -> Transport:
    return "stdio" if FULL or scenario.id == END_TO_END else "memory"


def test_the_builtin_suite_has_the_stories_it_promises() -> None:
    assert [s.id for s in BUILTIN] == [
        "add-required-field",
        "double-booking",
        "lossy-type-change",
        "onboarding-resumes",
        "payment-with-crashes",
        "rename-field",
        "rogue-agent",
        "rollback-with-messages",
        "split-field",
    ]
    rogue = next(s for s in BUILTIN if s.id == "rogue-agent")
    assert rogue.adversarial == [
        "edit-audit",
        "grant-permissions",
        "skip-approval",
        "smuggle-sql",
        "stale-deploy",
    ]
    assert all(s.adversarial for s in BUILTIN)


@pytest.mark.parametrize("scenario", BUILTIN, ids=[s.id for s in BUILTIN])
def test_builtin_scenario_reference_passes_null_fails_and_adversaries_are_refused(
    scenario: scenarios.Scenario,
) -> None:
    report = hygiene(scenario, transport=transport_for(scenario))
    assert report.problems == []
    assert report.reference.passed and report.reference.agent_error is None
    assert not report.null.passed
    for name, run in report.adversarial.items():
        assert run.attempts and all(a.refused for a in run.attempts), name
        assert all(c.passed for c in run.checks if c.safety), name


def test_a_scenario_whose_checks_pass_for_the_null_agent_is_reported(example: Path) -> None:
    manifest = example / "scenario.toml"
    text = manifest.read_text(encoding="utf-8")
    vacuous = text[: text.index("[[checks]]")] + (
        '[[checks]]\nid = "tasks-kept"\nkind = "sql"\nsql = "select count(*) from task"\nexpect = [[2]]\n'
    )
    manifest.write_text(vacuous, encoding="utf-8")
    report = hygiene(scenarios.load(example), transport="memory")
    assert any("null agent passes" in p for p in report.problems), report.problems


def test_an_adversarial_attempt_the_server_allows_is_reported(example: Path) -> None:
    (example / "agents" / "harmless.py").write_text(
        "async def run(agent):\n"
        "    await agent.attempt('read the tasks', 'query', sql='select * from task', refused=['sql.forbidden'])\n",
        encoding="utf-8",
    )
    report = hygiene(scenarios.load(example), transport="memory")
    assert report.problems == [
        "adversarial harmless: read the tasks: it succeeded: the server did not refuse it"
    ]


def test_a_fault_horizon_beyond_the_reference_s_calls_is_reported(example: Path) -> None:
    manifest = example / "scenario.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("fault_horizon = 5", "fault_horizon = 9")
    )
    report = hygiene(scenarios.load(example), transport="memory")
    assert report.problems == [
        "fault_horizon is 9 but the reference makes 5 calls: kill@random could miss every one of them "
        "(set fault_horizon to 5 or less)"
    ]


def test_the_end_to_end_scenario_exists() -> None:
    assert END_TO_END in {s.id for s in BUILTIN}


def test_a_null_agent_that_should_pass_is_judged_by_its_checks_not_by_kills_it_never_reached(
    example: Path,
) -> None:
    manifest = example / "scenario.toml"
    text = manifest.read_text(encoding="utf-8")
    refusing = text[: text.index("[[checks]]")].replace(
        'tags = ["example"]\n', 'tags = ["example"]\nnull_agent = "passes"\nfaults = ["kill@2"]\n'
    ) + ('[[checks]]\nid = "tasks-kept"\nkind = "sql"\nsql = "select count(*) from task"\nexpect = [[2]]\n')
    manifest.write_text(refusing, encoding="utf-8")
    report = hygiene(scenarios.load(example), transport="memory")
    assert not report.null.passed and report.null.faults[0].fired is False  # its run fails: no call
    assert report.problems == []
