"""Invariants checked on what changed (pure analysis; the action runner executes what it returns).

An invariant is a query selecting violating rows; it must return none. Re-running it over whole
tables after every mutation costs time proportional to the data. But an invariant that held before a
transaction can only start failing in the *groups* the transaction touched, when its violations fall
into groups that one key separates. ``analyze`` finds such a key from the query's structure, with
sqlglot, or says why it cannot:

* the query is one SELECT (views it reads are inlined) over base tables joined by equalities, with
  ``WHERE`` filters and ``EXISTS`` / ``NOT EXISTS`` / ``IN`` subqueries correlated by equalities;
* its violations are whole groups (``GROUP BY`` columns) or single joined rows (no aggregate);
* one equivalence class of columns — columns the query's equalities make equal in every row it
  considers — holds a ``GROUP BY`` column (or, without grouping, any column) and a column of every
  table instance the query reads, subqueries and inlined views included.

Then the rows of every group are exactly the rows whose class columns hold the group's key, so a group
no touched row belongs to has the same rows as before the transaction, and still holds. The check runs
the invariant restricted to the keys of the touched rows — old and new values of the class columns —
by adding ``column IN (keys)`` to every scope that cannot lose rows by it (the ``FROM`` table and the
tables joined to it by inner joins). NULL keys add ``column IS NULL``. When no such key exists the
invariant is checked in full, and ``Check.reason`` says why, so an agent can write invariants that stay
cheap. ``tests/runtime/test_invariants_delta.py`` runs random mutations against generated invariants
both ways: every violation the full query finds, the restricted one finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import sqlglot
from sqlglot import exp

from runtime.schema.spec import AppSpec
from runtime.sql import parsing

MAX_KEYS: Final = 512
"""More touched keys than this and the full query is cheaper than the restricted one."""


@dataclass(frozen=True)
class Check:
    """How one invariant is checked after a mutation."""

    name: str
    description: str
    sql: str
    """The invariant as a subquery body (``parsing.embed``): the full check."""
    reads: frozenset[str]
    """The entities it reads, views resolved to the entities under them."""
    incremental: bool
    reason: str
    """Incremental: the key (``by slot.id``); in full: why no key could be proven."""
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """For each entity read: its columns whose values are a touched row's keys."""
    _template: exp.Expr | None = None
    _points: tuple[tuple[int, str, str], ...] = ()
    _rendered: dict[tuple[int, bool], str] = field(default_factory=dict, compare=False, repr=False)

    def restricted(self, keys: Iterable[Any]) -> tuple[str, dict[str, Any]] | None:
        """The check limited to ``keys`` (SQL and its parameters), or None to run it in full."""
        if not self.incremental or self._template is None:
            return None
        values = sorted({k for k in keys if k is not None}, key=repr)
        has_null = any(k is None for k in keys)
        if len(values) > MAX_KEYS:
            return None
        shape = (len(values), has_null)
        sql = self._rendered.get(shape)
        if sql is None:
            sql = self._rendered[shape] = _render(self._template, self._points, *shape)
        return sql, {f"__k{i}": v for i, v in enumerate(values)}


def analyze(name: str, description: str, sql: str, spec: AppSpec) -> Check:
    """How to check the invariant ``sql`` of ``spec`` after a mutation: restricted by a key, or in full."""
    full = parsing.embed(sql)
    try:
        tree = _inline_views(sqlglot.parse_one(parsing.statement_body(sql), dialect="duckdb"), spec)
    except sqlglot.errors.SqlglotError:
        return Check(name, description, full, frozenset(), False, "the query could not be parsed again")
    reads = frozenset(t.name.lower() for t in tree.find_all(exp.Table) if spec.entity(t.name.lower()))
    try:
        key, keys, template, points = _partition(tree, spec)
    except _NotIncremental as refusal:
        return Check(name, description, full, reads, False, str(refusal))
    return Check(name, description, full, reads, True, f"by {key}", keys, template, points)


def explain(sql: str, spec: AppSpec) -> str:
    """For ``check_sql``: how a query would be checked as an invariant."""
    found = analyze("query", "", sql, spec)
    return f"incremental, {found.reason}" if found.incremental else f"in full: {found.reason}"


# ----------------------------------------------------------------------------------------- analysis


class _NotIncremental(Exception):
    """Why an invariant is checked in full (its message is shown to the agent)."""


