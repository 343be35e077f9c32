"""Rules for an entity's fields: added (their retained values restored), dropped (their values
retained), renamed, and altered (type, NULL, default, check).

Each is an ALTER where DuckDB allows one, and a single-transaction table rebuild (``ddl.rebuild``)
where it does not: a frozen table, a key or a DuckDB constraint in the way, retained values to restore.
"""

from __future__ import annotations

from typing import Any

from runtime.migrate import ddl
from runtime.migrate.ddl import cols, q, qs
from runtime.migrate.hazards import Hazard, HazardCode, hazard
from runtime.migrate.planners.draft import (
    Context,
    Draft,
    entity_of,
    field_of,
    frozen_in,
    identity_select,
    key_join,
    rebuild_hazard,
)
from runtime.migrate.steps import Probe, Retention, Strategy
from runtime.schema import changes, usage
from runtime.schema.spec import AppSpec, EntitySpec
from runtime.schema.types import is_widening
from runtime.sql.dialect import DUCKDB


def _checks_mention(spec: AppSpec, entity: EntitySpec, column: str) -> bool:
    """A DuckDB CHECK of another field names ``column`` (DuckDB then refuses to drop it)."""
    return spec.checked_by == "duckdb" and any(
        f.check and f.name != column and column in _check_columns(f.check) for f in entity.fields
    )


def _check_columns(check: str) -> set[str]:
    import sqlglot
    import sqlglot.expressions as exp

    return {c.name for c in sqlglot.parse_one(check, dialect="duckdb").find_all(exp.Column)}


def add_field(old: AppSpec, new: AppSpec, op: changes.AddField, ctx: Context) -> Draft:
    before = entity_of(old, op.entity)
    entity = entity_of(new, op.entity)
    f = field_of(entity, op.field.name)
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
    frozen = frozen_in(ctx, old, before)
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
        sql = [
            f"ALTER TABLE {q(entity.name)} ADD COLUMN {ddl.column_def(f, with_check=duckdb_checks, dialect=ctx.dialect)}"
        ]
        sql += [
            ddl.create_index(entity, i)
            for i in ddl.indexes_of(new, entity)
            if i not in ddl.indexes_of(old, before)
        ]
        if f.references:
            ctx.indexed.add(entity.name)
        strategy: Strategy = "alter"
    else:
        select = identity_select(before)
        source = None
        if retained is not None:
            fallback = ddl.default_sql(f, ctx.dialect) or "NULL"
            # Retained rows keep their value (NULL included); rows written since get the default.
            select[f.name] = (
                f"CASE WHEN r.{q(entity.primary_key[0])} IS NOT NULL THEN r.{q(f.name)} ELSE {fallback} END"
            )
            source = (
                f"{q(entity.name)} AS o LEFT JOIN {qs(retained.table)} AS r ON {key_join(entity, 'o', 'r')}"
            )
            if not f.nullable and f.default is None:
                probes.append(
                    Probe(
                        kind="fail",
                        code="rollback.not_lossless",
                        message=f"rows of {entity.name} written since have no value for required field {f.name}",
                        sql=(
                            f"SELECT {', '.join('o.' + q(k) for k in entity.primary_key)} FROM {q(entity.name)} AS o "
                            f"WHERE NOT EXISTS (SELECT 1 FROM {qs(retained.table)} AS r WHERE {key_join(entity, 'o', 'r')})"
                        ),
                    )
                )
        else:
            select[f.name] = None
        ordered = {name: select.get(name) for name in entity.field_names}
        sql = ddl.rebuild(old, new, entity.name, entity, ordered, source, dialect=ctx.dialect)
        strategy = "rebuild"
        hazards += rebuild_hazard(ctx, old, entity.name)
    return Draft(
        summary=f"add field {entity.name}.{f.name}"
        + (" and restore its retained values" if restores else ""),
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "drop_field", "entity": entity.name, "field": f.name}],
        restores=restores,
        probes=probes,
        hazards=hazards,
    )


