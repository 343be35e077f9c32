"""A run's project, made from the scenario's seed.

The seed is applied once per scenario into a template project (``buttress init``, the policy
written into ``buttress.toml``, the operations deployed by the operator through propose → dry-run →
deploy, the fixture rows inserted), and every run starts from a copy of that directory — the
equivalent of ``CREATE DATABASE … TEMPLATE``. The copy then gets what is run-specific: the
agent's bearer token (HTTP) and the connectors pointing at this run's fake providers.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from mcp_server import project as projects
from mcp_server.evals.scenario import Scenario
from runtime.errors import ButtressError, Code, ConfigError

SEED_ACTOR = "operator"
SEED_OPERATION = "eval_seed_rows"


@dataclass(frozen=True)
class Template:
    """The seeded project every run of a scenario copies."""

    root: Path
    invariants: dict[str, str]
    """The seed's invariants (name → SQL): the checks evaluate them on the end state too."""


def _seed_error(scenario: Scenario, message: str, error: ButtressError | None = None) -> ConfigError:
    return ConfigError(
        Code.CONFIG_INVALID,
        f"scenario {scenario.id}: the seed cannot be applied: {message}",
        hint="Fix the seed in scenario.toml; the runtime's error is in details.",
        details={"scenario": scenario.id, "error": error.to_dict() if error else None},
    )


def _merge(document: Any, name: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into the table ``name`` of a tomlkit document (nested tables merged too)."""
    table = document.get(name)
    if table is None:
        table = tomlkit.table()
        document[name] = table
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            _merge(table, key, value)
        else:
            table[key] = value


def write_policy(scenario: Scenario, root: Path) -> None:
    """Write the agent's identity and the seed's policy tables into the project's ``buttress.toml``."""
    path = root / projects.CONFIG_NAME
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    agent = scenario.manifest.agent
    _merge(document, "agents", {agent.name: {"role": agent.role}})
    for name, values in scenario.manifest.seed.policy.items():
        _merge(document, name, dict(values))
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    projects.Project.load(root).policy()  # a policy the server would refuse is reported now


def build(scenario: Scenario, root: Path) -> Template:
    """Create the template project for ``scenario`` in ``root`` (which must not exist)."""
    from runtime.runtime import Runtime

    project = projects.init(root, agent=scenario.manifest.agent.name)
    write_policy(scenario, project.root)
    runtime = project.open()
    try:
        assert isinstance(runtime, Runtime)
        operations = scenario.operations()
        if operations:
            _deploy(scenario, runtime, operations)
        for rows in scenario.manifest.seed.rows:
            if rows.action is not None:
                _run_action(scenario, runtime, rows.action, rows.rows)
            else:
                assert rows.entity is not None
                _insert(scenario, runtime, rows.entity, rows.rows)
        _check_invariants(scenario, runtime)
        _, spec = runtime.current
        invariants = {invariant.name: invariant.sql for invariant in spec.invariants}
    finally:
        runtime.close()
    return Template(root=project.root, invariants=invariants)


def _deploy(scenario: Scenario, runtime: Any, operations: list[dict[str, Any]]) -> None:
    try:
        proposal = runtime.propose(operations, note=f"seed of scenario {scenario.id}", actor=SEED_ACTOR)
        report = runtime.dry_run(proposal.proposal_id, actor=SEED_ACTOR)
        if not report.passed:
            raise _seed_error(scenario, f"the dry-run of its operations failed: {report.error}")
        runtime.deploy(proposal.proposal_id, actor=SEED_ACTOR)
    except ConfigError:
        raise
    except ButtressError as error:
        raise _seed_error(
            scenario, f"its operations were refused: [{error.code}] {error.message}", error
        ) from None


def _run_action(scenario: Scenario, runtime: Any, action: str, rows: tuple[dict[str, Any], ...]) -> None:
    for index, args in enumerate(rows):
        try:
            runtime.run_action(action, dict(args), actor=SEED_ACTOR)
        except ButtressError as error:
            raise _seed_error(
                scenario, f"row {index} through action {action!r}: [{error.code}] {error.message}", error
            ) from None


def _insert(scenario: Scenario, runtime: Any, entity_name: str, rows: tuple[dict[str, Any], ...]) -> None:
    """Insert fixture rows as the operator, in one transaction audited with them. DuckDB enforces
    keys, NOT NULL and types; the invariants are checked in full afterwards."""
    from runtime.migrate.ddl import cols, q

    number, spec = runtime.current
    entity = spec.entity(entity_name)
    if entity is None:
        raise _seed_error(
            scenario, f"[[seed.rows]] names entity {entity_name!r}, which the seed does not create"
        )
    known = set(entity.field_names)
    try:
        with runtime.engine.transaction() as tx:
            for index, row in enumerate(rows):
                unknown = sorted(set(row) - known)
                if unknown:
                    raise _seed_error(scenario, f"row {index} of {entity_name}: no field {unknown[0]!r}")
                names = list(row)
                marks = ", ".join("?" for _ in names)
                tx.execute(
                    f"INSERT INTO {q(entity_name)} ({cols(names)}) VALUES ({marks})", [row[n] for n in names]
                )
            runtime.audit.append(
                tx,
                actor=SEED_ACTOR,
                operation=SEED_OPERATION,
                arguments={"entity": entity_name, "rows": len(rows)},
                outcome="ok",
                version_before=number,
                version_after=number,
            )
    except ConfigError:
        raise
    except ButtressError as error:
        raise _seed_error(scenario, f"rows of {entity_name}: [{error.code}] {error.message}", error) from None


def _check_invariants(scenario: Scenario, runtime: Any) -> None:
    _, spec = runtime.current
    for invariant in spec.invariants:
        found = runtime.query(invariant.sql, limit=5)
        if found.rows:
            raise _seed_error(scenario, f"its rows violate invariant {invariant.name!r}: {found.rows}")


def clone(template: Template, destination: Path) -> projects.Project:
    """A fresh copy of the template project (sockets and spill files left behind)."""
    shutil.copytree(
        template.root,
        destination,
        ignore=shutil.ignore_patterns("*.sock", "spill", "*.tmp", "requests", "approvals"),
    )
    return projects.Project.load(destination)


def prepare_run(
    scenario: Scenario, project: projects.Project, *, token: bool, providers: dict[str, str]
) -> str | None:
    """Make a copied project this run's: connectors pointing at this run's providers, and (over
    HTTP) a fresh bearer token for the agent. Returns the token."""
    from runtime.boundary.policy import add_agent

    config = project.root / projects.CONFIG_NAME
    connectors = scenario.manifest.seed.connectors
    if connectors:
        document = tomlkit.parse(config.read_text(encoding="utf-8"))
        for name, values in connectors.items():
            _merge(document, "connectors", {name: {k: _substitute(v, providers) for k, v in values.items()}})
        config.write_text(tomlkit.dumps(document), encoding="utf-8")
        try:
            project.policy()
        except ButtressError as error:
            raise _seed_error(scenario, f"its connectors: {error.message}", error) from None
    if not token:
        return None
    agent = scenario.manifest.agent
    return add_agent(config, agent.name, agent.role, rotate=True)


def _substitute(value: Any, providers: dict[str, str]) -> Any:
    """``{providers.NAME.url}`` in a string → the URL this run serves provider NAME on."""
    if isinstance(value, str):
        for name, url in providers.items():
            value = value.replace(f"{{providers.{name}.url}}", url)
        return value
    if isinstance(value, list):
        return [_substitute(v, providers) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, providers) for k, v in value.items()}
    return value
