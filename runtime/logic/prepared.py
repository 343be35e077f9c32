"""An action prepared against one spec: its argument model, its statements as they run (with what
they capture), and the checks its writes need. Derived from the spec alone, no database; the runner
(``actions``) and the dry-run's binding (``migrate.bind``) both start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from runtime.logic import capture, fieldchecks, invariants, references
from runtime.schema.spec import ActionSpec, AppSpec
from runtime.schema.types import python_type
from runtime.sql import sqlcheck
from runtime.sql.facts import Analysis


@dataclass(frozen=True)
class Prepared:
    """An action analysed against one spec: its argument model, its statements as they run, and the
    checks its writes need (invariants, references)."""

    spec: ActionSpec
    args_model: type[BaseModel]
    statements: tuple[capture.Statement, ...]
    reads: frozenset[str]
    writes: frozenset[str]
    checks: tuple[invariants.Check, ...]
    """Every invariant reading a table the action can write (directly or by cascade)."""
    references: tuple[references.Reference, ...]
    capture: dict[str, set[str]]
    """Per table: the columns whose values the checks need from touched rows."""
    field_checks: dict[str, tuple[fieldchecks.FieldCheck, ...]]
    """Per table: the field checks the runtime enforces (also on rows ``on_delete set_null`` changes)."""
    app: AppSpec
    """The spec the action belongs to (its emits name its topics and workflows)."""


def args_model(action: ActionSpec) -> type[BaseModel]:
    """A pydantic model of the action's parameters (nullable ones may be omitted)."""
    fields: dict[str, Any] = {}
    for param in action.params:
        base = python_type(param.type)
        annotation: Any = base | None if param.nullable else base
        fields[param.name] = (annotation, None if param.nullable else ...)
    return create_model(f"{action.name}_args", __config__=ConfigDict(extra="forbid"), **fields)


def prepare(spec: AppSpec, action: ActionSpec) -> Prepared:
    relations = spec.relations()
    analyses = tuple(
        sqlcheck.analyze_statement(s, relations, allow_writes=action.kind == "mutation")
        for s in action.statements
    )
    reads = frozenset().union(*(a.reads for a in analyses))
    writes = frozenset().union(*(a.writes for a in analyses))
    refs = references.references_of(spec)
    reachable = references.reachable(refs, writes)
    checks = tuple(
        check
        for check in (invariant_checks(spec) if writes else ())
        if check.reads & reachable or not check.reads
    )
    needed = references.columns_needed(refs)
    for check in checks:
        if check.incremental:
            for table, columns in check.keys.items():
                needed.setdefault(table, set()).update(columns)
    checked = fieldchecks.of(spec)
    statements = tuple(
        capture.plan(a, needed.get(written, set()), _key(spec, a), checked.get(written, ()))
        if (written := next(iter(a.writes), None)) is not None
        else capture.plan(a, set(), ())
        for a in analyses
    )
    return Prepared(
        action, args_model(action), statements, reads, writes, checks, refs, needed, checked, spec
    )


def invariant_checks(spec: AppSpec) -> tuple[invariants.Check, ...]:
    """How each invariant of ``spec`` is checked after a mutation (cached per spec)."""
    key = spec.hash()
    found = _CHECKS.get(key)
    if found is None:
        found = tuple(invariants.analyze(i.name, i.description, i.sql, spec) for i in spec.invariants)
        if len(_CHECKS) > 64:
            _CHECKS.clear()
        _CHECKS[key] = found
    return found


_CHECKS: dict[str, tuple[invariants.Check, ...]] = {}


def _key(spec: AppSpec, analysis: Analysis) -> tuple[str, ...]:
    entity = spec.entity(next(iter(analysis.writes))) if analysis.writes else None
    return entity.primary_key if entity is not None else ()
