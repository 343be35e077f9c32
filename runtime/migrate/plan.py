"""The planner (pure): base spec + operations → a Plan of ordered steps.

Each step carries its forward SQL (retention statements first), the operations that reverse it,
the retained data that makes the reverse lossless, probes that dry-run uses to report losses and
failing rows, and its hazards. Where DuckDB cannot ALTER, the step is a single-transaction table
rebuild (``ddl.rebuild``) that spells out the full definition.

Data that a rollback retained can be restored by a later step (``restores``): the deploy layer
passes the retained tables that apply, so the SQL in a stored plan is always concrete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from runtime.migrate import ddl
from runtime.migrate.ddl import cols, q, qs
from runtime.migrate.hazards import Hazard, HazardCode, hazard
from runtime.schema import changes, usage
from runtime.schema.changes import Operation
from runtime.schema.spec import AppSpec, EntitySpec, FieldSpec, PayloadField, TopicSpec, canonical_json
from runtime.schema.types import duckdb_type, is_widening
from runtime.workflows import tables

Strategy = Literal["create", "alter", "rebuild", "drop", "catalog"]
RestoreKey = tuple[str, ...]
"""("entity", name) | ("field", entity, field) | ("values", entity, field) | ("payload", topic, field)"""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Probe(_Frozen):
    """A query that selects rows of interest before a step runs.

    ``fail``: any row means the step cannot succeed (the rows are the reason);
    ``loss``: rows whose data the step removes or changes (reported, retained).
    """

    kind: Literal["fail", "loss"]
    code: str
    message: str
    sql: str


class Retention(_Frozen):
    """Data a step keeps in the system schema so that its reverse is lossless."""

    table: str
    kind: Literal["entity", "field", "values", "payload"]
    entity: str
    field: str | None = None
    key: tuple[str, ...]


class Step(_Frozen):
    index: int
    op: dict[str, Any]
    summary: str
    strategy: Strategy
    sql: tuple[str, ...]
    reverse: tuple[dict[str, Any], ...]
    retains: tuple[Retention, ...] = ()
    restores: tuple[str, ...] = ()
    probes: tuple[Probe, ...] = ()
    hazards: tuple[Hazard, ...] = ()


class Plan(_Frozen):
    base_version: int
    target_version: int
    base_hash: str
    target_hash: str
    steps: tuple[Step, ...]
    hazards: tuple[Hazard, ...] = ()  # proposal-wide hazards (e.g. broken actions)

    def hash(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def all_hazards(self) -> list[Hazard]:
        return [h for s in self.steps for h in s.hazards] + list(self.hazards)


@dataclass
class _Context:
    base: AppSpec
    target_version: int
    restores: Mapping[RestoreKey, Retention]
    index: int = 0
    created: set[str] = field(default_factory=set)  # entity names created in this proposal
    created_fields: set[tuple[str, str]] = field(default_factory=set)
    created_other: set[str] = field(default_factory=set)  # "view:x", "invariant:x", "action:x"
    indexed: set[str] = field(default_factory=set)  # tables holding a secondary index at any point so far

    def new_entity(self, name: str) -> bool:
        return name in self.created

    def new_field(self, entity: str, name: str) -> bool:
        return entity in self.created or (entity, name) in self.created_fields

    def retention_table(self, n: int = 0) -> str:
        return f"ret_v{self.target_version}_s{self.index}" + (f"_{n}" if n else "")


@dataclass
class _Draft:
    summary: str
    strategy: Strategy
    sql: list[str]
    reverse: list[dict[str, Any]]
    retains: list[Retention] = field(default_factory=list)
    restores: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    hazards: list[Hazard] = field(default_factory=list)


def plan(
    base: AppSpec,
    ops: Sequence[Operation],
    *,
    base_version: int,
    restores: Mapping[RestoreKey, Retention] | None = None,
    step_offset: int = 0,
    frozen: frozenset[str] = frozenset(),
) -> tuple[AppSpec, Plan]:
    """Validate ``ops`` against ``base`` and plan them. Returns the target spec and the plan.

    ``step_offset`` numbers the steps after those of an earlier plan they will be joined to;
    ``frozen`` names tables indexed earlier in the same transaction (DuckDB still refuses their ALTERs).
    """
    target = changes.apply(base, ops)
    ctx = _Context(
        base=base,
        target_version=base_version + 1,
        restores=restores or {},
        indexed=set(frozen) | {e.name for e in base.entities if ddl.indexes_of(base, e)},
    )
    steps: list[Step] = []
    current = base
    for index, op in enumerate(ops, start=step_offset):
        ctx.index = index
        after = changes.apply_one(current, op)
        draft = _PLANNERS[type(op)](current, after, op, ctx)
        steps.append(
            Step(
                index=index,
                op=op.model_dump(mode="json"),
                summary=draft.summary,
                strategy=draft.strategy,
                sql=tuple(draft.sql),
                reverse=tuple(draft.reverse),
                retains=tuple(draft.retains),
                restores=tuple(draft.restores),
                probes=tuple(draft.probes),
                hazards=tuple(draft.hazards),
            )
        )
        current = after
    views = _sync_views(base, target, ops)
    if views:
        index = step_offset + len(ops)
        steps.append(
            Step(
                index=index,
                op={"op": "sync_views"},
                summary="bring views to the target spec",
                strategy="create",
                sql=tuple(views),
                reverse=(),
            )
        )
    return target, Plan(
        base_version=base_version,
        target_version=base_version + 1,
        base_hash=base.hash(),
        target_hash=target.hash(),
        steps=tuple(steps),
    )


def _sync_views(base: AppSpec, target: AppSpec, ops: Sequence[Operation]) -> list[str]:
    """DuckDB binds a view when it is created, so the views a proposal touches are (re)created once,
    after every table change, in the target spec's order; removed ones are dropped."""
    touched = {
        op.view.name if isinstance(op, changes.AddView | changes.ReplaceView) else op.name
        for op in ops
        if isinstance(op, changes.AddView | changes.ReplaceView | changes.DropView)
    }
    if not touched:
        return []
    out = [f"DROP VIEW IF EXISTS {q(name)}" for name in sorted(touched) if target.view(name) is None]
    out += [ddl.create_view(view, replace=True) for view in target.views if view.name in touched]
    return out


# ------------------------------------------------------------------------------------------ helpers


def _key_join(entity: EntitySpec, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in entity.primary_key)


def _identity_select(entity: EntitySpec) -> dict[str, str | None]:
    return {f.name: f"o.{q(f.name)}" for f in entity.fields}


