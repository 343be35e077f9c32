"""The layout is a contract: pure layers never reach the database, and only the engine connects."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE = (
    "runtime/schema",
    "runtime/sql",
    "runtime/boundary/policy.py",
    "runtime/boundary/policyspec.py",
    "runtime/migrate/hazards.py",
    "runtime/migrate/ddl.py",
    "runtime/migrate/steps.py",
    "runtime/migrate/plan.py",
    "runtime/migrate/planners",
    "runtime/workflows/tables.py",
    "runtime/results",
)
PURE_MODULES = {
    "runtime.migrate",
    "runtime.migrate.hazards",
    "runtime.migrate.ddl",
    "runtime.migrate.steps",
    "runtime.migrate.plan",
    "runtime.migrate.planners",
    "runtime.migrate.planners.draft",
    "runtime.migrate.planners.entities",
    "runtime.migrate.planners.fields",
    "runtime.migrate.planners.logic",
    "runtime.migrate.planners.topics",
    "runtime.migrate.planners.workflows",
}
"""The planner and what it writes SQL with: pure, though they live beside deploy."""
LOWER = ("runtime.store", "runtime.migrate", "runtime.logic", "runtime.runtime")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_pure_layers_never_import_duckdb_or_what_runs_on_it() -> None:
    offenders = []
    for folder in PURE:
        paths = [ROOT / folder] if folder.endswith(".py") else sorted((ROOT / folder).rglob("*.py"))
        for path in paths:
            bad = {
                m for m in imports(path) if m == "duckdb" or (m.startswith(LOWER) and m not in PURE_MODULES)
            }
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []


def test_the_runtime_knows_nothing_of_mcp() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "runtime").rglob("*.py"))
        if any(m == "mcp" or m.startswith(("mcp.", "tools", "mcp_server")) for m in imports(path))
    ]
    assert offenders == []