def _inline_views(tree: exp.Expr, spec: AppSpec, depth: int = 0) -> exp.Expr:
    """Each view the query reads replaced by its SELECT, so the analysis sees the base tables."""
    if depth > 16:
        raise _NotIncremental("views nest too deeply")
    tree = tree.copy()
    for table in list(tree.find_all(exp.Table)):
        view = spec.view(table.name.lower()) if isinstance(table.this, exp.Identifier) else None
        if view is None:
            continue
        inner = _inline_views(
            sqlglot.parse_one(parsing.statement_body(view.sql), dialect="duckdb"), spec, depth + 1
        )
        alias = table.alias or table.name
        table.replace(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(alias))))
    return tree


@dataclass
class _Source:
    """One table instance in a scope: a base table, or a derived table (an inlined view, a subquery)."""

    alias: str
    table: str | None  # base table name, None for a derived table
    preserved: bool  # the scope cannot lose rows by a filter on it (FROM, inner joins)
    scope: int  # id of the Select it belongs to
    inner: exp.Select | None = None  # for a derived table
    outputs: dict[str, str] = field(default_factory=dict)  # derived: output column -> inner "alias.col"


class _Classes:
    """Union-find over ``scope:alias.column`` names."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def members(self, item: str) -> set[str]:
        root = self.find(item)
        return {x for x in self.parent if self.find(x) == root}


_FORBIDDEN_ANYWHERE = (exp.Window, exp.Limit, exp.Offset, exp.Qualify, exp.With, exp.Lateral, exp.Unnest)


def _partition(
    tree: exp.Expr, spec: AppSpec
) -> tuple[str, dict[str, tuple[str, ...]], exp.Expr, tuple[tuple[int, str, str], ...]]:
    if not isinstance(tree, exp.Select):
        raise _NotIncremental("it is not a single SELECT (a UNION, INTERSECT or EXCEPT is checked in full)")
    for node in tree.find_all(*_FORBIDDEN_ANYWHERE):
        kind = node.key.upper()
        raise _NotIncremental(f"it uses {kind}, whose result depends on rows outside any one group")
    for node in tree.find_all(exp.GenerateSeries, exp.Values):
        raise _NotIncremental(f"it reads {node.key.upper()}, which no key ties to the tables")
    classes = _Classes()
    sources: list[_Source] = []
    outer = _scope(tree, spec, classes, sources, outer=None)
    scope = id(tree)
    group = tree.args.get("group")
    if group is None and _outer_aggregate(tree):
        raise _NotIncremental("it computes a total over all rows (an aggregate without GROUP BY)")
    candidates: list[str] = []
    if group is not None:
        for column in group.expressions:
            resolved = _resolve(column, outer, scope) if isinstance(column, exp.Column) else None
            if resolved is not None:
                candidates.append(resolved)
        if not candidates:
            raise _NotIncremental(
                "it groups by expressions, not columns; group by a column to make it incremental"
            )
    else:
        first = outer[0]
        entity = spec.entity(first.table) if first.table else None
        if entity is not None:  # prefer the first table's key: it is indexed
            candidates += [f"{scope}:{first.alias}.{column}" for column in entity.primary_key]
        candidates += sorted(classes.parent)
    base = [s for s in sources if s.table is not None]
    for candidate in candidates:
        classes.find(candidate)
        members = classes.members(candidate)
        covered: dict[str, set[str]] = {}
        for source in base:
            columns = {
                m.split(".", 1)[1] for m in members if m.split(".", 1)[0] == f"{source.scope}:{source.alias}"
            }
            if not columns:
                break
            covered.setdefault(source.table or "", set()).update(columns)
        else:
            points = tuple(
                (
                    source.scope,
                    source.alias,
                    sorted(
                        c.split(".", 1)[1]
                        for c in members
                        if c.split(".", 1)[0] == f"{source.scope}:{source.alias}"
                    )[0],
                )
                for source in base
                if source.preserved
            )
            if not points:
                continue
            shown = candidate.split(":", 1)[1]
            keys = {table: tuple(sorted(columns)) for table, columns in covered.items()}
            return shown, keys, tree, points
    uncovered = sorted({s.table or s.alias for s in base})
    raise _NotIncremental(
        "no column equal in every row ties all of "
        + ", ".join(uncovered)
        + " together (join them by equalities on one key, and group by it)"
    )


def _outer_aggregate(tree: exp.Select) -> bool:
    """An aggregate in the outer SELECT's own select list or HAVING (not inside a subquery)."""
    for part in [*tree.expressions, tree.args.get("having")]:
        if part is None:
            continue
        for node in part.find_all(exp.AggFunc):
            if node.find_ancestor(exp.Select) is tree:
                return True
    return False