def _frozen(ctx: _Context, old: AppSpec, entity: EntitySpec) -> bool:
    """Frozen now, or indexed at any earlier point of the transaction: DuckDB keeps a dropped index's
    hold on its table's columns until the DROP INDEX commits."""
    return ddl.is_frozen(old, entity) or entity.name in ctx.indexed


def _rebuild_hazard(ctx: _Context, old: AppSpec, name: str) -> list[Hazard]:
    if ctx.new_entity(name):
        return []
    children = [c.name for c in ddl.dependents(old, name)]
    also = f" and its dependents {', '.join(children)}" if children else ""
    return [
        hazard(HazardCode.TABLE_REBUILD, f"rebuilds table {name}{also} in one transaction", name, *children)
    ]


def _checks_mention(spec: AppSpec, entity: EntitySpec, column: str) -> bool:
    """A DuckDB CHECK of another field names ``column`` (DuckDB then refuses to drop it)."""
    return spec.checked_by == "duckdb" and any(
        f.check and f.name != column and column in _check_columns(f.check) for f in entity.fields
    )


def _check_columns(check: str) -> set[str]:
    import sqlglot
    import sqlglot.expressions as exp

    return {c.name for c in sqlglot.parse_one(check, dialect="duckdb").find_all(exp.Column)}


def _entity(spec: AppSpec, name: str) -> EntitySpec:
    entity = spec.entity(name)
    assert entity is not None, name
    return entity


def _field(entity: EntitySpec, name: str) -> FieldSpec:
    f = entity.field(name)
    assert f is not None, name
    return f


def _restore_entity_sql(entity: EntitySpec, retention: Retention) -> str:
    names = cols(entity.field_names)
    return f"INSERT INTO {q(entity.name)} ({names}) SELECT {names} FROM {qs(retention.table)}"


# ----------------------------------------------------------------------------------------- entities


def _add_entity(old: AppSpec, new: AppSpec, op: changes.AddEntity, ctx: _Context) -> _Draft:
    entity = _entity(new, op.entity.name)
    ctx.created.add(entity.name)
    if ddl.indexes_of(new, entity):
        ctx.indexed.add(entity.name)
    sql = ddl.create_entity(entity, new)
    restores: list[str] = []
    retained = ctx.restores.get(("entity", entity.name))
    if retained is not None:
        sql.append(_restore_entity_sql(entity, retained))
        restores.append(retained.table)
    hazards = (
        [hazard(HazardCode.INDEX_FREEZES, f"{entity.name} gets secondary indexes", entity.name)]
        if entity.indexes
        else []
    )
    return _Draft(
        summary=f"create entity {entity.name}" + (" and restore its retained rows" if restores else ""),
        strategy="create",
        sql=sql,
        reverse=[{"op": "drop_entity", "entity": entity.name}],
        restores=restores,
        hazards=hazards,
    )


def _drop_entity(old: AppSpec, new: AppSpec, op: changes.DropEntity, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    table = ctx.retention_table()
    retention = Retention(table=table, kind="entity", entity=entity.name, key=entity.primary_key)
    hazards = (
        []
        if ctx.new_entity(entity.name)
        else [hazard(HazardCode.DROP_ENTITY, f"drops entity {entity.name} and every row in it", entity.name)]
    )
    return _Draft(
        summary=f"drop entity {entity.name} (rows retained in {ddl.SYSTEM_SCHEMA}.{table})",
        strategy="drop",
        sql=[f"CREATE TABLE {qs(table)} AS SELECT * FROM {q(entity.name)}", f"DROP TABLE {q(entity.name)}"],
        reverse=[{"op": "add_entity", "entity": entity.model_dump(mode="json")}],
        retains=[retention],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.DROP_ENTITY,
                message=f"rows of {entity.name} removed",
                sql=f"SELECT * FROM {q(entity.name)}",
            )
        ],
        hazards=hazards,
    )


def _rename_entity(old: AppSpec, new: AppSpec, op: changes.RenameEntity, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    renamed = _entity(new, op.new_name)
    if op.entity in ctx.created:
        ctx.created.add(op.new_name)
    was_frozen = _frozen(ctx, old, entity)
    if op.entity in ctx.indexed:
        ctx.indexed.add(op.new_name)
    hazards = (
        []
        if ctx.new_entity(op.entity)
        else [hazard(HazardCode.RENAME_ENTITY, f"renames entity {op.entity} to {op.new_name}", op.entity)]
    )
    if was_frozen or (old.checked_by == "duckdb" and any(f.references for f in entity.fields)):
        sql = ddl.rebuild(old, new, op.entity, renamed, _identity_select(entity))
        strategy: Strategy = "rebuild"
        hazards += _rebuild_hazard(ctx, old, op.entity)
    else:
        sql = [f"ALTER TABLE {q(op.entity)} RENAME TO {q(op.new_name)}"]
        strategy = "alter"
    return _Draft(
        summary=f"rename entity {op.entity} to {op.new_name}",
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "rename_entity", "entity": op.new_name, "new_name": op.entity}],
        hazards=hazards,
    )


# ------------------------------------------------------------------------------------------- fields


