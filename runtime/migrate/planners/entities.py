"""Rules for the tables themselves: entities (created, dropped with their rows retained, renamed),
unique keys, indexes, and who checks references and checks (``set_checked_by``).

Where DuckDB cannot ALTER a table, the step is a single-transaction rebuild (``ddl.rebuild``).
"""

from __future__ import annotations

from runtime.migrate import ddl
from runtime.migrate.ddl import cols, q, qs
from runtime.migrate.hazards import Hazard, HazardCode, hazard
from runtime.migrate.planners.draft import (
    Context,
    Draft,
    entity_of,
    frozen_in,
    identity_select,
    rebuild_hazard,
)
from runtime.migrate.steps import Probe, Retention, Strategy
from runtime.schema import changes
from runtime.schema.spec import AppSpec, EntitySpec


def _restore_entity_sql(entity: EntitySpec, retention: Retention) -> str:
    names = cols(entity.field_names)
    return f"INSERT INTO {q(entity.name)} ({names}) SELECT {names} FROM {qs(retention.table)}"


def add_entity(old: AppSpec, new: AppSpec, op: changes.AddEntity, ctx: Context) -> Draft:
    entity = entity_of(new, op.entity.name)
    ctx.created.add(entity.name)
    if ddl.indexes_of(new, entity):
        ctx.indexed.add(entity.name)
    sql = ddl.create_entity(entity, new, ctx.dialect)
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
    return Draft(
        summary=f"create entity {entity.name}" + (" and restore its retained rows" if restores else ""),
        strategy="create",
        sql=sql,
        reverse=[{"op": "drop_entity", "entity": entity.name}],
        restores=restores,
        hazards=hazards,
    )


def drop_entity(old: AppSpec, new: AppSpec, op: changes.DropEntity, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    table = ctx.retention_table()
    retention = Retention(table=table, kind="entity", entity=entity.name, key=entity.primary_key)
    hazards = (
        []
        if ctx.new_entity(entity.name)
        else [hazard(HazardCode.DROP_ENTITY, f"drops entity {entity.name} and every row in it", entity.name)]
    )
    return Draft(
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


def rename_entity(old: AppSpec, new: AppSpec, op: changes.RenameEntity, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    renamed = entity_of(new, op.new_name)
    if op.entity in ctx.created:
        ctx.created.add(op.new_name)
    was_frozen = frozen_in(ctx, old, entity)
    if op.entity in ctx.indexed:
        ctx.indexed.add(op.new_name)
    hazards = (
        []
        if ctx.new_entity(op.entity)
        else [hazard(HazardCode.RENAME_ENTITY, f"renames entity {op.entity} to {op.new_name}", op.entity)]
    )
    if was_frozen or (old.checked_by == "duckdb" and any(f.references for f in entity.fields)):
        sql = ddl.rebuild(old, new, op.entity, renamed, identity_select(entity), dialect=ctx.dialect)
        strategy: Strategy = "rebuild"
        hazards += rebuild_hazard(ctx, old, op.entity)
    else:
        sql = [
            f"ALTER TABLE {q(op.entity)} RENAME TO {q(op.new_name)}",
            *ddl.rename_reference_indexes(old, entity, new, renamed),
        ]
        strategy = "alter"
    return Draft(
        summary=f"rename entity {op.entity} to {op.new_name}",
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "rename_entity", "entity": op.new_name, "new_name": op.entity}],
        hazards=hazards,
    )


def add_unique(old: AppSpec, new: AppSpec, op: changes.AddUnique, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    after = entity_of(new, op.entity)
    hazards: list[Hazard] = []
    if frozen_in(ctx, old, entity):
        sql = ddl.rebuild(old, new, entity.name, after, identity_select(after), dialect=ctx.dialect)
        strategy: Strategy = "rebuild"
        hazards += rebuild_hazard(ctx, old, entity.name)
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
        f"WHERE {' AND '.join(q(c) + ' IS NOT NULL' for c in op.columns)} GROUP BY {cols(op.columns)} HAVING count(*) > 1"
    )
    return Draft(
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


def drop_unique(old: AppSpec, new: AppSpec, op: changes.DropUnique, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    after = entity_of(new, op.entity)
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
    return Draft(
        summary=f"drop unique ({', '.join(op.columns)}) on {entity.name}",
        strategy="rebuild",
        sql=ddl.rebuild(old, new, entity.name, after, identity_select(after), dialect=ctx.dialect),
        reverse=[{"op": "add_unique", "entity": entity.name, "columns": list(op.columns)}],
        hazards=hazards + rebuild_hazard(ctx, old, entity.name),
    )


def add_index(old: AppSpec, new: AppSpec, op: changes.AddIndex, ctx: Context) -> Draft:
    entity = entity_of(new, op.entity)
    ctx.indexed.add(entity.name)
    return Draft(
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


def drop_index(old: AppSpec, new: AppSpec, op: changes.DropIndex, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    index = next(i for i in entity.indexes if i.name == op.name)
    return Draft(
        summary=f"drop index {op.name} on {entity.name}",
        strategy="drop",
        sql=[f"DROP INDEX {q(op.name)}"],
        reverse=[{"op": "add_index", "entity": entity.name, "index": index.model_dump(mode="json")}],
    )


def set_checked_by(old: AppSpec, new: AppSpec, op: changes.SetCheckedBy, ctx: Context) -> Draft:
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
                ddl.create_table(entity, duckdb_checks=True, dialect=ctx.dialect),
                f"INSERT INTO {q(name)} ({columns}) SELECT {columns} FROM {stash}",
                f"DROP TABLE {stash}",
            ]
        else:
            temp = q(f"{name}__rebuild")
            sql += [
                ddl.create_table(entity, f"{name}__rebuild", duckdb_checks=False, dialect=ctx.dialect),
                f"INSERT INTO {temp} ({columns}) SELECT {columns} FROM {q(name)}",
                f"DROP TABLE {q(name)}",
                f"ALTER TABLE {temp} RENAME TO {q(name)}",
            ]
        sql += [ddl.create_index(entity, index) for index in ddl.indexes_of(new, entity)]
        ctx.indexed.add(name)
    return Draft(
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
