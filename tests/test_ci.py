"""CI installs exactly what the README's test command installs, so a green CI never hides a missing
install step on a fresh machine."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_installs_nothing_python_side_beyond_the_readme_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    installs = [
        line.strip()
        for line in script.splitlines()
        if re.search(r"pip\d?\s+install", line) and not line.strip().startswith("#")
    ]
    allowed = {
        "python -m pip install --quiet --upgrade pip",
        "python -m pip install --quiet -e '.[test]'",
    }
    assert installs and set(installs) <= allowed, installs
    assert "pip install -e '.[test]' && pytest" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_fails_when_pytest_collects_nothing() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '"$status" -eq 5' in script


def test_ci_runs_the_readme_command_then_checks_then_the_long_trials() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    steps = [
        "run_pytest || failed=1",
        "ruff check .",
        "ruff format --check .",
        "mypy",
        "BUTTRESS_STORY_KILLS=200 run_pytest tests/workflows",
        "BUTTRESS_SOAK_S=180 run_pytest tests/soak",
        "BUTTRESS_EVAL_FULL=1 run_pytest tests/evals/test_hygiene.py",
        "BUTTRESS_RACE_ITERATIONS=1000 run_pytest tests/security/test_race.py",
        "BUTTRESS_CENSUS_FULL=1 run_pytest tests/security/test_function_census.py",
        "BUTTRESS_FUZZ_FULL=1 run_pytest tests/security/test_boundary.py",
        "BUTTRESS_PG_BOOKINGS=10000 run_pytest tests/store/test_pg_servers.py",
        "BUTTRESS_PG_SERVE_BOOKINGS=10000 run_pytest tests/store/test_pg_four_servers.py",
        "BUTTRESS_TEST_ENGINE=postgres run_pytest -rx tests/runtime",
    ]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)
    assert script.rstrip().endswith('exit "$failed"')


def test_ci_starts_postgresql_and_requires_it() -> None:
    """The PostgreSQL tests may skip on a machine without the server; never in CI."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m tests.pg start" in script
    assert "BUTTRESS_REQUIRE_POSTGRES=1" in script
    assert script.index("BUTTRESS_REQUIRE_POSTGRES=1") < script.index("run_pytest || failed=1")