def _add_field(old: AppSpec, new: AppSpec, op: changes.AddField, ctx: _Context) -> _Draft:
    before = _entity(old, op.entity)
    entity = _entity(new, op.entity)
    f = _field(entity, op.field.name)
    ctx.created_fields.add((entity.name, f.name))
    last = entity.fields[-1].name == f.name
    retained = ctx.restores.get(("field", entity.name, f.name))
    hazards: list[Hazard] = []
    probes: list[Probe] = []
    existing = not ctx.new_entity(entity.name)
    if existing and not f.nullable and f.default is None:
        hazards.append(
            hazard(
                HazardCode.REQUIRED_FIELD,
                f"adds required field {entity.name}.{f.name} without a default",
                f"{entity.name}.{f.name}",
            )
        )
        if retained is None:
            probes.append(
                Probe(
                    kind="fail",
                    code=HazardCode.REQUIRED_FIELD,
                    message=f"existing rows of {entity.name} would have no value for {f.name}",
                    sql=f"SELECT {cols(before.primary_key)} FROM {q(entity.name)}",
                )
            )
    if existing and f.default_expr is not None and f.default_expr.expr in {"now()", "uuid()", "current_date"}:
        hazards.append(
            hazard(
                HazardCode.VOLATILE_DEFAULT,
                f"existing rows of {entity.name} get {f.default_expr.expr} at deploy time",
                f"{entity.name}.{f.name}",
            )
        )
    frozen = _frozen(ctx, old, before)
    # DuckDB adds a nullable column to any table, but a NOT NULL one only to a table nothing depends on.
    # Restoring retained values is a rebuild: an UPDATE would block later index builds in the transaction.
    # A reference needs a rebuild only when DuckDB's FOREIGN KEY enforces it; the runtime's check
    # needs just the new column and its index.
    # Likewise a check: DuckDB cannot add a column with a CHECK, the runtime checks it at deploy.
    duckdb_checks = new.checked_by == "duckdb"
    duckdb_constraint = duckdb_checks and bool(f.references or f.check)
    simple = last and not duckdb_constraint and retained is None and not (frozen and not f.nullable)
    restores = [retained.table] if retained is not None else []
    if simple:
        sql = [f"ALTER TABLE {q(entity.name)} ADD COLUMN {ddl.column_def(f, with_check=duckdb_checks)}"]
        sql += [
            ddl.create_index(entity, i)
            for i in ddl.indexes_of(new, entity)
            if i not in ddl.indexes_of(old, before)
        ]
        if f.references:
            ctx.indexed.add(entity.name)
        strategy: Strategy = "alter"
    else:
        select = _identity_select(before)
        source = None
        if retained is not None:
            fallback = ddl.default_sql(f) or "NULL"
            # Retained rows keep their value (NULL included); rows written since get the default.
            select[f.name] = (
                f"CASE WHEN r.{q(entity.primary_key[0])} IS NOT NULL THEN r.{q(f.name)} ELSE {fallback} END"
            )
            source = (
                f"{q(entity.name)} AS o LEFT JOIN {qs(retained.table)} AS r ON {_key_join(entity, 'o', 'r')}"
            )
            if not f.nullable and f.default is None:
                probes.append(
                    Probe(
                        kind="fail",
                        code="rollback.not_lossless",
                        message=f"rows of {entity.name} written since have no value for required field {f.name}",
                        sql=(
                            f"SELECT {', '.join('o.' + q(k) for k in entity.primary_key)} FROM {q(entity.name)} AS o "
                            f"WHERE NOT EXISTS (SELECT 1 FROM {qs(retained.table)} AS r WHERE {_key_join(entity, 'o', 'r')})"
                        ),
                    )
                )
        else:
            select[f.name] = None
        ordered = {name: select.get(name) for name in entity.field_names}
        sql = ddl.rebuild(old, new, entity.name, entity, ordered, source)
        strategy = "rebuild"
        hazards += _rebuild_hazard(ctx, old, entity.name)
    return _Draft(
        summary=f"add field {entity.name}.{f.name}"
        + (" and restore its retained values" if restores else ""),
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "drop_field", "entity": entity.name, "field": f.name}],
        restores=restores,
        probes=probes,
        hazards=hazards,
    )


def _drop_field(old: AppSpec, new: AppSpec, op: changes.DropField, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    f = _field(entity, op.field)
    after = _entity(new, op.entity)
    table = ctx.retention_table()
    keys = cols(entity.primary_key)
    retain_sql = f"CREATE TABLE {qs(table)} AS SELECT {keys}, {q(f.name)} FROM {q(entity.name)}"
    # DuckDB refuses DROP COLUMN when a key's index covers a column after it.
    keyed = set(entity.primary_key).union(*entity.unique, (g.name for g in entity.fields if g.references))
    later = entity.field_names[entity.field_names.index(f.name) + 1 :]
    alterable = (
        not _frozen(ctx, old, entity)
        and not (f.references and old.checked_by == "duckdb")
        and not _checks_mention(old, entity, f.name)
        and not keyed.intersection(later)
    )
    if alterable:
        sql = [retain_sql, f"ALTER TABLE {q(entity.name)} DROP COLUMN {q(f.name)}"]
        strategy: Strategy = "alter"
        hazards: list[Hazard] = []
    else:
        select = {n: f"o.{q(n)}" for n in after.field_names}
        sql = [retain_sql, *ddl.rebuild(old, new, entity.name, after, dict(select))]
        strategy = "rebuild"
        hazards = _rebuild_hazard(ctx, old, entity.name)
    if not ctx.new_field(entity.name, f.name):
        hazards.insert(
            0,
            hazard(
                HazardCode.DROP_FIELD,
                f"drops field {entity.name}.{f.name} and its values"
                + usage.users_text(usage.field_users(old, entity.name, f.name)),
                f"{entity.name}.{f.name}",
            ),
        )
    position = entity.field_names.index(f.name)
    reverse = {
        "op": "add_field",
        "entity": entity.name,
        "field": f.model_dump(mode="json"),
        "position": position,
    }
    return _Draft(
        summary=f"drop field {entity.name}.{f.name} (values retained in {ddl.SYSTEM_SCHEMA}.{table})",
        strategy=strategy,
        sql=sql,
        reverse=[reverse],
        retains=[
            Retention(table=table, kind="field", entity=entity.name, field=f.name, key=entity.primary_key)
        ],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.DROP_FIELD,
                message=f"non-null values of {entity.name}.{f.name} removed",
                sql=f"SELECT {keys}, {q(f.name)} FROM {q(entity.name)} WHERE {q(f.name)} IS NOT NULL",
            )
        ],
        hazards=hazards,
    )


def _rename_field(old: AppSpec, new: AppSpec, op: changes.RenameField, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    f = _field(entity, op.field)
    after = _entity(new, op.entity)
    if (entity.name, f.name) in ctx.created_fields:
        ctx.created_fields.add((entity.name, op.new_name))
    linked = old.checked_by == "duckdb" and (
        bool(f.references)
        or any(ref.reference == (entity.name, f.name) for _, ref in old.referencing(entity.name))
    )
    hazards = (
        []
        if ctx.new_field(entity.name, f.name)
        else [
            hazard(
                HazardCode.RENAME_FIELD,
                f"renames field {entity.name}.{f.name} to {op.new_name}"
                + usage.users_text(usage.field_users(old, entity.name, f.name)),
                f"{entity.name}.{f.name}",
            )
        ]
    )
    if _frozen(ctx, old, entity) or linked:
        select = {n: f"o.{q(op.field if n == op.new_name else n)}" for n in after.field_names}
        sql = ddl.rebuild(old, new, entity.name, after, dict(select))
        strategy: Strategy = "rebuild"
        hazards += _rebuild_hazard(ctx, old, entity.name)
    else:
        sql = [f"ALTER TABLE {q(entity.name)} RENAME COLUMN {q(f.name)} TO {q(op.new_name)}"]
        strategy = "alter"
    return _Draft(
        summary=f"rename field {entity.name}.{f.name} to {op.new_name}",
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "rename_field", "entity": entity.name, "field": op.new_name, "new_name": f.name}],
        hazards=hazards,
    )


