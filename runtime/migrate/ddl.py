"""Spec → DDL (pure). The only module that spells the CREATE statements of the application's schema.

DuckDB's by default; the functions that build a fresh schema take a ``dialect`` (``runtime.sql.dialect``)
and spell PostgreSQL's too: its column types, the engine's expressions for the spec's logical
defaults, CHECKs and views regenerated for it (``runtime.sql.render``). The rebuild strategy is still
DuckDB's (PostgreSQL alters in place: ``Dialect.needs_rebuild``).

Application tables live in ``main``; runtime objects (sequences, retained data, catalog) in ``_buttress``.

>>> from runtime.schema.spec import EntitySpec, FieldSpec
>>> e = EntitySpec(name="slot", primary_key=("id",), fields=(FieldSpec(name="id", type="integer"),))
>>> create_table(e)
'CREATE TABLE "slot" ("id" INTEGER NOT NULL, PRIMARY KEY ("id"))'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

import sqlglot.expressions as exp

from runtime.errors import Code, SpecError
from runtime.schema.spec import DEFAULT_EXPRESSIONS, AppSpec, EntitySpec, FieldSpec, IndexSpec, ViewSpec
from runtime.sql import parsing, sqlcheck
from runtime.sql.dialect import DUCKDB, Alter, Dialect
from runtime.sql.render import render, render_condition

SYSTEM_SCHEMA: Final = "_buttress"


def q(name: str) -> str:
    """Quote an identifier (names are validated, but quoting keeps keywords and case safe)."""
    return '"' + name.replace('"', '""') + '"'


def qs(name: str) -> str:
    """A name in the system schema."""
    return f"{SYSTEM_SCHEMA}.{q(name)}"


def cols(names: Iterable[str]) -> str:
    return ", ".join(q(n) for n in names)


def literal(value: Any, logical: str, dialect: Dialect = DUCKDB) -> str:
    """A constant as a typed SQL literal, built by sqlglot so quoting is never hand-rolled."""
    if logical == "json":
        text = exp.Literal.string(json.dumps(value, separators=(",", ":"))).sql(dialect=dialect.sqlglot)
        return f"CAST({text} AS {dialect.column_type('json')})"
    if isinstance(value, bool):
        node: exp.Expression = exp.Boolean(this=value)
    elif isinstance(value, int | float):
        node = exp.Literal.number(value)
    else:
        node = exp.Literal.string(str(value))
    return f"CAST({node.sql(dialect=dialect.sqlglot)} AS {dialect.column_type(logical)})"


def string(text: str) -> str:
    """A string literal, quoted by sqlglot (never by hand)."""
    return str(exp.Literal.string(text).sql(dialect="duckdb"))


def check(expression: str, dialect: Dialect = DUCKDB) -> str:
    """A CHECK expression as generated SQL: the agent's text parsed and regenerated (never pasted)."""
    rendered = sqlcheck.render_expression(expression)
    return rendered if dialect is DUCKDB else render_condition(rendered, dialect)


def default_sql(field: FieldSpec, dialect: Dialect = DUCKDB) -> str | None:
    """The column default: the engine's expression for the spec's logical one, a sequence, a literal."""
    expr = field.default_expr
    if expr is not None:
        if expr.expr == "autoincrement":
            assert expr.sequence is not None
            return f"nextval({string(f'{dialect.agent_schema}.{expr.sequence}')})"
        return dialect.default(DEFAULT_EXPRESSIONS[expr.expr])
    if field.default is None:
        return None
    return literal(field.default, field.type, dialect)


def column_def(
    field: FieldSpec, *, with_check: bool = True, force_nullable: bool = False, dialect: Dialect = DUCKDB
) -> str:
    """One column's definition; its CHECK only when DuckDB enforces checks (``with_check``)."""
    parts = [q(field.name), dialect.column_type(field.type)]
    if not field.nullable and not force_nullable:
        parts.append("NOT NULL")
    default = default_sql(field, dialect)
    if default is not None:
        parts.append(f"DEFAULT {default}")
    if with_check and field.check:
        parts.append(f"CHECK ({check(field.check, dialect)})")
    return " ".join(parts)


