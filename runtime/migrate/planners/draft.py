"""What a rule works with: the Context one ``plan()`` call shares across its steps, the Draft of a step
that a rule returns, and the helpers the table rules share (frozen tables, rebuild hazards, selects).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.migrate import ddl
from runtime.migrate.ddl import q
from runtime.migrate.hazards import Hazard, HazardCode, hazard
from runtime.migrate.steps import Probe, RestoreKey, Retention, Strategy
from runtime.schema.spec import AppSpec, EntitySpec, FieldSpec
from runtime.sql.dialect import DUCKDB, Alter, Dialect


@dataclass
class Context:
    """What one ``plan()`` call shares across its steps: what the proposal created so far, which tables
    hold an index, the retained data a step may restore, and the step being planned."""

    base: AppSpec
    target_version: int
    restores: Mapping[RestoreKey, Retention]
    index: int = 0
    created: set[str] = field(default_factory=set)  # entity names created in this proposal
    created_fields: set[tuple[str, str]] = field(default_factory=set)
    created_other: set[str] = field(default_factory=set)  # "view:x", "invariant:x", "action:x"
    indexed: set[str] = field(default_factory=set)  # tables holding a secondary index at any point so far
    dialect: Dialect = DUCKDB
    """The engine the plan's SQL is spelled for."""

    def new_entity(self, name: str) -> bool:
        return name in self.created

    def new_field(self, entity: str, name: str) -> bool:
        return entity in self.created or (entity, name) in self.created_fields

    def retention_table(self, n: int = 0) -> str:
        return f"ret_v{self.target_version}_s{self.index}" + (f"_{n}" if n else "")


@dataclass
class Draft:
    """A step as a rule returns it; ``plan()`` numbers it and freezes it into a Step."""

    summary: str
    strategy: Strategy
    sql: list[str]
    reverse: list[dict[str, Any]]
    retains: list[Retention] = field(default_factory=list)
    restores: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    hazards: list[Hazard] = field(default_factory=list)


def entity_of(spec: AppSpec, name: str) -> EntitySpec:
    """The entity ``name`` of ``spec``, which the operation's validation has made sure exists."""
    entity = spec.entity(name)
    assert entity is not None, name
    return entity


def field_of(entity: EntitySpec, name: str) -> FieldSpec:
    """The field ``name`` of ``entity``, which the operation's validation has made sure exists."""
    f = entity.field(name)
    assert f is not None, name
    return f


def frozen_in(ctx: Context, old: AppSpec, entity: EntitySpec) -> bool:
    """Frozen now, or indexed at any earlier point of the transaction: DuckDB keeps a dropped index's
    hold on its table's columns until the DROP INDEX commits."""
    return ddl.is_frozen(old, entity, ctx.dialect) or (
        ctx.dialect.needs_rebuild(Alter.ALTER_INDEXED_TABLE) and entity.name in ctx.indexed
    )


def rebuild_hazard(ctx: Context, old: AppSpec, name: str) -> list[Hazard]:
    """The hazard of rebuilding an existing table ``name`` (and the tables that reference it)."""
    if ctx.new_entity(name):
        return []
    children = [c.name for c in ddl.dependents(old, name)]
    also = f" and its dependents {', '.join(children)}" if children else ""
    return [
        hazard(HazardCode.TABLE_REBUILD, f"rebuilds table {name}{also} in one transaction", name, *children)
    ]


def identity_select(entity: EntitySpec) -> dict[str, str | None]:
    """A rebuild's select that copies every field of ``entity`` from the old table (``o``) unchanged."""
    return {f.name: f"o.{q(f.name)}" for f in entity.fields}


def key_join(entity: EntitySpec, left: str, right: str) -> str:
    """SQL: ``left`` and ``right`` rows of ``entity`` have the same primary key."""
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in entity.primary_key)