def _scope(
    select: exp.Select, spec: AppSpec, classes: _Classes, sources: list[_Source], outer: exp.Select | None
) -> list[_Source]:
    """Register one SELECT's sources and equalities; recurse into its derived tables and subqueries."""
    scope = id(select)
    mine: list[_Source] = []
    from_ = select.args.get("from_")
    if from_ is None:
        raise _NotIncremental("it has no FROM")
    mine.append(_source(from_.this, scope, preserved=True))
    for join in select.args.get("joins") or []:
        side = (join.side or "").upper()
        kind = (join.kind or "").upper()
        if side in ("RIGHT", "FULL") or kind in ("ASOF", "POSITIONAL", "SEMI", "ANTI"):
            raise _NotIncremental(f"it uses a {side or kind} JOIN")
        source = _source(join.this, scope, preserved=side != "LEFT")
        mine.append(source)
        if join.args.get("using"):
            raise _NotIncremental("it joins with USING; write the join condition with ON")
        for conjunct in _conjuncts(join.args.get("on")):
            _equality(conjunct, mine, classes, scope)
    sources.extend(mine)
    for source in mine:
        if source.inner is not None:
            inner_sources = _scope(source.inner, spec, classes, sources, outer=select)
            _link_outputs(source, inner_sources, classes, scope)
    where = select.args.get("where")
    for conjunct in _conjuncts(where.this if where else None):
        if isinstance(conjunct, exp.Not):
            conjunct = conjunct.this
        if isinstance(conjunct, exp.Exists):
            _subquery(conjunct.this, spec, classes, sources, mine, scope)
        elif isinstance(conjunct, exp.In) and conjunct.args.get("query"):
            _in_subquery(conjunct, spec, classes, sources, mine, scope)
        else:
            nested = [n for n in conjunct.find_all(exp.Select) if n.find_ancestor(exp.Select) is select]
            for sub in nested:  # a scalar subquery compared with: correlated like EXISTS
                _subquery(sub, spec, classes, sources, mine, scope)
            if not nested:
                _equality(conjunct, mine, classes, scope)
    for part in [*select.expressions, select.args.get("having"), select.args.get("group")]:
        if part is not None and any(True for _ in part.find_all(exp.Select)):
            raise _NotIncremental("it has a subquery outside WHERE")
    return mine


def _source(node: exp.Expr, scope: int, *, preserved: bool) -> _Source:
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
        return _Source(node.alias_or_name.lower(), node.name.lower(), preserved, scope)
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
        if not node.alias:
            raise _NotIncremental("a derived table has no alias")
        return _Source(node.alias.lower(), None, preserved, scope, inner=node.this)
    raise _NotIncremental(f"it reads from {node.key.upper()}, which no key ties to the tables")


def _link_outputs(source: _Source, inner: list[_Source], classes: _Classes, scope: int) -> None:
    """A derived table's output columns that are plain inner columns join the inner column's class.

    Sound only for the columns that separate the inner query's rows: an inner GROUP BY column, or any
    column of an ungrouped inner query.
    """
    assert source.inner is not None
    grouped = source.inner.args.get("group")
    group_names = (
        {_qualified(c, inner, id(source.inner)) for c in grouped.expressions if isinstance(c, exp.Column)}
        if grouped
        else None
    )
    if grouped is None and _outer_aggregate(source.inner):
        return
    for projection in source.inner.expressions:
        target = projection.this if isinstance(projection, exp.Alias) else projection
        if not isinstance(target, exp.Column):
            continue
        qualified = _qualified(target, inner, id(source.inner))
        if group_names is not None and qualified not in group_names:
            continue
        output = projection.alias_or_name.lower()
        classes.union(f"{scope}:{source.alias}.{output}", qualified)


def _qualified(column: exp.Column, sources: list[_Source], scope: int) -> str:
    alias = column.table.lower() if column.table else next((s.alias for s in sources if s.scope == scope), "")
    return f"{scope}:{alias}.{column.name.lower()}"


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def _equality(conjunct: exp.Expr, visible: list[_Source], classes: _Classes, scope: int) -> None:
    """``a.x = b.y`` between two columns of this scope joins their classes; anything else filters."""
    if (
        isinstance(conjunct, exp.EQ)
        and isinstance(conjunct.left, exp.Column)
        and isinstance(conjunct.right, exp.Column)
    ):
        left = _resolve(conjunct.left, visible, scope)
        right = _resolve(conjunct.right, visible, scope)
        if left and right:
            classes.union(left, right)


def _resolve(column: exp.Column, visible: list[_Source], scope: int) -> str | None:
    if column.table:
        alias = column.table.lower()
        return f"{scope}:{alias}.{column.name.lower()}" if any(s.alias == alias for s in visible) else None
    if len(visible) == 1:
        return f"{scope}:{visible[0].alias}.{column.name.lower()}"
    return None  # an unqualified column among several tables: not used as an equality