def create_table(
    entity: EntitySpec, name: str | None = None, *, duckdb_checks: bool = True, dialect: Dialect = DUCKDB
) -> str:
    """The full table definition: columns, NOT NULL, defaults, keys, unique sets, and, when DuckDB
    enforces them (``duckdb_checks``: a spec ``checked_by`` duckdb), CHECKs and foreign keys."""
    parts = [column_def(f, with_check=duckdb_checks, dialect=dialect) for f in entity.fields]
    if dialect is DUCKDB:
        parts.append(f"PRIMARY KEY ({cols(entity.primary_key)})")
        parts.extend(f"UNIQUE ({cols(u)})" for u in entity.unique)
    else:  # named, so that a rebuilt table can be given its constraints' names back
        named = constraint_names(entity, name or entity.name)
        parts.append(f"CONSTRAINT {q(named[0])} PRIMARY KEY ({cols(entity.primary_key)})")
        parts.extend(
            f"CONSTRAINT {q(n)} UNIQUE ({cols(u)})" for n, u in zip(named[1:], entity.unique, strict=True)
        )
    for f in entity.fields:
        ref = f.reference
        if ref is not None and duckdb_checks:
            parts.append(f"FOREIGN KEY ({q(f.name)}) REFERENCES {q(ref[0])} ({q(ref[1])})")
    return f"CREATE TABLE {q(name or entity.name)} ({', '.join(parts)})"


def constraint_names(entity: EntitySpec, table: str) -> list[str]:
    """PostgreSQL's names of ``table``'s key constraints: the primary key's, then each unique set's, as
    PostgreSQL would choose them (``t_pkey``, ``t_a_b_key``), hashed when longer than it allows."""
    names = [f"{table}_pkey", *(f"{table}_{'_'.join(u)}_key" for u in entity.unique)]
    return [
        n if len(n) <= 63 else f"{table[:40]}_{hashlib.sha256(n.encode()).hexdigest()[:16]}" for n in names
    ]


REFERENCE_INDEX = "buttress_ref_"
"""Prefix of the indexes the runtime keeps on reference fields (agents cannot use it)."""


def indexes_of(spec: AppSpec, entity: EntitySpec) -> tuple[IndexSpec, ...]:
    """The entity's indexes: its own, and, when the runtime checks references, one per reference
    field (the lookups of ``on_delete`` and of the reference checks use it)."""
    if spec.checked_by != "buttress":
        return entity.indexes
    implicit = tuple(
        IndexSpec.model_construct(name=reference_index(entity.name, f.name), columns=(f.name,))
        for f in entity.fields
        if f.references is not None
    )
    return entity.indexes + implicit


def reference_index(entity: str, field: str) -> str:
    """The runtime's name for the index of a reference field (a prefix agents cannot use)."""
    name = f"{REFERENCE_INDEX}{entity}_{field}"
    if len(name) > 63:
        name = REFERENCE_INDEX + hashlib.sha256(f"{entity}.{field}".encode()).hexdigest()[:16]
    return name


def rename_reference_indexes(old: AppSpec, before: EntitySpec, new: AppSpec, after: EntitySpec) -> list[str]:
    """``ALTER INDEX ... RENAME`` for the runtime's reference indexes whose names a rename of the
    entity or of one of its fields changes, when the table is altered in place (PostgreSQL keeps an
    index's name through a rename; a rebuild creates the indexes under their new names). The
    implicit indexes follow the reference fields in order, and a rename keeps that order."""
    prior = [i for i in indexes_of(old, before) if i.name.startswith(REFERENCE_INDEX)]
    later = [i for i in indexes_of(new, after) if i.name.startswith(REFERENCE_INDEX)]
    return [
        f"ALTER INDEX {q(a.name)} RENAME TO {q(b.name)}"
        for a, b in zip(prior, later, strict=False)
        if a.name != b.name
    ]