def _alter_field(old: AppSpec, new: AppSpec, op: changes.AlterField, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    before = _field(entity, op.field)
    after_entity = _entity(new, op.entity)
    after = _field(after_entity, op.field)
    name, label, table_q, col = entity.name, f"{entity.name}.{before.name}", q(entity.name), q(before.name)
    fresh = ctx.new_field(name, before.name)
    keys = cols(entity.primary_key)
    hazards: list[Hazard] = []
    probes: list[Probe] = []
    retains: list[Retention] = []
    sql: list[str] = []
    needs_rebuild = _frozen(ctx, old, entity)
    duckdb_checks = new.checked_by == "duckdb"
    in_key = before.name in entity.primary_key or any(before.name in u for u in entity.unique)
    alters: list[str] = []
    expr = f"o.{col}"

    type_changed = after.type != before.type
    if type_changed:
        new_type, old_type = duckdb_type(after.type), duckdb_type(before.type)
        widening = is_widening(before.type, after.type)
        if not widening or in_key or (duckdb_checks and (before.check or after.check)):
            needs_rebuild = True
        alters.append(f"ALTER TABLE {table_q} ALTER COLUMN {col} TYPE {new_type}")
        expr = f"CAST(o.{col} AS {new_type})"
        if not widening:
            if not fresh:
                hazards.append(
                    hazard(
                        HazardCode.LOSSY_TYPE_CHANGE,
                        f"changes {label} from {before.type} to {after.type}"
                        + usage.users_text(usage.field_users(old, name, before.name)),
                        label,
                    )
                )
            probes.append(
                Probe(
                    kind="fail",
                    code=HazardCode.LOSSY_TYPE_CHANGE,
                    message=f"values of {label} that do not convert to {after.type}",
                    sql=f"SELECT {keys}, {col} FROM {table_q} WHERE {col} IS NOT NULL AND TRY_CAST({col} AS {new_type}) IS NULL",
                )
            )
            probes.append(
                Probe(
                    kind="loss",
                    code=HazardCode.LOSSY_TYPE_CHANGE,
                    message=f"values of {label} changed by the conversion (retained)",
                    sql=(
                        f"SELECT {keys}, {col} FROM {table_q} WHERE {col} IS NOT NULL AND "
                        f"CAST(TRY_CAST({col} AS {new_type}) AS {old_type}) IS DISTINCT FROM {col}"
                    ),
                )
            )
    # Keep every value the change overwrites: lossy conversions, and the NULLs a backfill replaces.
    lossy = [f"{col} IS NOT NULL"] if type_changed and not is_widening(before.type, after.type) else []
    if op.backfill is not None and before.nullable and not after.nullable:
        lossy.append(f"{col} IS NULL")
    if lossy:
        table = ctx.retention_table()
        sql.append(
            f"CREATE TABLE {qs(table)} AS SELECT {keys}, {col} FROM {table_q} WHERE {' OR '.join(lossy)}"
        )
        retains.append(
            Retention(table=table, kind="values", entity=name, field=before.name, key=entity.primary_key)
        )

    retained = ctx.restores.get(("values", name, before.name))
    restores: list[str] = []
    source = None
    if retained is not None:
        needs_rebuild = True
        restores.append(retained.table)
        expr = f"CASE WHEN r.{q(entity.primary_key[0])} IS NOT NULL THEN r.{col} ELSE {expr} END"
        source = f"{table_q} AS o LEFT JOIN {qs(retained.table)} AS r ON {_key_join(entity, 'o', 'r')}"

    if after.nullable and not before.nullable:
        if before.name in entity.primary_key:
            needs_rebuild = True
        alters.append(f"ALTER TABLE {table_q} ALTER COLUMN {col} DROP NOT NULL")
        if not fresh:
            hazards.append(hazard(HazardCode.DROP_NOT_NULL, f"allows NULL in {label}", label))
    if before.nullable and not after.nullable:
        if op.backfill is not None:
            needs_rebuild = True
            expr = f"COALESCE({expr}, {ddl.literal(op.backfill, after.type)})"
        else:
            alters.append(f"ALTER TABLE {table_q} ALTER COLUMN {col} SET NOT NULL")
            probes.append(
                Probe(
                    kind="fail",
                    code=HazardCode.SET_NOT_NULL if restores == [] else "rollback.not_lossless",
                    message=f"rows with NULL in {label}",
                    sql=f"SELECT {keys} FROM {table_q} WHERE {col} IS NULL",
                )
            )
        if not fresh:
            hazards.append(hazard(HazardCode.SET_NOT_NULL, f"makes {label} NOT NULL", label))
    if after.default != before.default or (type_changed and after.default is not None):
        default = ddl.default_sql(after)  # a constant default is typed, so a type change re-states it
        alters.append(
            f"ALTER TABLE {table_q} ALTER COLUMN {col} "
            + (f"SET DEFAULT {default}" if default else "DROP DEFAULT")
        )
    if after.default != before.default and not fresh:
        hazards.append(hazard(HazardCode.DEFAULT_CHANGED, f"changes the default of {label}", label))
    if after.check != before.check:
        # DuckDB can neither add nor drop a CHECK in place; the runtime's checks are only the spec's
        needs_rebuild = needs_rebuild or duckdb_checks
        if after.check:
            probes.append(
                Probe(
                    kind="fail",
                    code=HazardCode.ADD_CHECK,
                    message=f"rows violating the new check on {label}",
                    sql=f"SELECT {keys}, {col} FROM {table_q} WHERE NOT ({ddl.check(after.check)})",
                )
            )
            if not fresh:
                hazards.append(hazard(HazardCode.ADD_CHECK, f"adds check ({after.check}) to {label}", label))
        elif not fresh:
            hazards.append(hazard(HazardCode.DROP_CONSTRAINT, f"drops the check on {label}", label))

    if needs_rebuild:
        select = _identity_select(after_entity)
        select[before.name] = expr
        sql += ddl.rebuild(old, new, name, after_entity, select, source)
        strategy: Strategy = "rebuild"
        hazards += _rebuild_hazard(ctx, old, name)
    else:
        sql += alters
        strategy = "alter" if sql else "catalog"
    reverse: dict[str, Any] = {"op": "alter_field", "entity": name, "field": before.name}
    if type_changed:
        reverse["type"] = before.type
    if after.nullable != before.nullable:
        reverse["nullable"] = before.nullable
    if after.default != before.default:
        if before.default is None:
            reverse["drop_default"] = True
        else:
            reverse["default"] = before.model_dump(mode="json")["default"]
    if after.check != before.check:
        if before.check is None:
            reverse["drop_check"] = True
        else:
            reverse["check"] = before.check
    return _Draft(
        summary=f"alter field {label}",
        strategy=strategy,
        sql=sql,
        reverse=[reverse],
        retains=retains,
        restores=restores,
        probes=probes,
        hazards=hazards,
    )


# ------------------------------------------------------------------------------ uniques and indexes


def _add_unique(old: AppSpec, new: AppSpec, op: changes.AddUnique, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    after = _entity(new, op.entity)
    hazards: list[Hazard] = []
    if _frozen(ctx, old, entity):
        sql = ddl.rebuild(old, new, entity.name, after, _identity_select(after))
        strategy: Strategy = "rebuild"
        hazards += _rebuild_hazard(ctx, old, entity.name)
    else:
        sql = [f"ALTER TABLE {q(entity.name)} ADD UNIQUE ({cols(op.columns)})"]
        strategy = "alter"
    fresh = ctx.new_entity(entity.name) or all(ctx.new_field(entity.name, c) for c in op.columns)
    if not fresh:
        hazards.insert(
            0,
            hazard(
                HazardCode.ADD_UNIQUE, f"makes ({', '.join(op.columns)}) unique in {entity.name}", entity.name
            ),
        )
    dupes = (
        f"SELECT {cols(op.columns)}, count(*) AS copies FROM {q(entity.name)} "
        f"WHERE {' AND '.join(q(c) + ' IS NOT NULL' for c in op.columns)} GROUP BY ALL HAVING count(*) > 1"
    )
    return _Draft(
        summary=f"add unique ({', '.join(op.columns)}) on {entity.name}",
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "drop_unique", "entity": entity.name, "columns": list(op.columns)}],
        probes=[
            Probe(
                kind="fail",
                code=HazardCode.ADD_UNIQUE,
                message=f"duplicate ({', '.join(op.columns)}) in {entity.name}",
                sql=dupes,
            )
        ],
        hazards=hazards,
    )


