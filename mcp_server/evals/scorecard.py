"""The scorecard: every run's verdicts, pass@k and pass^k per scenario, a readable table, and the
exit code CI reads, with an expected-failures baseline.

With ``n`` runs of a scenario of which ``c`` passed (a run passes when every check passes and every
kill planned for it fired):

* ``pass_at_1`` = c / n;
* ``pass_at_k`` = 1 − C(n−c, k) / C(n, k) with k = n: 1 when any run passed;
* ``pass_hat_k`` (pass^k) = C(c, k) / C(n, k) with k = n: 1 only when every run passed.

The baseline is a text file, one entry a line (``#`` starts a comment): ``SCENARIO`` expects that
scenario to fail, ``SCENARIO:CHECK`` expects that check to fail in at least one run. The exit code
is 0 when every scenario passed, or when the failures are exactly those the baseline covers; it is
1 on a failure the baseline does not cover (new) and on a baseline entry that now passes (stale),
as the MCP conformance suite's ``--expected-failures`` does. Entries for scenarios not run are
ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from runtime.errors import Code, ConfigError


class CheckResult(BaseModel):
    id: str
    kind: str
    passed: bool
    safety: bool = False
    message: str = Field(default="", description="why it failed (empty when it passed)")


class AttemptResult(BaseModel):
    label: str
    tool: str
    refused: bool
    code: str | None = None
    expected: list[str] = Field(default_factory=list)
    message: str = ""


class FaultResult(BaseModel):
    """One planned kill: where it fired and whether the agent recovered, or that it did not fire."""

    spec: str
    fired: bool = True
    step: int | None = Field(default=None, description="the call it fired at (null: it did not fire)")
    tool: str | None = None
    when: str
    killed: int = Field(default=0, description="server processes that died")
    recovered: bool | None = Field(
        default=None,
        description="a call of the agent succeeded after the kill and every check passed (null: did not fire)",
    )
    message: str = Field(default="", description="why it did not fire, or why the agent did not recover")


class RunResult(BaseModel):
    """One run of one agent on one scenario."""

    run: int
    passed: bool
    checks: list[CheckResult]
    tool_calls: dict[str, int]
    tool_calls_total: int
    refusals: dict[str, int]
    invariant_violations_prevented: int
    attempts: list[AttemptResult] = Field(default_factory=list)
    faults: list[FaultResult] = Field(default_factory=list)
    server_starts: int = 0
    reconnects: int = 0
    steps: int = Field(
        default=0,
        description="the agent's calls as the runner counted them (what kill@STEP and fault_horizon count): "
        "a scripted agent's, and an external agent's under faults",
    )
    agent_error: str | None = None
    agent_exit_code: int | None = None
    wall_time_s: float
    directory: str | None = Field(default=None, description="where the run's project and logs were kept")
    logs: str | None = Field(
        default=None, description="where the logs of a run whose agent failed were kept (also without --keep)"
    )

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


class CheckTally(BaseModel):
    passed: int
    runs: int


class ScenarioResult(BaseModel):
    """Every run of one scenario, and what they add up to."""

    id: str
    title: str
    tags: list[str]
    agent: str
    runs: list[RunResult]
    k: int
    passes: int
    passed: bool
    pass_at_1: float
    pass_at_k: float
    pass_hat_k: float
    checks: dict[str, CheckTally]
    tool_calls: dict[str, int]
    refusals: dict[str, int]
    invariant_violations_prevented: int
    wall_time_s: float

    @classmethod
    def of(cls, *, id: str, title: str, tags: list[str], agent: str, runs: list[RunResult]) -> ScenarioResult:
        n = len(runs)
        c = sum(1 for r in runs if r.passed)
        checks: dict[str, CheckTally] = {}
        calls: dict[str, int] = {}
        refusals: dict[str, int] = {}
        for run in runs:
            for check in run.checks:
                tally = checks.setdefault(check.id, CheckTally(passed=0, runs=0))
                tally.runs += 1
                tally.passed += int(check.passed)
            for name, count in run.tool_calls.items():
                calls[name] = calls.get(name, 0) + count
            for code, count in run.refusals.items():
                refusals[code] = refusals.get(code, 0) + count
        return cls(
            id=id,
            title=title,
            tags=tags,
            agent=agent,
            runs=runs,
            k=n,
            passes=c,
            passed=n > 0 and c == n,
            pass_at_1=round(c / n, 4) if n else 0.0,
            pass_at_k=pass_at_k(n, c, n),
            pass_hat_k=pass_hat_k(n, c, n),
            checks=checks,
            tool_calls=dict(sorted(calls.items())),
            refusals=dict(sorted(refusals.items())),
            invariant_violations_prevented=sum(r.invariant_violations_prevented for r in runs),
            wall_time_s=round(sum(r.wall_time_s for r in runs), 3),
        )

    def failures(self) -> set[str]:
        """``SCENARIO:CHECK`` for every check that failed in some run."""
        return {f"{self.id}:{check}" for check, tally in self.checks.items() if tally.passed < tally.runs}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k runs drawn from n passes (c of n passed).

    >>> pass_at_k(4, 1, 4), pass_at_k(4, 0, 4), pass_at_k(4, 2, 1)
    (1.0, 0.0, 0.5)
    """
    if n == 0 or k > n:
        return 0.0
    return round(1.0 - math.comb(n - c, k) / math.comb(n, k), 4)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the chance that all of k runs drawn from n pass.

    >>> pass_hat_k(4, 4, 4), pass_hat_k(4, 3, 4), pass_hat_k(4, 2, 2)
    (1.0, 0.0, 0.1667)
    """
    if n == 0 or k > n:
        return 0.0
    return round(math.comb(c, k) / math.comb(n, k), 4)


class BaselineResult(BaseModel):
    """How the failures compare with the expected-failures file."""

    path: str
    expected: list[str] = Field(description="entries that failed, as expected")
    new_failures: list[str] = Field(description="failures no entry covers")
    stale: list[str] = Field(description="entries that now pass (or name no check): remove them")
    not_run: list[str] = Field(description="entries for scenarios not run (ignored)")


class Scorecard(BaseModel):
    """One ``buttress eval run``."""

    buttress_version: str
    started_at: str
    agent: dict[str, str]
    transport: str
    k: int
    seed: int
    faults: list[str]
    scenarios: list[ScenarioResult]
    baseline: BaselineResult | None = None
    passed: bool
    exit_code: int
    wall_time_s: float


def read_baseline(path: Path) -> list[str]:
    """The entries of an expected-failures file (blank lines and ``#`` comments skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"the expected-failures file {path} cannot be read: {error}",
            hint="Pass a text file with one SCENARIO or SCENARIO:CHECK a line.",
        ) from None
    entries = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(entry)
    return entries


