"""Column resolution: every column a statement names resolves against the sources in scope.

``Resolver`` walks a statement's scopes (CTEs, subqueries, joins with USING and NATURAL, lambdas'
own variables, an INSERT's target and ``excluded``, RETURNING), checks every column reference
(``sql.unknown_column`` with the candidates in scope), names the output columns, and records which
app-table columns are read and written and the ``Link``s a type check needs. Resolution is
lenient wherever a source's columns cannot be known; security never depends on this pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from sqlglot import exp

from runtime.errors import Code, SqlError
from runtime.sql.column_order import inserted_values
from runtime.sql.facts import Link, Operand, Schema
from runtime.sql.parsing import DUCKDB
from runtime.sql.tables import CteBindings

_Columns = tuple[str, ...] | None
"""The lowercase column names of a source, or None when they cannot be known."""


@dataclass
class _Frame:
    """The sources one SELECT (or write) can see, and the frame around it."""

    parent: _Frame | None
    sources: dict[str, _Columns] = field(default_factory=dict)
    hidden: dict[str, frozenset[str]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()
    tables: dict[str, str] = field(default_factory=dict)
    """Source alias -> the app table or view it names (CTEs, subqueries and functions have none)."""

    def chain(self) -> Iterator[_Frame]:
        frame: _Frame | None = self
        while frame is not None:
            yield frame
            frame = frame.parent


class Resolver:
    """Resolves column references against the sources in scope and names the output columns.

    Resolution is lenient wherever a source's columns cannot be derived (table functions
    without a column list, VALUES, stars over such sources): DuckDB's binder has the last
    word there. Security never depends on this pass; tables and functions are checked first.
    """

    def __init__(self, schema: Schema, ctes: CteBindings) -> None:
        self._schema = schema
        self._ctes_of_tables = ctes
        self._cte_columns: dict[int, _Columns] = {}
        self.read: set[tuple[str, str]] = set()
        self.written: set[tuple[str, str]] = set()
        self._placed: list[tuple[str, tuple[str, str], exp.Expr]] = []
        self._columns_of: dict[int, tuple[str, str]] = {}
        """id() of a column reference -> the (relation, column) it resolved to."""

    # statements --------------------------------------------------------------------------

    def statement(self, tree: exp.Expr, target: exp.Table | None) -> tuple[str, ...]:
        if target is None:
            return self._output_names(tree, None)
        self._ctes(tree.args.get("with_"), None)
        columns = tuple(self._schema[target.name.lower()])
        if isinstance(tree, exp.Insert):
            frame = self._insert(tree, target, columns)
        else:
            frame = self._update_or_delete(tree, target, columns)
        returning = tree.args.get("returning")
        if returning is None:
            return ()
        name = target.name.lower()
        only_target = _Frame(
            None, {target.alias_or_name.lower(): columns}, tables={target.alias_or_name.lower(): name}
        )
        return tuple(n for n, _ in self._projection(returning.expressions, only_target, frame))

    def _insert(self, tree: exp.Insert, target: exp.Table, columns: tuple[str, ...]) -> _Frame:
        table = target.name.lower()
        filled = columns
        if isinstance(tree.this, exp.Schema):
            filled = tuple(identifier.name.lower() for identifier in tree.this.expressions)
            for name in filled:
                _require_target_column(name, target, columns)
        self.written.update((table, name) for name in filled)
        source = tree.expression
        if source is not None:
            self.query(source, None)
            if not tree.args.get("by_name"):
                for position, value in inserted_values(source):
                    if position < len(filled):
                        self._placed.append(("insert", (table, filled[position]), value))
        alias = target.alias_or_name.lower()
        frame = _Frame(None, {alias: columns, "excluded": columns}, tables={alias: table, "excluded": table})
        conflict = tree.args.get("conflict")
        if conflict is not None:
            for key in conflict.args.get("conflict_keys") or []:
                for column in key.find_all(exp.Column):
                    _require_target_column(column.name.lower(), target, columns)
            self._assignments(conflict.expressions, target, columns, frame)
            self._expressions([conflict.args.get("where")], frame)
        self._expressions([tree.args.get("returning")], frame)
        return frame

    def _update_or_delete(self, tree: exp.Expr, target: exp.Table, columns: tuple[str, ...]) -> _Frame:
        alias = target.alias_or_name.lower()
        frame = _Frame(None, {alias: columns}, tables={alias: target.name.lower()})
        from_ = tree.args.get("from_")
        if from_ is not None:
            self._add_source(frame, from_.this)
        for source in tree.args.get("using") or []:
            self._add_source(frame, source)
        for join in tree.args.get("joins") or []:
            self._add_join(frame, join)
        if isinstance(tree, exp.Update):
            self._assignments(tree.expressions, target, columns, frame)
        self._expressions([tree.args.get("where"), tree.args.get("returning")], frame)
        return frame

    def _assignments(
        self, assignments: Sequence[exp.Expr], target: exp.Table, columns: tuple[str, ...], frame: _Frame
    ) -> None:
        table = target.name.lower()
        for assignment in assignments:
            if isinstance(assignment, exp.EQ) and isinstance(assignment.this, exp.Column):
                name = assignment.this.name.lower()
                _require_target_column(name, target, columns)
                self.written.add((table, name))
                self._placed.append(("assign", (table, name), assignment.expression))
                self._expressions([assignment.expression], frame)
            else:
                self._expressions([assignment], frame)

    # queries -----------------------------------------------------------------------------

    def _output_names(self, tree: exp.Expr, parent: _Frame | None) -> tuple[str, ...]:
        named = self._query(tree, parent)
        return tuple(name for name, _ in named)

    def query(self, node: exp.Expr, parent: _Frame | None) -> _Columns:
        named = self._query(node, parent)
        if not all(exact for _, exact in named):
            return None
        return tuple(name.lower() for name, _ in named)

    def _query(self, node: exp.Expr, parent: _Frame | None) -> list[tuple[str, bool]]:
        """Check one query; return its output names, each flagged exact or best-effort."""
        while isinstance(node, (exp.Subquery, exp.Paren)) and not node.alias:
            node = node.this
        self._ctes(node.args.get("with_"), parent)
        if isinstance(node, exp.Select):
            return self._select(node, parent)
        if isinstance(node, exp.SetOperation):
            left = self._query(node.left, parent)
            self._query(node.right, parent)
            exact = all(known for _, known in left)
            output: dict[str, _Columns] = {"": tuple(name.lower() for name, _ in left) if exact else None}
            self._expressions(
                [node.args.get(key) for key in ("order", "limit", "offset")], _Frame(parent, output)
            )
            if node.args.get("by_name"):
                return [("*", False)]
            return left
        if isinstance(node, exp.Subquery):
            columns = self.query(node.this, parent)
            return _named(_renamed(columns, node.alias_column_names))
        self._expressions([node], _Frame(parent))
        if isinstance(node, exp.Values) and node.expressions:
            width = len(node.expressions[0].expressions) if isinstance(node.expressions[0], exp.Tuple) else 1
            return [(f"col{i}", True) for i in range(width)]
        return [("*", False)]

    def _ctes(self, with_: exp.Expr | None, parent: _Frame | None) -> None:
        if not isinstance(with_, exp.With):
            return
        for cte in with_.expressions:
            declared = [name.lower() for name in cte.alias_column_names]
            if with_.args.get("recursive"):
                self._cte_columns[id(cte)] = tuple(declared) if declared else None
            self._cte_columns[id(cte)] = _renamed(self.query(cte.this, parent), declared)

    def _select(self, select: exp.Select, parent: _Frame | None) -> list[tuple[str, bool]]:
        frame = _Frame(parent)
        from_ = select.args.get("from_")
        if from_ is not None:
            self._add_source(frame, from_.this)
        for join in select.args.get("joins") or []:
            self._add_join(frame, join)
        output = self._projection(select.expressions, frame, frame)
        frame.aliases = frozenset(
            projection.alias.lower() for projection in select.expressions if isinstance(projection, exp.Alias)
        )
        rest = [value for key, value in select.args.items() if key not in ("from_", "joins", "with_")]
        self._expressions(rest, frame)
        return output

    def _add_join(self, frame: _Frame, join: exp.Join) -> None:
        before = {column for columns in frame.sources.values() for column in columns or ()}
        alias = self._add_source(frame, join.this)
        using = frozenset(identifier.name.lower() for identifier in join.args.get("using") or [])
        if join.method.upper() == "NATURAL":
            using = frozenset(frame.sources.get(alias) or ()) & before
        if join.kind.upper() in ("SEMI", "ANTI"):
            using = frozenset(frame.sources.get(alias) or ())
        if using:
            frame.hidden[alias] = using
        self._expressions([join.args.get("on")], frame)

    def _add_source(self, frame: _Frame, source: exp.Expr) -> str:
        """Register one FROM/JOIN source in ``frame``; return the name it is known by."""
        alias = source.alias.lower()
        columns: _Columns = None
        if isinstance(source, exp.Table):
            alias = alias or source.name.lower()
            columns = self._table_columns(source, frame)
            if (
                isinstance(source.this, exp.Identifier)
                and id(source) not in self._ctes_of_tables
                and source.name.lower() in self._schema
            ):
                frame.tables[alias] = source.name.lower()
        elif isinstance(source, exp.Subquery) and not isinstance(source.this, exp.Query | exp.Values):
            return self._add_source(frame, source.this)  # a parenthesised join: (a JOIN b ON ...)
        elif isinstance(source, (exp.Subquery, exp.Lateral)):
            inner = source.this.this if isinstance(source.this, exp.Subquery) else source.this
            columns = self.query(inner, frame)
        elif isinstance(source, exp.Values):
            columns = self.query(source, frame)
        elif isinstance(source, exp.Unnest):
            self._expressions(source.expressions, frame)
            alias = alias or "unnest"
            declared = tuple(name.lower() for name in source.alias_column_names)
            columns = declared or (None if source.alias else ("unnest",))
        else:
            self._expressions([source], frame)
        frame.sources[alias] = _renamed(columns, source.alias_column_names)
        for join in source.args.get("joins") or []:
            self._add_join(frame, join)
        return alias

    def _table_columns(self, table: exp.Table, frame: _Frame) -> _Columns:
        if not isinstance(table.this, exp.Identifier):
            self._expressions([table.this], frame)
            if isinstance(table.this, exp.GenerateSeries):
                return ("range",) if table.this.args.get("is_end_exclusive") else ("generate_series",)
            return None
        cte = self._ctes_of_tables.get(id(table))
        if cte is not None:
            return self._cte_columns.get(id(cte))
        known = self._schema.get(table.name.lower())
        return tuple(known) if known is not None else None

    # projections and columns -------------------------------------------------------------

    def _projection(
        self, expressions: Sequence[exp.Expr], frame: _Frame, scope: _Frame
    ) -> list[tuple[str, bool]]:
        """Output names of a select list (or RETURNING list); stars expand over ``frame``."""
        output: list[tuple[str, bool]] = []
        for expression in expressions:
            if isinstance(expression, exp.Star):
                output.extend(_expand_star(expression, frame, None))
                self._star_read(frame, None)
            elif isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star):
                qualifier = expression.table.lower()
                if qualifier not in frame.sources:
                    _unknown_column(f"{qualifier}.*", scope)
                output.extend(_expand_star(expression.this, frame, qualifier))
                self._star_read(frame, qualifier)
            elif expression.output_name:
                output.append((expression.output_name, True))
            else:
                output.append((expression.sql(dialect=DUCKDB), False))
        return output

    def _expressions(self, nodes: Iterable[object], frame: _Frame) -> None:
        """Resolve every column under ``nodes``; nested queries get their own frame."""
        stack: list[exp.Expr] = []
        for node in nodes:
            if isinstance(node, list):
                stack.extend(item for item in node if isinstance(item, exp.Expr))
            elif isinstance(node, exp.Expr):
                stack.append(node)
        while stack:
            node = stack.pop()
            if isinstance(node, (exp.Select, exp.SetOperation)):
                self.query(node, frame)
            elif isinstance(node, exp.Column):
                found = _resolve_column(node, frame)
                if found is not None:
                    self.read.add(found)
                    self._columns_of[id(node)] = found
            else:
                stack.extend(node.iter_expressions())

    def _star_read(self, frame: _Frame, qualifier: str | None) -> None:
        for alias, columns in frame.sources.items():
            relation = frame.tables.get(alias)
            if relation is not None and columns is not None and qualifier in (None, alias):
                self.read.update((relation, column) for column in columns)

    # types -------------------------------------------------------------------------------

    def _operand(self, node: exp.Expr | None) -> Operand | None:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Placeholder):
            return ("param", str(node.this or ""))
        if isinstance(node, exp.Column):
            found = self._columns_of.get(id(node))
            return None if found is None else ("column", *found)
        return None

    def links(self, tree: exp.Expr) -> tuple[Link, ...]:
        """The bare parameters and columns the statement puts into columns or compares with them."""
        out: list[Link] = []
        for kind, column, value in self._placed:
            other = self._operand(value)
            if other is not None:
                out.append(Link(kind, column, other))  # type: ignore[arg-type]
        assignments = {
            id(node)
            for holder in tree.find_all(exp.Update, exp.OnConflict)
            for node in holder.expressions
            if isinstance(node, exp.EQ)
        }
        for node in tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between):
            if id(node) in assignments:
                continue
            if isinstance(node, exp.In):
                sides = [node.this, *node.expressions]
            elif isinstance(node, exp.Between):
                sides = [node.this, node.args.get("low"), node.args.get("high")]
            else:
                sides = [node.this, node.expression]
            operands = [self._operand(side) for side in sides]
            columns = [o for o in operands if o is not None and o[0] == "column"]
            if not columns:
                continue
            anchor = columns[0]
            for operand in operands:
                if operand is not None and operand is not anchor:
                    out.append(Link("compare", (anchor[1], anchor[2]), operand))
        return tuple(dict.fromkeys(out))


def _expand_star(star: exp.Expr, frame: _Frame, qualifier: str | None) -> list[tuple[str, bool]]:
    names: list[str] = []
    for alias, columns in frame.sources.items():
        if qualifier is not None and alias != qualifier:
            continue
        if columns is None:
            return [("*", False)]
        hidden = frame.hidden.get(alias, frozenset()) if qualifier is None else frozenset()
        names.extend(column for column in columns if column not in hidden)
    excluded = {column.name.lower() for column in star.args.get("except_") or []}
    renamed = {
        alias.this.name.lower(): alias.alias
        for alias in star.args.get("rename") or []
        if isinstance(alias, exp.Alias)
    }
    return [(renamed.get(name, name), True) for name in names if name not in excluded]


def _resolve_column(column: exp.Column, frame: _Frame) -> tuple[str, str] | None:
    """Check that a column reference resolves; return the (app table or view, column) it reads when
    that is known (a CTE, a subquery or an ambiguous unqualified name gives None)."""
    if isinstance(column.this, exp.Star):
        qualifier = column.table.lower()
        if qualifier and not any(qualifier in f.sources for f in frame.chain()):
            _unknown_column(f"{qualifier}.*", frame)
        return None
    parts = [part.name.lower() for part in column.parts]
    if _is_bound_variable(column, parts[0]):
        return None
    if len(parts) >= 3 and parts[0] == "main":
        parts = parts[1:]
    if len(parts) > 1:
        found, columns, scope = _lookup_source(frame, parts[0])
        if found:
            if columns is not None and parts[1] not in columns and parts[1] != "rowid":
                _unknown_column(f"{parts[0]}.{parts[1]}", frame)
            relation = scope.tables.get(parts[0]) if scope is not None else None
            if relation is None or columns is None or parts[1] not in columns:
                return None
            return relation, parts[1]
    return _resolves_unqualified(parts[0], frame, ".".join(parts))


def _lookup_source(frame: _Frame, name: str) -> tuple[bool, _Columns, _Frame | None]:
    for scope in frame.chain():
        if name in scope.sources:
            return True, scope.sources[name], scope
    return False, None, None


def _resolves_unqualified(name: str, frame: _Frame, shown: str) -> tuple[str, str] | None:
    for scope in frame.chain():
        if name in scope.aliases or name in scope.sources:
            return None
        holders = [
            alias for alias, columns in scope.sources.items() if columns is not None and name in columns
        ]
        if any(columns is None for columns in scope.sources.values()):
            return None
        if holders:
            relation = scope.tables.get(holders[0]) if len(holders) == 1 else None
            return None if relation is None else (relation, name)
        if scope.sources and name == "rowid":
            return None
    _unknown_column(shown, frame)


def _is_bound_variable(column: exp.Column, name: str) -> bool:
    """True when ``name`` is a lambda parameter or list-comprehension variable around ``column``."""
    node = column.parent
    while node is not None and not isinstance(node, exp.Query):
        if isinstance(node, exp.Lambda) and any(param.name.lower() == name for param in node.expressions):
            return True
        if (
            isinstance(node, exp.Comprehension)
            and node.expression is not None
            and node.expression.name.lower() == name
        ):
            return True
        node = node.parent
    return False


def _require_target_column(name: str, target: exp.Table, columns: tuple[str, ...]) -> None:
    if name not in columns:
        table = target.name.lower()
        raise SqlError(
            Code.SQL_UNKNOWN_COLUMN,
            f"table {table!r} has no column {name!r}",
            hint="Use the columns listed in details.candidates.",
            details={"column": name, "table": table, "candidates": {table: list(columns)}},
        )


def _unknown_column(name: str, frame: _Frame) -> NoReturn:
    candidates = {
        alias or "(subquery)": list(columns) if columns is not None else ["*"]
        for alias, columns in frame.sources.items()
    }
    raise SqlError(
        Code.SQL_UNKNOWN_COLUMN,
        f"unknown column {name!r}",
        hint="Use the columns listed in details.candidates, qualified by their table alias when ambiguous.",
        details={"column": name, "candidates": candidates},
    )


def _renamed(columns: _Columns, names: Sequence[str]) -> _Columns:
    """Apply a table alias column list, which renames leading columns."""
    renames = tuple(name.lower() for name in names)
    if not renames:
        return columns
    if columns is None:
        return None
    return renames + columns[len(renames) :]


def _named(columns: _Columns) -> list[tuple[str, bool]]:
    return [("*", False)] if columns is None else [(name, True) for name in columns]
