"""Table binding: each table a statement names is an app table or view, or a CTE visible there.

``write_target`` checks the table a write targets (a table of the app, never a view);
``cte_bindings`` finds the CTE each bare name binds to at its point in the statement (WITH scoping,
RECURSIVE included); ``bind_tables`` checks every other reference and returns the app tables and
views read. Files, table functions that are not allowed, system objects and other schemas are
refused (``sql.forbidden``), unknown names reported with the known ones (``sql.unknown_table``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NoReturn

from sqlglot import exp

from runtime.errors import Code, SqlError
from runtime.sql.allowlists import HINT_SYSTEM, HINT_TABLES, HINT_WRITES, RESERVED_PREFIXES, TABLE_FUNCTIONS
from runtime.sql.facts import Schema
from runtime.sql.inventory import Inventory, forbid_table_function
from runtime.sql.refusals import forbid


def write_target(tree: exp.Expr, schema: Schema, views: frozenset[str], source: str) -> exp.Table:
    """The table a write targets: an app table of ``schema``, never a view."""
    target = tree.this
    if isinstance(target, exp.Schema):
        target = target.this
    if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
        forbid(f"{tree.key.upper()} must target an application table", hint=HINT_WRITES)
    name = _table_name(target, source)
    if name in views:
        forbid(f"{name!r} is a view and cannot be written", hint="Write to the underlying table instead.")
    if name not in schema:
        _unknown_table(name, schema)
    return target


CteBindings = dict[int, exp.CTE]
"""id() of a table reference -> the CTE it names."""


def cte_bindings(inventory: Inventory) -> CteBindings:
    """The CTE each bare table reference binds to, for the references that name one."""
    bindings: CteBindings = {}
    for table in inventory.tables:
        if isinstance(table.this, exp.Identifier) and not table.db:
            cte = _cte_for(table, table.name.lower())
            if cte is not None:
                bindings[id(table)] = cte
    return bindings


def bind_tables(
    tables: Iterable[exp.Table], schema: Schema, source: str, *, skip: exp.Table | None, ctes: CteBindings
) -> set[str]:
    """Check every table reference; return the app tables and views read."""
    reads: set[str] = set()
    for table in tables:
        if table is skip:
            continue
        name = _bind_table(table, schema, source, ctes)
        if name is not None:
            reads.add(name)
    return reads


def _bind_table(table: exp.Table, schema: Schema, source: str, ctes: CteBindings) -> str | None:
    """The app table a reference reads, None for CTEs and allowed table functions, or a refusal."""
    this = table.this
    if not isinstance(this, exp.Identifier):
        if isinstance(this, TABLE_FUNCTIONS):
            return None
        forbid_table_function(this)
    name = _table_name(table, source)
    if id(table) in ctes:
        return None
    if name not in schema:
        _unknown_table(name, schema)
    return name


def _table_name(table: exp.Table, source: str) -> str:
    """The lowercase name of an app-table reference; files, other schemas and reserved names are refused."""
    for part in table.parts:
        if part.args.get("quoted") and _quote_char(part, source) != '"':
            forbid("files cannot be used as tables", hint=HINT_SYSTEM, details={"table": part.name})
    parts = [part.name.lower() for part in table.parts]
    qualified = ".".join(parts)
    if any(part.startswith(RESERVED_PREFIXES) for part in parts):
        forbid(f"{qualified!r} is a system object", hint=HINT_SYSTEM, details={"table": qualified})
    if parts[:-1] not in ([], ["main"]):
        forbid(
            f"{qualified!r} is outside the application schema",
            hint=HINT_SYSTEM,
            details={"table": qualified},
        )
    return parts[-1]


def _quote_char(identifier: exp.Expr, source: str) -> str:
    """The character that opens a quoted identifier in the source: '"' for a real identifier,
    "'" (or anything else) when a string literal was read as a table name."""
    start = identifier.meta.get("start")
    return source[start] if isinstance(start, int) and 0 <= start < len(source) else ""


def _cte_for(table: exp.Table, name: str) -> exp.CTE | None:
    """The CTE a bare table name binds to at this point of the statement, if any.

    A CTE sees the CTEs before it in its own WITH (and itself when the WITH is RECURSIVE);
    the body of a query sees all of its WITH; inner queries see the WITHs around them.
    """
    node: exp.Expr = table
    while node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.With):
            ctes = parent.expressions
            position = next((i for i, cte in enumerate(ctes) if cte is node), len(ctes))
            visible = ctes[: position + 1] if parent.args.get("recursive") else ctes[:position]
            found = _find_cte(visible, name)
            if found is not None:
                return found
            node = parent.parent if parent.parent is not None else parent
            continue
        with_ = parent.args.get("with_")
        if isinstance(with_, exp.With) and node is not with_:
            found = _find_cte(with_.expressions, name)
            if found is not None:
                return found
        node = parent
    return None


def _find_cte(ctes: Sequence[exp.Expr], name: str) -> exp.CTE | None:
    for cte in reversed(ctes):
        if isinstance(cte, exp.CTE) and cte.alias.lower() == name:
            return cte
    return None


def _unknown_table(name: str, schema: Schema) -> NoReturn:
    raise SqlError(
        Code.SQL_UNKNOWN_TABLE,
        f"unknown table {name!r}",
        hint=HINT_TABLES,
        details={"table": name, "known_tables": sorted(schema)},
    )
