"""The live catalog as data, and its comparison with the catalog a spec implies.

The expected catalog is not hand-derived: the spec's DDL is executed in a private in-memory
database and read back through the same catalog functions, so both sides are spelled by DuckDB. On
PostgreSQL both sides are read from ``pg_catalog``: the live schema ``public``, and the spec's DDL run
in a scratch schema of a transaction that rolls back (``PgEngine.scratch_schema``); names that carry
the schema are read without it, so the two compare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import duckdb

from runtime.migrate import ddl
from runtime.schema.spec import AppSpec
from runtime.store.engine import Session

Fingerprint = dict[str, Any]

_TABLES = """
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary
"""
_COLUMNS = """
SELECT table_name, column_name, column_index, data_type, is_nullable, column_default
FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main'
"""
_CONSTRAINTS = """
SELECT table_name, constraint_type, constraint_text, constraint_column_names
FROM duckdb_constraints() WHERE database_name = current_database() AND schema_name = 'main'
"""
_INDEXES = """
SELECT table_name, index_name, sql FROM duckdb_indexes()
WHERE database_name = current_database() AND schema_name = 'main'
"""
_VIEWS = """
SELECT view_name, sql FROM duckdb_views()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal AND NOT temporary
"""


_PG_TABLES = "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = $schema"
_PG_COLUMNS = """
SELECT c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
    pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = $schema AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
"""
_PG_CONSTRAINTS = """
SELECT c.relname, k.contype, pg_get_constraintdef(k.oid),
    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey))
FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $schema
"""
_PG_INDEXES = """
SELECT i.tablename, i.indexname, i.indexdef FROM pg_catalog.pg_indexes i
WHERE i.schemaname = $schema AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_namespace n ON n.oid = k.connamespace
    WHERE n.nspname = $schema AND k.conname = i.indexname)
"""
_PG_VIEWS = """
SELECT viewname, pg_get_viewdef(format('%I.%I', schemaname, viewname)::regclass)
FROM pg_catalog.pg_views WHERE schemaname = $schema
"""


def read(cursor: duckdb.DuckDBPyConnection | Session, schema: str = "public") -> Fingerprint:
    """Tables (columns in order, constraints, indexes) and views of the application schema
    (``schema``: PostgreSQL's, a scratch schema when deriving the expected catalog)."""
    if isinstance(cursor, Session) and cursor.dialect.name == "postgres":
        return _read_postgres(cursor, schema)
    tables: dict[str, dict[str, Any]] = {
        name: {"columns": [], "constraints": [], "indexes": []}
        for (name,) in cursor.execute(_TABLES).fetchall()
    }
    for table, column, index, data_type, nullable, default in cursor.execute(_COLUMNS).fetchall():
        if table in tables:
            tables[table]["columns"].append((index, column, data_type, nullable, default))
    for table, kind, text, columns in cursor.execute(_CONSTRAINTS).fetchall():
        if table in tables:
            tables[table]["constraints"].append(f"{kind} {text} {sorted(columns)}")
    for table, name, sql in cursor.execute(_INDEXES).fetchall():
        if table in tables:
            tables[table]["indexes"].append(f"{name}: {sql}")
    for table in tables.values():
        table["columns"] = [list(c[1:]) for c in sorted(table["columns"])]
        table["constraints"].sort()
        table["indexes"].sort()
    views = {name: sql for name, sql in cursor.execute(_VIEWS).fetchall()}
    return {"tables": tables, "views": views}


def _read_postgres(session: Session, schema: str) -> Fingerprint:
    where = {"schema": schema}
    prefix = f"{schema}."
    tables: dict[str, dict[str, Any]] = {
        name: {"columns": [], "constraints": [], "indexes": []}
        for (name,) in session.fetchall(_PG_TABLES, where)
    }
    for table, column, index, data_type, nullable, default in session.fetchall(_PG_COLUMNS, where):
        if table in tables:
            tables[table]["columns"].append((index, column, data_type, nullable, default))
    for table, kind, text, columns in session.fetchall(_PG_CONSTRAINTS, where):
        if table in tables:
            tables[table]["constraints"].append(f"{kind} {text} {sorted(columns)}")
    for table, name, sql in session.fetchall(_PG_INDEXES, where):
        if table in tables:
            tables[table]["indexes"].append(f"{name}: {sql.replace(' ' + prefix, ' ')}")
    for table in tables.values():
        table["columns"] = [list(c[1:]) for c in sorted(table["columns"])]
        table["constraints"].sort()
        table["indexes"].sort()
    views = {name: sql.replace(prefix, "") for name, sql in session.fetchall(_PG_VIEWS, where)}
    return {"tables": tables, "views": views}


def expected(spec: AppSpec, scratch_database: Callable[[], duckdb.DuckDBPyConnection]) -> Fingerprint:
    """The catalog DuckDB builds for ``spec`` from nothing, in a scratch database from the engine
    (``Engine.scratch``: hardened like every connection the runtime opens)."""
    found, _ = expected_and(spec, scratch_database, lambda _: None)
    return found


T = TypeVar("T")


def expected_and(
    spec: AppSpec,
    scratch_database: Callable[[], duckdb.DuckDBPyConnection],
    then: Callable[[duckdb.DuckDBPyConnection], T],
) -> tuple[Fingerprint, T]:
    """``expected``, and ``then(scratch)`` run while the scratch database holds ``spec``'s schema (the
    dry-run binds the spec's statements there: one scratch database per spec, not two)."""
    scratch = scratch_database()
    try:
        for statement in ddl.spec_ddl(spec):
            scratch.execute(statement)
        return read(scratch), then(scratch)
    finally:
        scratch.close()


def diff(expected_fp: Fingerprint, live: Fingerprint) -> list[str]:
    """Human-readable differences, empty when the catalogs agree."""
    out: list[str] = []
    want, have = expected_fp["tables"], live["tables"]
    for name in sorted(set(want) - set(have)):
        out.append(f"table {name} is missing")
    for name in sorted(set(have) - set(want)):
        out.append(f"table {name} exists but is not in the spec")
    for name in sorted(set(want) & set(have)):
        w, h = want[name], have[name]
        if w["columns"] != h["columns"]:
            wc = {c[0]: c for c in w["columns"]}
            hc = {c[0]: c for c in h["columns"]}
            for col in sorted(set(wc) | set(hc)):
                if wc.get(col) != hc.get(col):
                    out.append(f"table {name} column {col}: expected {wc.get(col)}, found {hc.get(col)}")
            if not any(f"table {name} column" in line for line in out):
                out.append(f"table {name}: column order differs ({[c[0] for c in h['columns']]})")
        for kind in ("constraints", "indexes"):
            for item in sorted(set(w[kind]) - set(h[kind])):
                out.append(f"table {name} is missing {item}")
            for item in sorted(set(h[kind]) - set(w[kind])):
                out.append(f"table {name} has unexpected {item}")
    wv, hv = expected_fp["views"], live["views"]
    for name in sorted(set(wv) | set(hv)):
        if wv.get(name) != hv.get(name):
            out.append(f"view {name}: expected {wv.get(name)!r}, found {hv.get(name)!r}")
    return out