def _drop_unique(old: AppSpec, new: AppSpec, op: changes.DropUnique, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    after = _entity(new, op.entity)
    hazards = (
        []
        if ctx.new_entity(entity.name)
        else [
            hazard(
                HazardCode.DROP_CONSTRAINT,
                f"drops unique ({', '.join(op.columns)}) on {entity.name}",
                entity.name,
            )
        ]
    )
    return _Draft(
        summary=f"drop unique ({', '.join(op.columns)}) on {entity.name}",
        strategy="rebuild",
        sql=ddl.rebuild(old, new, entity.name, after, _identity_select(after)),
        reverse=[{"op": "add_unique", "entity": entity.name, "columns": list(op.columns)}],
        hazards=hazards + _rebuild_hazard(ctx, old, entity.name),
    )


def _add_index(old: AppSpec, new: AppSpec, op: changes.AddIndex, ctx: _Context) -> _Draft:
    entity = _entity(new, op.entity)
    ctx.indexed.add(entity.name)
    return _Draft(
        summary=f"add index {op.index.name} on {entity.name}",
        strategy="create",
        sql=[ddl.create_index(entity, op.index)],
        reverse=[{"op": "drop_index", "entity": entity.name, "name": op.index.name}],
        hazards=[
            hazard(
                HazardCode.INDEX_FREEZES,
                f"index {op.index.name} freezes ALTERs on {entity.name}",
                entity.name,
            )
        ],
    )


def _drop_index(old: AppSpec, new: AppSpec, op: changes.DropIndex, ctx: _Context) -> _Draft:
    entity = _entity(old, op.entity)
    index = next(i for i in entity.indexes if i.name == op.name)
    return _Draft(
        summary=f"drop index {op.name} on {entity.name}",
        strategy="drop",
        sql=[f"DROP INDEX {q(op.name)}"],
        reverse=[{"op": "add_index", "entity": entity.name, "index": index.model_dump(mode="json")}],
    )


# ----------------------------------------------------------------------- views, invariants, actions


def _add_view(old: AppSpec, new: AppSpec, op: changes.AddView, ctx: _Context) -> _Draft:
    ctx.created_other.add(f"view:{op.view.name}")
    return _Draft(
        f"add view {op.view.name}",
        "catalog",
        [],
        [{"op": "drop_view", "name": op.view.name}],
    )


def _replace_view(old: AppSpec, new: AppSpec, op: changes.ReplaceView, ctx: _Context) -> _Draft:
    previous = old.view(op.view.name)
    assert previous is not None
    return _Draft(
        f"replace view {op.view.name}",
        "catalog",
        [],
        [{"op": "replace_view", "view": previous.model_dump(mode="json")}],
    )


def _drop_view(old: AppSpec, new: AppSpec, op: changes.DropView, ctx: _Context) -> _Draft:
    previous = old.view(op.name)
    assert previous is not None
    return _Draft(
        f"drop view {op.name}",
        "catalog",
        [],
        [{"op": "add_view", "view": previous.model_dump(mode="json")}],
        hazards=[]
        if f"view:{op.name}" in ctx.created_other
        else [hazard(HazardCode.DROP_VIEW, f"drops view {op.name}", op.name)],
    )


def _add_invariant(old: AppSpec, new: AppSpec, op: changes.AddInvariant, ctx: _Context) -> _Draft:
    ctx.created_other.add(f"invariant:{op.invariant.name}")
    return _Draft(
        f"add invariant {op.invariant.name}",
        "catalog",
        [],
        [{"op": "drop_invariant", "name": op.invariant.name}],
    )


def _drop_invariant(old: AppSpec, new: AppSpec, op: changes.DropInvariant, ctx: _Context) -> _Draft:
    previous = old.invariant(op.name)
    assert previous is not None
    return _Draft(
        f"drop invariant {op.name}",
        "catalog",
        [],
        [{"op": "add_invariant", "invariant": previous.model_dump(mode="json")}],
        hazards=[]
        if f"invariant:{op.name}" in ctx.created_other
        else [hazard(HazardCode.DROP_INVARIANT, f"stops enforcing invariant {op.name}", op.name)],
    )


def _add_action(old: AppSpec, new: AppSpec, op: changes.AddAction, ctx: _Context) -> _Draft:
    ctx.created_other.add(f"action:{op.action.name}")
    return _Draft(
        f"add action {op.action.name}", "catalog", [], [{"op": "drop_action", "name": op.action.name}]
    )


def _replace_action(old: AppSpec, new: AppSpec, op: changes.ReplaceAction, ctx: _Context) -> _Draft:
    previous = old.action(op.action.name)
    assert previous is not None
    draft = _Draft(
        f"replace action {op.action.name}",
        "catalog",
        [],
        [{"op": "replace_action", "action": previous.model_dump(mode="json")}],
    )
    if not _params_compatible(previous.params, op.action.params):
        _callers_hazard(draft, old, op.action.name, "changes the parameters of")
    return draft


def _drop_action(old: AppSpec, new: AppSpec, op: changes.DropAction, ctx: _Context) -> _Draft:
    previous = old.action(op.name)
    assert previous is not None
    draft = _Draft(
        f"drop action {op.name}",
        "catalog",
        [],
        [{"op": "add_action", "action": previous.model_dump(mode="json")}],
        hazards=[]
        if f"action:{op.name}" in ctx.created_other
        else [hazard(HazardCode.DROP_ACTION, f"drops action {op.name}", op.name)],
    )
    _callers_hazard(draft, old, op.name, "drops")
    return draft


def _set_checked_by(old: AppSpec, new: AppSpec, op: changes.SetCheckedBy, ctx: _Context) -> _Draft:
    """Rebuild every table that holds a reference or a check: without DuckDB FOREIGN KEYs and CHECKs
    and with the runtime's reference indexes (``buttress``: children first, so no table is dropped
    while a FOREIGN KEY holds it), or with them again (``duckdb``: parents first, each built under
    its final name)."""
    order = [e for e in ddl.entity_order(old) if any(f.references or f.check for f in e.fields)]
    sql: list[str] = []
    to_duckdb = op.by == "duckdb"
    for entity in order if to_duckdb else reversed(order):
        name, columns = entity.name, ddl.cols(entity.field_names)
        if to_duckdb:
            stash = q(f"{name}__old")
            sql += [
                f"CREATE TEMP TABLE {stash} AS SELECT * FROM {q(name)}",
                f"DROP TABLE {q(name)}",
                ddl.create_table(entity, duckdb_checks=True),
                f"INSERT INTO {q(name)} ({columns}) SELECT {columns} FROM {stash}",
                f"DROP TABLE {stash}",
            ]
        else:
            temp = q(f"{name}__rebuild")
            sql += [
                ddl.create_table(entity, f"{name}__rebuild", duckdb_checks=False),
                f"INSERT INTO {temp} ({columns}) SELECT {columns} FROM {q(name)}",
                f"DROP TABLE {q(name)}",
                f"ALTER TABLE {temp} RENAME TO {q(name)}",
            ]
        sql += [ddl.create_index(entity, index) for index in ddl.indexes_of(new, entity)]
        ctx.indexed.add(name)
    return _Draft(
        summary=f"references and checks checked by {op.by}"
        + (f" (rebuilds {', '.join(e.name for e in order)})" if order else ""),
        strategy="rebuild" if order else "catalog",
        sql=sql,
        reverse=[{"op": "set_checked_by", "by": old.checked_by}],
        hazards=[
            hazard(HazardCode.TABLE_REBUILD, f"rebuilds table {e.name} in one transaction", e.name)
            for e in order
        ],
    )


# --------------------------------------------------------------- topics, workflows, subscriptions
#
# These change no table of the application: the spec, and the runtime's own rows of the work in
# flight. Runs finish on the definition they started with; what a change can strand is found by
# probes over ``_buttress.runs`` and ``_buttress.messages`` at dry-run, named, and either reported
# (runs in flight, messages converted or held, with their values retained) or refused (a run that
# would call an action that is gone, a message that cannot take the new shape).


def _params_compatible(before: Sequence[Any], after: Sequence[Any]) -> bool:
    """A caller of ``before`` (a step of a run in flight) can call ``after``: every old parameter is
    still there with its type, and every new one may be omitted."""
    new = {p.name: p for p in after}
    old = {p.name: p for p in before}
    for name, param in old.items():
        if name not in new or new[name].type != param.type or (param.nullable and not new[name].nullable):
            return False
    return all(p.nullable for n, p in new.items() if n not in old)


def _callers_hazard(draft: _Draft, old: AppSpec, action: str, verb: str) -> None:
    """Name the workflows whose definitions call ``action``: their runs in flight keep calling it. Whether
    one of them would be stranded is a fact the dry-run finds (``workflow.stranded``), not a guess."""
    callers = sorted(w.name for w in old.workflows if action in w.calls)
    if callers:
        draft.hazards.append(
            hazard(
                HazardCode.RUNS_IN_FLIGHT,
                f"{verb} action {action}, which workflow {', '.join(callers)} calls; the dry-run checks "
                "every run in flight against the new version",
                action,
            )
        )


def _release_held(topic: TopicSpec) -> list[str]:
    """Messages held back when ``topic`` was dropped, released when it comes back with a payload they
    fit: first given exactly its fields (typed, null where absent), then let go."""
    held = f"topic = {ddl.string(topic.name)} AND held IS NOT NULL AND {_fits(topic)}"
    return [
        f"UPDATE _buttress.messages SET payload = {_shaped(topic)} WHERE {held}",
        f"UPDATE _buttress.messages SET held = NULL WHERE {held}",
    ]


def _fits(topic: TopicSpec, alias: str = "") -> str:
    """SQL: a message's payload has every required field of ``topic``, no other, and values that convert
    to the fields' types."""
    prefix = f"{alias}." if alias else ""
    names = ", ".join(ddl.string(f.name) for f in topic.payload)
    conditions = [f"list_has_all([{names}], json_keys({prefix}payload))"]
    for f in topic.payload:
        path = ddl.string("$." + f.name)
        if not f.nullable:
            conditions.append(f"json_type(json_extract({prefix}payload, {path})) IS DISTINCT FROM 'NULL'")
        if f.type not in {"text", "json"}:
            raw = f"json_extract_string({prefix}payload, {path})"
            conditions.append(f"({raw} IS NULL OR TRY_CAST({raw} AS {duckdb_type(f.type)}) IS NOT NULL)")
    return " AND ".join(conditions)


def _shaped(topic: TopicSpec) -> str:
    """SQL: a fitting payload rebuilt with exactly the fields of ``topic``, in order, typed."""
    parts = []
    for f in topic.payload:
        path = ddl.string("$." + f.name)
        if f.type == "json":
            value = f"json_extract(payload, {path})"
        else:
            value = _typed_json(f"TRY_CAST(json_extract_string(payload, {path}) AS {duckdb_type(f.type)})", f)
        parts.append(f"{ddl.string(f.name)}, {value}")
    return f"json_object({', '.join(parts)})"


def _add_topic(old: AppSpec, new: AppSpec, op: changes.AddTopic, ctx: _Context) -> _Draft:
    ctx.created_other.add(f"topic:{op.topic.name}")
    name = ddl.string(op.topic.name)
    return _Draft(
        f"add topic {op.topic.name}",
        "catalog",
        _release_held(op.topic),
        [{"op": "drop_topic", "name": op.topic.name}],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.MESSAGES_HELD,
                message=f"held messages of {op.topic.name} that the new payload does not fit (still held)",
                sql=(
                    f"SELECT seq, message_id, payload FROM _buttress.messages WHERE topic = {name} "
                    f"AND held IS NOT NULL AND NOT ({_fits(op.topic)})"
                ),
            )
        ],
    )


