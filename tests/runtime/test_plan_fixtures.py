"""Fixture files: spec → DDL, and operations → plan SQL and hazards (pure; no database).

Each ``tests/fixtures/plan/*.json`` holds ``title``, ``base`` (operations building the base spec),
``operations`` and ``expected`` (steps with strategy, SQL and hazard codes). Set
``BUTTRESS_UPDATE_FIXTURES=1`` to rewrite ``expected`` after an intended planner change, then
review the diff. Every plan is also applied to a real DuckDB database and its catalog checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runtime.migrate import ddl, plan
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.store import fingerprint
from runtime.store.engine import connect

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "plan").glob("*.json"))


def planned(case: dict[str, Any]) -> tuple[AppSpec, AppSpec, plan.Plan]:
    base = changes.apply(AppSpec(), changes.parse_operations(case["base"]))
    target, result = plan.plan(base, changes.parse_operations(case["operations"]), base_version=1)
    return base, target, result


def summary(result: plan.Plan) -> list[dict[str, Any]]:
    return [
        {
            "summary": s.summary,
            "strategy": s.strategy,
            "sql": list(s.sql),
            "hazards": [str(h.code) for h in s.hazards],
        }
        for s in result.steps
    ]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_plan_matches_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    base, _, result = planned(case)
    got = {"ddl": ddl.spec_ddl(base), "steps": summary(result)}
    if os.environ.get("BUTTRESS_UPDATE_FIXTURES"):
        case["expected"] = got
        path.write_text(json.dumps(case, indent=2) + "\n")
    assert got == case["expected"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_plan_applied_to_duckdb_gives_the_target_catalog(path: Path) -> None:
    case = json.loads(path.read_text())
    base, target, result = planned(case)
    db = connect(":memory:")
    for statement in ddl.spec_ddl(base):
        db.execute(statement)
    db.execute("BEGIN")
    for step in result.steps:
        for statement in step.sql:
            db.execute(statement)
    db.execute("COMMIT")
    assert (
        fingerprint.diff(fingerprint.expected(target, lambda: connect(":memory:")), fingerprint.read(db))
        == []
    )


def test_there_are_fixtures() -> None:
    assert len(FIXTURES) >= 8