def create_index(entity: EntitySpec, index: IndexSpec) -> str:
    return f"CREATE INDEX {q(index.name)} ON {q(entity.name)} ({cols(index.columns)})"


def create_view(view: ViewSpec, *, replace: bool = False, dialect: Dialect = DUCKDB) -> str:
    """The view's SELECT on lines of its own, terminator removed (``parsing.statement_body``); on
    PostgreSQL, regenerated from the analysed tree (``render``)."""
    verb = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
    body = parsing.statement_body(view.sql) if dialect is DUCKDB else render(view.sql, dialect).text
    return f"{verb} {q(view.name)} AS\n{body}\n"


def sequences(entity: EntitySpec, dialect: Dialect = DUCKDB) -> list[str]:
    """The sequences behind the entity's autoincrement fields (where agent statements may use them)."""
    made = [
        f"CREATE SEQUENCE IF NOT EXISTS {dialect.agent_schema}.{q(f.default_expr.sequence)}"
        for f in entity.fields
        if f.autoincrement and f.default_expr is not None and f.default_expr.sequence
    ]
    if made and dialect is not DUCKDB:  # its own schema, which opening the database also creates
        made.insert(0, f"CREATE SCHEMA IF NOT EXISTS {dialect.agent_schema}")
    return made


def entity_order(spec: AppSpec) -> list[EntitySpec]:
    """Entities with every referenced entity before its referencers."""
    done: list[EntitySpec] = []
    names: set[str] = set()
    pending = list(spec.entities)
    while pending:
        progressed = False
        for entity in list(pending):
            parents = {f.reference[0] for f in entity.fields if f.reference and f.reference[0] != entity.name}
            if parents <= names:
                done.append(entity)
                names.add(entity.name)
                pending.remove(entity)
                progressed = True
        if not progressed:  # a cycle cannot be created through operations; keep the order given
            done.extend(pending)
            break
    return done


def create_entity(entity: EntitySpec, spec: AppSpec, dialect: Dialect = DUCKDB) -> list[str]:
    return [
        *sequences(entity, dialect),
        create_table(entity, duckdb_checks=spec.checked_by == "duckdb", dialect=dialect),
        *(create_index(entity, i) for i in indexes_of(spec, entity)),
    ]


def spec_ddl(spec: AppSpec, dialect: Dialect = DUCKDB) -> list[str]:
    """Every statement that builds the spec's schema from nothing, in dependency order."""
    if dialect is not DUCKDB and spec.checked_by == "duckdb":
        raise SpecError(
            Code.SPEC_INVALID,
            f"this spec has DuckDB enforce its references and checks (checked_by = duckdb); "
            f"{dialect.name} needs the runtime to",
            hint='Propose {"op": "set_checked_by", "checked_by": "buttress"} on DuckDB first, then move the '
            "application.",
            details={"checked_by": spec.checked_by, "engine": dialect.name},
        )
    statements = [f"CREATE SCHEMA IF NOT EXISTS {SYSTEM_SCHEMA}"]
    for entity in entity_order(spec):
        statements.extend(create_entity(entity, spec, dialect))
    statements.extend(create_view(v, dialect=dialect) for v in spec.views)
    return statements


def dependents(spec: AppSpec, entity: str) -> list[EntitySpec]:
    """Entities whose DuckDB foreign keys hold ``entity`` (directly or transitively), parents before
    children; none when the runtime checks references."""
    if spec.checked_by != "duckdb":
        return []
    found: dict[str, EntitySpec] = {}
    frontier = [entity]
    while frontier:
        name = frontier.pop()
        for child, _ in spec.referencing(name):
            if child.name != entity and child.name not in found:
                found[child.name] = child
                frontier.append(child.name)
    order = [e.name for e in entity_order(spec)]
    return sorted(found.values(), key=lambda e: order.index(e.name))


