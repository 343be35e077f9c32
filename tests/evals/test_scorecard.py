"""The scorecard: pass@k and pass^k, the expected-failures baseline (new failures and stale entries
both fail), the exit code, the table, and what the CLI writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_server.cli import main
from mcp_server.evals.scorecard import (
    CheckResult,
    RunResult,
    ScenarioResult,
    compare,
    exit_code,
    pass_at_k,
    pass_hat_k,
    read_baseline,
)


def result(scenario: str, *runs: dict[str, bool]) -> ScenarioResult:
    """A scenario result whose runs have these check verdicts."""
    made = [
        RunResult(
            run=index,
            passed=all(checks.values()),
            checks=[
                CheckResult(id=c, kind="sql", passed=ok, message="" if ok else "no")
                for c, ok in checks.items()
            ],
            tool_calls={"query": 2},
            tool_calls_total=2,
            refusals={"invariant.violated": 1},
            invariant_violations_prevented=1,
            wall_time_s=0.5,
        )
        for index, checks in enumerate(runs, 1)
    ]
    return ScenarioResult.of(id=scenario, title=scenario, tags=[], agent="scripted: reference", runs=made)


def test_pass_at_k_and_pass_hat_k_follow_the_unbiased_estimators() -> None:
    assert [pass_at_k(5, c, 5) for c in range(6)] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert [pass_hat_k(5, c, 5) for c in range(6)] == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert pass_at_k(4, 2, 2) == pass_at_k(4, 2, 2) == round(1 - 1 / 6, 4)
    flaky = result("s", {"a": True}, {"a": False}, {"a": True})
    assert (flaky.k, flaky.passes, flaky.pass_at_1, flaky.pass_at_k, flaky.pass_hat_k) == (
        3,
        2,
        0.6667,
        1.0,
        0.0,
    )
    assert flaky.checks["a"].passed == 2 and flaky.tool_calls == {"query": 6}
    assert flaky.invariant_violations_prevented == 3 and not flaky.passed


def test_a_baseline_covers_failures_and_flags_new_and_stale_entries(tmp_path: Path) -> None:
    results = [
        result("alpha", {"a": False, "b": True}),
        result("beta", {"c": False, "d": False}),
        result("gamma", {"e": True}),
    ]
    path = tmp_path / "baseline.txt"
    path.write_text("# known\nbeta\nalpha:b   # fixed since\ngamma:e\ndelta:x\n", encoding="utf-8")
    compared = compare(results, read_baseline(path), path)
    assert compared.expected == ["beta"]
    assert compared.new_failures == ["alpha:a"]
    assert compared.stale == ["alpha:b", "gamma:e"]
    assert compared.not_run == ["delta:x"]
    assert exit_code(results, compared) == 1
    path.write_text("alpha:a\nbeta\n", encoding="utf-8")
    exact = compare(results, read_baseline(path), path)
    assert (exact.new_failures, exact.stale, exit_code(results, exact)) == ([], [], 0)
    assert exit_code(results, None) == 1
    assert exit_code([results[2]], None) == 0


def test_eval_run_writes_the_scorecard_and_exits_by_the_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    baseline = tmp_path / "expected.txt"
    baseline.write_text("rogue-agent\n", encoding="utf-8")
    assert main(["eval", "run", "rogue-agent", "--scripted", "null"]) == 1
    table = capsys.readouterr().out
    assert "FAIL rogue-agent run 1 discount-field: field purchase.discount is missing" in table
    card = json.loads((tmp_path / "eval-results" / "scorecard.json").read_text(encoding="utf-8"))
    assert card["exit_code"] == 1 and card["scenarios"][0]["pass_hat_k"] == 0.0
    assert (
        main(["eval", "run", "rogue-agent", "--scripted", "null", "--expected-failures", str(baseline)]) == 0
    )
    assert "baseline" in capsys.readouterr().out
    baseline.write_text("rogue-agent:audit-chain\n", encoding="utf-8")  # it passes: stale; the rest: new
    assert (
        main(
            [
                "eval",
                "run",
                "rogue-agent",
                "--scripted",
                "null",
                "--expected-failures",
                str(baseline),
                "--json",
            ]
        )
        == 1
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["baseline"]["stale"] == ["rogue-agent:audit-chain"]
    assert "rogue-agent:discount-field" in printed["baseline"]["new_failures"]


def test_eval_run_names_the_scripts_a_scenario_has(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "run", "rename-field", "--scripted", "nobody"]) == 1
    error = capsys.readouterr().err
    assert "error [not_found]" in error and "break-actions" in error


def test_eval_list_shows_the_builtin_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "list", "--json", "--tag", "concurrency"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in listed] == ["double-booking"]
    assert listed[0]["scripted"] == ["drop-invariant", "overbook", "reference"]