def _subquery(
    query: exp.Expr,
    spec: AppSpec,
    classes: _Classes,
    sources: list[_Source],
    outer: list[_Source],
    outer_scope: int,
) -> None:
    """EXISTS (SELECT ... FROM u WHERE u.c = outer.x AND <filters on u>): u joins the outer key class."""
    if not isinstance(query, exp.Select) or query.args.get("joins") or query.args.get("group"):
        raise _NotIncremental("an EXISTS subquery reads more than one table, or groups")
    from_ = query.args.get("from_")
    if from_ is None:
        raise _NotIncremental("an EXISTS subquery has no FROM")
    inner = _source(from_.this, id(query), preserved=False)
    if inner.table is None:
        raise _NotIncremental("an EXISTS subquery reads a derived table")
    sources.append(inner)
    where = query.args.get("where")
    for conjunct in _conjuncts(where.this if where else None):
        outer_refs = [c for c in conjunct.find_all(exp.Column) if c.table and c.table.lower() != inner.alias]
        if not outer_refs:
            if any(True for _ in conjunct.find_all(exp.Select)):
                raise _NotIncremental("an EXISTS subquery nests another subquery")
            continue
        if (
            isinstance(conjunct, exp.EQ)
            and isinstance(conjunct.left, exp.Column)
            and isinstance(conjunct.right, exp.Column)
        ):
            pair = [conjunct.left, conjunct.right]
            mine = [c for c in pair if not c.table or c.table.lower() == inner.alias]
            theirs = [c for c in pair if c.table and c.table.lower() != inner.alias]
            if len(mine) == 1 and len(theirs) == 1:
                resolved = _resolve(theirs[0], outer, outer_scope)
                if resolved is None:
                    raise _NotIncremental("an EXISTS subquery correlates with an unknown outer column")
                classes.union(f"{id(query)}:{inner.alias}.{mine[0].name.lower()}", resolved)
                continue
        raise _NotIncremental("an EXISTS subquery correlates by something other than an equality of columns")


def _in_subquery(
    conjunct: exp.In,
    spec: AppSpec,
    classes: _Classes,
    sources: list[_Source],
    outer: list[_Source],
    outer_scope: int,
) -> None:
    """``x [NOT] IN (SELECT u.c FROM u WHERE <filters on u>)``: u.c joins x's class."""
    query = (
        conjunct.args["query"].this
        if isinstance(conjunct.args["query"], exp.Subquery)
        else conjunct.args["query"]
    )
    if (
        not isinstance(query, exp.Select)
        or len(query.expressions) != 1
        or not isinstance(conjunct.this, exp.Column)
    ):
        raise _NotIncremental("an IN subquery is not `column IN (SELECT column FROM table ...)`")
    if any(
        c.table and c.table.lower() not in {query.args["from_"].this.alias_or_name.lower()}
        for c in query.find_all(exp.Column)
    ):
        raise _NotIncremental("an IN subquery is correlated")
    _subquery(query, spec, classes, sources, outer, outer_scope)
    selected = query.expressions[0]
    if not isinstance(selected, exp.Column):
        raise _NotIncremental("an IN subquery selects an expression, not a column")
    inner_alias = query.args["from_"].this.alias_or_name.lower()
    resolved = _resolve(conjunct.this, outer, outer_scope)
    if resolved is None:
        raise _NotIncremental("an IN subquery compares an unqualified column")
    classes.union(f"{id(query)}:{inner_alias}.{selected.name.lower()}", resolved)


# ---------------------------------------------------------------------------------------- rendering


def _render(template: exp.Expr, points: tuple[tuple[int, str, str], ...], count: int, has_null: bool) -> str:
    """The template with ``column IN ($__k0, ...)`` (and ``OR column IS NULL``) at every point."""
    tree = template.copy()
    scopes = {id(select): select for select in template.find_all(exp.Select)}
    copies = {id(select): select for select in tree.find_all(exp.Select)}
    by_position = dict(zip(scopes, copies.values(), strict=False))
    for scope, alias, column in points:
        target = by_position.get(scope)
        if target is None:
            continue
        ref = exp.column(column, alias)
        options: list[exp.Expr] = []
        if count:
            options.append(
                exp.In(this=ref.copy(), expressions=[exp.Placeholder(this=f"__k{i}") for i in range(count)])
            )
        if has_null:
            options.append(exp.Is(this=ref.copy(), expression=exp.Null()))
        condition: exp.Expr = (
            exp.or_(*options) if len(options) > 1 else (options[0] if options else exp.false())
        )
        target.where(exp.paren(condition) if len(options) > 1 else condition, copy=False)
    return f"(\n{tree.sql(dialect='duckdb')}\n)"
