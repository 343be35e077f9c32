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
    "runtime.logic.summary",
}
"""The planner and what it writes SQL with: pure, though they live beside deploy."""
LOWER = ("runtime.store", "runtime.migrate", "runtime.logic", "runtime.context", "runtime.runtime")


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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_graph() -> dict[str, set[str]]:
    """Every module of the ``runtime`` package and the ``runtime`` modules it imports: at the top, under
    ``if TYPE_CHECKING:`` or inside a function alike; relative imports resolved; ``from runtime.x import
    y`` is an edge to ``runtime.x.y`` when that is a module, else to ``runtime.x``."""
    paths = sorted((ROOT / "runtime").rglob("*.py"))
    modules = {module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in import order, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph[module]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                found = visit(target)
                if found:
                    return found
        path.pop()
        on_path.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            found = visit(module)
            if found:
                return found
    return None


def test_the_import_graph_knows_the_runtimes_lines() -> None:
    graph = runtime_graph()
    assert graph["runtime.migrate.deploy"] >= {"runtime.migrate.rollback", "runtime.migrate.execution"}
    assert "runtime.logic.prepared" in graph["runtime.migrate.bind"]
    assert "runtime.store.catalog" in graph["runtime.runtime"]  # `from runtime.store import catalog`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_below_the_facade_imports_it() -> None:
    """Only ``runtime.api`` — the facade's surface for the layers above (``RuntimeAPI``, ``OPERATIONS``)
    — imports ``runtime.runtime``; nothing of the runtime package imports ``runtime.api`` in turn."""
    graph = runtime_graph()
    assert sorted(name for name, edges in graph.items() if "runtime.runtime" in edges) == ["runtime.api"]
    assert sorted(name for name, edges in graph.items() if "runtime.api" in edges) == []


def test_the_runtime_package_has_no_import_cycle() -> None:
    cycle = find_cycle(runtime_graph())
    assert cycle is None, " -> ".join(cycle or [])