def compare(results: list[ScenarioResult], entries: list[str], path: Path) -> BaselineResult:
    """Sort every failure and every entry into expected, new, stale or not run."""
    by_id = {r.id: r for r in results}
    failures = {f for r in results for f in r.failures()}
    expected, stale, not_run = [], [], []
    covered: set[str] = set()
    for entry in entries:
        scenario, _, check = entry.partition(":")
        result = by_id.get(scenario)
        if result is None:
            not_run.append(entry)
            continue
        hits = {f for f in failures if f == entry or (not check and f.startswith(f"{scenario}:"))}
        if hits:
            expected.append(entry)
            covered |= hits
        else:
            stale.append(entry)
    return BaselineResult(
        path=str(path),
        expected=expected,
        new_failures=sorted(failures - covered),
        stale=stale,
        not_run=not_run,
    )


def exit_code(results: list[ScenarioResult], baseline: BaselineResult | None) -> int:
    """0 when all passed, or when the failures are exactly the baseline's; 1 otherwise."""
    if baseline is None:
        return 0 if all(r.passed for r in results) else 1
    return 0 if not baseline.new_failures and not baseline.stale else 1


# ------------------------------------------------------------------------------------------- table


COLUMNS = (
    "scenario",
    "runs",
    "pass@k",
    "pass^k",
    "checks",
    "calls",
    "refusals",
    "prevented",
    "faults",
    "time",
)


def _row(result: ScenarioResult) -> list[str]:
    checks_passed = sum(t.passed for t in result.checks.values())
    checks_total = sum(t.runs for t in result.checks.values())
    planned = sum(len(r.faults) for r in result.runs)
    fired = sum(f.fired for r in result.runs for f in r.faults)
    faults = f"{fired}/{planned}" if planned else "0"
    return [
        result.id,
        f"{result.passes}/{result.k}",
        f"{result.pass_at_k:.2f}",
        f"{result.pass_hat_k:.2f}",
        f"{checks_passed}/{checks_total}",
        str(sum(result.tool_calls.values())),
        str(sum(result.refusals.values())),
        str(result.invariant_violations_prevented),
        faults,
        f"{result.wall_time_s:.1f}s",
    ]


def table(card: Scorecard) -> str:
    """The scorecard as text: one line per scenario, then every failure, the baseline and the result."""
    rows = [list(COLUMNS), *(_row(r) for r in card.scenarios)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"agent: {card.agent['label']}  transport: {card.transport}  k: {card.k}"]
    if card.faults:
        lines[0] += f"  faults: {', '.join(card.faults)} (seed {card.seed})"
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for result in card.scenarios:
        for run in result.runs:
            for check in run.failed_checks:
                lines.append(f"FAIL {result.id} run {run.run} {check.id}: {check.message}")
            for attempt in run.attempts:
                if not attempt.refused:
                    lines.append(f"NOT REFUSED {result.id} run {run.run} {attempt.label}: {attempt.message}")
            for fault in run.faults:
                if not fault.fired:
                    lines.append(f"FAULT NOT FIRED {result.id} run {run.run} {fault.spec}: {fault.message}")
                elif not fault.recovered:
                    lines.append(
                        f"NOT RECOVERED {result.id} run {run.run} {fault.spec} at call {fault.step} "
                        f"({fault.tool}): {fault.message}"
                    )
            if run.agent_error:
                lines.append(f"AGENT {result.id} run {run.run}: {run.agent_error}")
    if card.baseline is not None:
        b = card.baseline
        lines.append(
            f"baseline {b.path}: {len(b.expected)} expected, {len(b.new_failures)} new, {len(b.stale)} stale"
        )
        lines += [f"  new failure: {f}" for f in b.new_failures]
        lines += [f"  stale entry (passes now): {s}" for s in b.stale]
    passed = sum(1 for r in card.scenarios if r.passed)
    verdict = "PASS" if card.exit_code == 0 else "FAIL"
    lines.append(f"{verdict}: {passed}/{len(card.scenarios)} scenarios passed in {card.wall_time_s:.1f}s")
    return "\n".join(lines)


def dump(card: Scorecard) -> dict[str, Any]:
    return card.model_dump(mode="json")