def drop_field(old: AppSpec, new: AppSpec, op: changes.DropField, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    f = field_of(entity, op.field)
    after = entity_of(new, op.entity)
    table = ctx.retention_table()
    keys = cols(entity.primary_key)
    retain_sql = f"CREATE TABLE {qs(table)} AS SELECT {keys}, {q(f.name)} FROM {q(entity.name)}"
    # DuckDB refuses DROP COLUMN when a key's index covers a column after it.
    keyed = set(entity.primary_key).union(*entity.unique, (g.name for g in entity.fields if g.references))
    later = entity.field_names[entity.field_names.index(f.name) + 1 :]
    alterable = (
        not frozen_in(ctx, old, entity)
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
        sql = [retain_sql, *ddl.rebuild(old, new, entity.name, after, dict(select), dialect=ctx.dialect)]
        strategy = "rebuild"
        hazards = rebuild_hazard(ctx, old, entity.name)
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
    return Draft(
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


def rename_field(old: AppSpec, new: AppSpec, op: changes.RenameField, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    f = field_of(entity, op.field)
    after = entity_of(new, op.entity)
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
    if frozen_in(ctx, old, entity) or linked:
        select = {n: f"o.{q(op.field if n == op.new_name else n)}" for n in after.field_names}
        sql = ddl.rebuild(old, new, entity.name, after, dict(select), dialect=ctx.dialect)
        strategy: Strategy = "rebuild"
        hazards += rebuild_hazard(ctx, old, entity.name)
    else:
        sql = [
            f"ALTER TABLE {q(entity.name)} RENAME COLUMN {q(f.name)} TO {q(op.new_name)}",
            *ddl.rename_reference_indexes(old, entity, new, after),
        ]
        strategy = "alter"
    return Draft(
        summary=f"rename field {entity.name}.{f.name} to {op.new_name}",
        strategy=strategy,
        sql=sql,
        reverse=[{"op": "rename_field", "entity": entity.name, "field": op.new_name, "new_name": f.name}],
        hazards=hazards,
    )


def alter_field(old: AppSpec, new: AppSpec, op: changes.AlterField, ctx: Context) -> Draft:
    entity = entity_of(old, op.entity)
    before = field_of(entity, op.field)
    after_entity = entity_of(new, op.entity)
    after = field_of(after_entity, op.field)
    name, label, table_q, col = entity.name, f"{entity.name}.{before.name}", q(entity.name), q(before.name)
    fresh = ctx.new_field(name, before.name)
    keys = cols(entity.primary_key)
    hazards: list[Hazard] = []
    probes: list[Probe] = []
    retains: list[Retention] = []
    sql: list[str] = []
    needs_rebuild = frozen_in(ctx, old, entity)
    duckdb_checks = new.checked_by == "duckdb"
    in_key = before.name in entity.primary_key or any(before.name in u for u in entity.unique)
    alters: list[str] = []
    expr = f"o.{col}"

    type_changed = after.type != before.type
    if type_changed:
        new_type, old_type = ctx.dialect.column_type(after.type), ctx.dialect.column_type(before.type)
        widening = is_widening(before.type, after.type)
        if not widening or in_key or (duckdb_checks and (before.check or after.check)):
            needs_rebuild = True
        using = "" if ctx.dialect is DUCKDB else f" USING CAST({col} AS {new_type})"
        alters.append(f"ALTER TABLE {table_q} ALTER COLUMN {col} TYPE {new_type}{using}")
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
                    sql=f"SELECT {keys}, {col} FROM {table_q} WHERE {col} IS NOT NULL AND {ctx.dialect.try_cast(col, after.type)} IS NULL",
                )
            )
            probes.append(
                Probe(
                    kind="loss",
                    code=HazardCode.LOSSY_TYPE_CHANGE,
                    message=f"values of {label} changed by the conversion (retained)",
                    sql=(
                        f"SELECT {keys}, {col} FROM {table_q} WHERE {col} IS NOT NULL AND "
                        f"CAST({ctx.dialect.try_cast(col, after.type)} AS {old_type}) IS DISTINCT FROM {col}"
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
        source = f"{table_q} AS o LEFT JOIN {qs(retained.table)} AS r ON {key_join(entity, 'o', 'r')}"

    if after.nullable and not before.nullable:
        if before.name in entity.primary_key:
            needs_rebuild = True
        alters.append(f"ALTER TABLE {table_q} ALTER COLUMN {col} DROP NOT NULL")
        if not fresh:
            hazards.append(hazard(HazardCode.DROP_NOT_NULL, f"allows NULL in {label}", label))
    if before.nullable and not after.nullable:
        if op.backfill is not None:
            needs_rebuild = True
            expr = f"COALESCE({expr}, {ddl.literal(op.backfill, after.type, ctx.dialect)})"
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
        default = ddl.default_sql(
            after, ctx.dialect
        )  # a constant default is typed, so a type change re-states it
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
                    sql=f"SELECT {keys}, {col} FROM {table_q} WHERE NOT ({ddl.check(after.check, ctx.dialect)})",
                )
            )
            if not fresh:
                hazards.append(hazard(HazardCode.ADD_CHECK, f"adds check ({after.check}) to {label}", label))
        elif not fresh:
            hazards.append(hazard(HazardCode.DROP_CONSTRAINT, f"drops the check on {label}", label))

    if needs_rebuild:
        select = identity_select(after_entity)
        select[before.name] = expr
        sql += ddl.rebuild(old, new, name, after_entity, select, source, dialect=ctx.dialect)
        strategy: Strategy = "rebuild"
        hazards += rebuild_hazard(ctx, old, name)
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
    return Draft(
        summary=f"alter field {label}",
        strategy=strategy,
        sql=sql,
        reverse=[reverse],
        retains=retains,
        restores=restores,
        probes=probes,
        hazards=hazards,
    )