def rebuild(
    old: AppSpec,
    new: AppSpec,
    old_name: str,
    new_entity: EntitySpec,
    select: Mapping[str, str | None],
    source: str | None = None,
    dialect: Dialect = DUCKDB,
) -> list[str]:
    """A single-transaction table rebuild that spells out the full new definition.

    ``select`` maps each field of ``new_entity`` to an SQL expression over the old table aliased
    ``o`` (``source`` may add joins, e.g. to retained data); ``None`` leaves the field to its default. Entities referencing the table are
    stashed, dropped and recreated around it, as DuckDB refuses to drop a referenced table.
    Never ``CREATE OR REPLACE TABLE ... AS``: that silently drops constraints and indexes.
    """
    children = dependents(old, old_name)
    fks = new.checked_by == "duckdb"
    temp = f"{new_entity.name}__rebuild"
    out: list[str] = []
    for child in children:
        out.append(f"CREATE TEMP TABLE {q(child.name + '__stash')} AS SELECT * FROM {q(child.name)}")
    for child in reversed(children):
        out.append(f"DROP TABLE {q(child.name)}")
    out.append(create_table(new_entity, temp, duckdb_checks=fks, dialect=dialect))
    filled = [(name, expr) for name, expr in select.items() if expr is not None]
    columns, values = cols(n for n, _ in filled), ", ".join(e for _, e in filled)

    def insert(table: str) -> str:
        return f"INSERT INTO {table} ({columns}) SELECT {values} FROM "

    source = source or q(old_name) + " AS o"
    if fks and any(f.references for f in new_entity.fields):
        # DuckDB keeps a stale link from the parent to a renamed child table, so a table with foreign
        # keys is rebuilt under its final name from a stash instead of being renamed into place.
        stash = f"{new_entity.name}__old"
        out.pop()  # the CREATE TABLE of the temporary name
        out.append(f"CREATE TEMP TABLE {q(stash)} AS SELECT * FROM {q(old_name)}")
        out.append(f"DROP TABLE {q(old_name)}")
        out.append(create_table(new_entity, duckdb_checks=fks))
        stashed = source.replace(q(old_name) + " AS o", q(stash) + " AS o", 1)
        out.append(insert(q(new_entity.name)) + stashed)
        out.append(f"DROP TABLE {q(stash)}")
    else:
        out.append(insert(q(temp)) + source)
        out.append(f"DROP TABLE {q(old_name)}")
        out.append(f"ALTER TABLE {q(temp)} RENAME TO {q(new_entity.name)}")
        if dialect is not DUCKDB:  # the constraints keep the temporary table's names: give theirs back
            for was, final in zip(
                constraint_names(new_entity, temp), constraint_names(new_entity, new_entity.name), strict=True
            ):
                out.append(f"ALTER TABLE {q(new_entity.name)} RENAME CONSTRAINT {q(was)} TO {q(final)}")
    out.extend(create_index(new_entity, i) for i in indexes_of(new, new_entity))
    for child in children:
        current = new.entity(child.name) or child
        out.append(create_table(current, duckdb_checks=fks))
        names = [f.name for f in current.fields]
        out.append(
            f"INSERT INTO {q(current.name)} ({cols(names)}) SELECT {cols(names)} FROM {q(child.name + '__stash')}"
        )
        out.extend(create_index(current, i) for i in indexes_of(new, current))
        out.append(f"DROP TABLE {q(child.name + '__stash')}")
    return out


def is_frozen(spec: AppSpec, entity: EntitySpec, dialect: Dialect = DUCKDB) -> bool:
    """DuckDB refuses most ALTERs on a table with a secondary index (reference indexes included) or
    that a DuckDB foreign key references; PostgreSQL alters such a table in place."""
    if not dialect.needs_rebuild(Alter.ALTER_INDEXED_TABLE):
        return False
    referenced = spec.checked_by == "duckdb" and any(True for _ in spec.referencing(entity.name))
    return bool(indexes_of(spec, entity)) or referenced
