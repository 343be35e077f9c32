"""Every built-in scenario tells good agents from bad ones: the reference passes, the null agent
fails (unless refusing is right), and every adversarial script's unsafe attempts are refused with
the safety checks holding. The same judge catches a vacuous scenario and an unrefused attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.evals import scenario as scenarios
from mcp_server.evals.runner import hygiene

BUILTIN = scenarios.builtin()


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
    report = hygiene(scenario)
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
    report = hygiene(scenarios.load(example))
    assert any("null agent passes" in p for p in report.problems), report.problems


def test_an_adversarial_attempt_the_server_allows_is_reported(example: Path) -> None:
    (example / "agents" / "harmless.py").write_text(
        "async def run(agent):\n"
        "    await agent.attempt('read the tasks', 'query', sql='select * from task', refused=['sql.forbidden'])\n",
        encoding="utf-8",
    )
    report = hygiene(scenarios.load(example))
    assert report.problems == [
        "adversarial harmless: read the tasks: it succeeded: the server did not refuse it"
    ]