def _drop_topic(old: AppSpec, new: AppSpec, op: changes.DropTopic, ctx: _Context) -> _Draft:
    previous = old.topic(op.name)
    assert previous is not None
    pending = tables.undelivered(op.name)
    reason = ddl.string(f"topic {op.name} dropped in version {ctx.target_version}")
    return _Draft(
        f"drop topic {op.name} (its undelivered messages are held back)",
        "catalog",
        [f"UPDATE _buttress.messages AS m SET held = {reason} WHERE {pending}"],
        [{"op": "add_topic", "topic": previous.model_dump(mode="json")}],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.MESSAGES_HELD,
                message=f"undelivered messages of {op.name} held back",
                sql=f"SELECT m.seq, m.message_id, m.payload FROM _buttress.messages AS m WHERE {pending}",
            )
        ],
        hazards=[]
        if f"topic:{op.name}" in ctx.created_other
        else [
            hazard(
                HazardCode.MESSAGES_HELD, f"drops topic {op.name}; its undelivered messages are held", op.name
            )
        ],
    )


def _replace_topic(old: AppSpec, new: AppSpec, op: changes.ReplaceTopic, ctx: _Context) -> _Draft:
    """Convert the undelivered messages to the new payload: dropped fields retained and removed,
    retained values of re-added fields restored; a message that cannot take the new shape fails."""
    before = old.topic(op.topic.name)
    assert before is not None
    after = op.topic
    name = after.name
    pending = tables.undelivered(name)
    sql: list[str] = []
    probes: list[Probe] = []
    retains: list[Retention] = []
    restores: list[str] = []
    hazards: list[Hazard] = []
    old_fields = {f.name: f for f in before.payload}
    new_fields = {f.name: f for f in after.payload}
    for n, field_ in enumerate(f for f in before.payload if f.name not in new_fields):
        path = ddl.string("$." + field_.name)
        table = ctx.retention_table(n)
        sql.append(
            f"CREATE TABLE {qs(table)} AS SELECT m.seq, json_extract(m.payload, {path}) AS value "
            f"FROM _buttress.messages AS m WHERE {pending} AND json_exists(m.payload, {path})"
        )
        patch = ddl.string(canonical_json({field_.name: None}))
        sql.append(
            f"UPDATE _buttress.messages AS m SET payload = json_merge_patch(m.payload, {patch}) "
            f"WHERE m.seq IN (SELECT seq FROM {qs(table)})"
        )
        retains.append(Retention(table=table, kind="payload", entity=name, field=field_.name, key=("seq",)))
        probes.append(
            Probe(
                kind="loss",
                code=HazardCode.MESSAGES_CONVERTED,
                message=f"undelivered messages of {name} losing payload field {field_.name} (retained)",
                sql=(
                    f"SELECT m.seq, m.message_id, json_extract(m.payload, {path}) AS value "
                    f"FROM _buttress.messages AS m WHERE {pending} AND json_exists(m.payload, {path})"
                ),
            )
        )
        hazards.append(
            hazard(
                HazardCode.MESSAGES_CONVERTED,
                f"drops payload field {name}.{field_.name}",
                f"{name}.{field_.name}",
            )
        )
    restored: set[str] = set()
    for field_ in after.payload:
        if field_.name in old_fields:
            continue
        retained = ctx.restores.get(("payload", name, field_.name))
        if retained is not None:
            restores.append(retained.table)
            restored.add(field_.name)
            sql.append(
                f"UPDATE _buttress.messages AS m SET payload = json_merge_patch(m.payload, "
                f"json_object({ddl.string(field_.name)}, r.value)) FROM {qs(retained.table)} AS r "
                f"WHERE m.seq = r.seq AND {pending}"  # a message delivered meanwhile keeps what it was
            )
        if not field_.nullable:
            path = ddl.string("$." + field_.name)
            unless = f" AND m.seq NOT IN (SELECT seq FROM {qs(retained.table)})" if retained else ""
            probes.append(
                _stranded(
                    name,
                    f"have no value for the new required field {field_.name}",
                    f"{pending} AND NOT json_exists(m.payload, {path}){unless}",
                )
            )
    for field_ in after.payload:
        previous = old_fields.get(field_.name)
        if previous is None:
            continue
        path = ddl.string("$." + field_.name)
        if previous.type != field_.type:
            value = f"json_extract_string(m.payload, {path})"
            converted = f"TRY_CAST({value} AS {duckdb_type(field_.type)})"
            back = f"CAST({converted} AS {duckdb_type(previous.type)})"
            probes.append(
                _stranded(
                    name,
                    f"hold a {field_.name} that does not convert from {previous.type} to {field_.type} and back",
                    f"{pending} AND {value} IS NOT NULL AND ({converted} IS NULL OR {back} IS DISTINCT FROM "
                    f"TRY_CAST({value} AS {duckdb_type(previous.type)}))",
                )
            )
            sql.append(
                f"UPDATE _buttress.messages AS m SET payload = json_merge_patch(m.payload, "
                f"json_object({ddl.string(field_.name)}, {_typed_json(converted, field_)})) "
                f"WHERE {pending} AND {value} IS NOT NULL"
            )
        if previous.nullable and not field_.nullable:
            probes.append(
                _stranded(
                    name,
                    f"have no value for {field_.name}, which becomes required",
                    f"{pending} AND json_type(json_extract(m.payload, {path})) IS NOT DISTINCT FROM 'NULL'",
                )
            )
    # last: each undelivered message gets exactly the new payload's fields, in order (null where absent),
    # and says which version's shape it now has
    sql.append(
        f"UPDATE _buttress.messages AS m SET payload = {_shaped(after)}, version = {ctx.target_version} "
        f"WHERE {pending}"
    )
    if any(p.kind == "fail" for p in probes):
        hazards.append(
            hazard(
                HazardCode.MESSAGES_STRANDED,
                f"changes the payload of {name} under undelivered messages",
                name,
            )
        )
    return _Draft(
        f"replace topic {name}" + (f" (restores {', '.join(sorted(restored))})" if restored else ""),
        "catalog",
        sql,
        [{"op": "replace_topic", "topic": before.model_dump(mode="json")}],
        retains=retains,
        restores=restores,
        probes=probes,
        hazards=hazards,
    )


def _typed_json(value: str, field_: PayloadField) -> str:
    """A converted value as the JSON the payload holds: numbers and booleans as such, the rest text."""
    if field_.type in {"integer", "bigint", "double", "boolean"}:
        return value
    return f"CAST({value} AS VARCHAR)"


def _stranded(topic: str, what: str, condition: str) -> Probe:
    return Probe(
        kind="fail",
        code=HazardCode.MESSAGES_STRANDED,
        message=f"undelivered messages of {topic} that {what}",
        sql=f"SELECT m.seq, m.message_id, m.payload FROM _buttress.messages AS m WHERE {condition}",
    )


def _runs_of(workflow: str, verb: str) -> Probe:
    return Probe(
        kind="loss",
        code=HazardCode.RUNS_IN_FLIGHT,
        message=f"runs of {workflow} in flight (they finish on the definition they started with; {verb})",
        sql=tables.in_flight(f"workflow = {ddl.string(workflow)}"),
    )


def _add_workflow(old: AppSpec, new: AppSpec, op: changes.AddWorkflow, ctx: _Context) -> _Draft:
    ctx.created_other.add(f"workflow:{op.workflow.name}")
    return _Draft(
        f"add workflow {op.workflow.name}", "catalog", [], [{"op": "drop_workflow", "name": op.workflow.name}]
    )


def _replace_workflow(old: AppSpec, new: AppSpec, op: changes.ReplaceWorkflow, ctx: _Context) -> _Draft:
    previous = old.workflow(op.workflow.name)
    assert previous is not None
    name = op.workflow.name
    return _Draft(
        f"replace workflow {name}",
        "catalog",
        [],
        [{"op": "replace_workflow", "workflow": previous.model_dump(mode="json")}],
        probes=[_runs_of(name, "new runs follow the new one")],
        hazards=[
            hazard(HazardCode.RUNS_IN_FLIGHT, f"replaces workflow {name}; runs in flight keep theirs", name)
        ],
    )


def _drop_workflow(old: AppSpec, new: AppSpec, op: changes.DropWorkflow, ctx: _Context) -> _Draft:
    previous = old.workflow(op.name)
    assert previous is not None
    return _Draft(
        f"drop workflow {op.name}",
        "catalog",
        [],
        [{"op": "add_workflow", "workflow": previous.model_dump(mode="json")}],
        probes=[_runs_of(op.name, "no new run starts")],
        hazards=[]
        if f"workflow:{op.name}" in ctx.created_other
        else [hazard(HazardCode.RUNS_IN_FLIGHT, f"drops workflow {op.name}; runs in flight finish", op.name)],
    )


def _cursor_sql(name: str, topic: str) -> str:
    """A subscription starts at the end of its topic; added again, it resumes where it stopped."""
    return (
        "INSERT INTO _buttress.cursors (subscription, topic, last_seq, active) "
        f"SELECT {ddl.string(name)}, {ddl.string(topic)}, coalesce(max(seq), 0), TRUE FROM _buttress.messages "
        "ON CONFLICT (subscription) DO UPDATE SET active = TRUE"
    )


def _add_subscription(old: AppSpec, new: AppSpec, op: changes.AddSubscription, ctx: _Context) -> _Draft:
    name = op.subscription.name
    return _Draft(
        f"add subscription {name} ({op.subscription.topic} -> "
        f"{op.subscription.workflow or op.subscription.action})",
        "catalog",
        [_cursor_sql(name, op.subscription.topic)],
        [{"op": "drop_subscription", "name": name}],
    )


def _replace_subscription(
    old: AppSpec, new: AppSpec, op: changes.ReplaceSubscription, ctx: _Context
) -> _Draft:
    previous = old.subscription(op.subscription.name)
    assert previous is not None
    name = ddl.string(op.subscription.name)
    sql = []
    if previous.topic != op.subscription.topic:  # a new topic: from its end
        sql.append(
            f"UPDATE _buttress.cursors SET topic = {ddl.string(op.subscription.topic)}, last_seq = "
            f"(SELECT coalesce(max(seq), 0) FROM _buttress.messages) WHERE subscription = {name}"
        )
    return _Draft(
        f"replace subscription {op.subscription.name}",
        "catalog",
        sql,
        [{"op": "replace_subscription", "subscription": previous.model_dump(mode="json")}],
    )


def _drop_subscription(old: AppSpec, new: AppSpec, op: changes.DropSubscription, ctx: _Context) -> _Draft:
    previous = old.subscription(op.name)
    assert previous is not None
    name = ddl.string(op.name)
    return _Draft(
        f"drop subscription {op.name}",
        "catalog",
        [f"UPDATE _buttress.cursors SET active = FALSE WHERE subscription = {name}"],
        [{"op": "add_subscription", "subscription": previous.model_dump(mode="json")}],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.SUBSCRIPTION_DROPPED,
                message=f"messages subscription {op.name} has not processed yet",
                sql=(
                    "SELECT m.seq, m.message_id FROM _buttress.messages AS m JOIN _buttress.cursors AS c "
                    f"ON c.topic = m.topic WHERE c.subscription = {name} AND m.seq > c.last_seq AND m.held IS NULL"
                ),
            )
        ],
        hazards=[hazard(HazardCode.SUBSCRIPTION_DROPPED, f"drops subscription {op.name}", op.name)],
    )


_PLANNERS: dict[type[Any], Callable[[AppSpec, AppSpec, Any, _Context], _Draft]] = {
    changes.AddEntity: _add_entity,
    changes.DropEntity: _drop_entity,
    changes.RenameEntity: _rename_entity,
    changes.AddField: _add_field,
    changes.DropField: _drop_field,
    changes.RenameField: _rename_field,
    changes.AlterField: _alter_field,
    changes.AddUnique: _add_unique,
    changes.DropUnique: _drop_unique,
    changes.AddIndex: _add_index,
    changes.DropIndex: _drop_index,
    changes.AddView: _add_view,
    changes.ReplaceView: _replace_view,
    changes.DropView: _drop_view,
    changes.AddInvariant: _add_invariant,
    changes.DropInvariant: _drop_invariant,
    changes.AddAction: _add_action,
    changes.ReplaceAction: _replace_action,
    changes.DropAction: _drop_action,
    changes.SetCheckedBy: _set_checked_by,
    changes.AddTopic: _add_topic,
    changes.ReplaceTopic: _replace_topic,
    changes.DropTopic: _drop_topic,
    changes.AddWorkflow: _add_workflow,
    changes.ReplaceWorkflow: _replace_workflow,
    changes.DropWorkflow: _drop_workflow,
    changes.AddSubscription: _add_subscription,
    changes.ReplaceSubscription: _replace_subscription,
    changes.DropSubscription: _drop_subscription,
}

__all__ = ["Plan", "Probe", "Retention", "Step", "plan"]
