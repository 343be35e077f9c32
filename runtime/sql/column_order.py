"""Column order: which value an INSERT puts into which column by position, and where a statement's
meaning depends on the order of a table's columns.

``inserted_values`` pairs each value of an INSERT's source (VALUES rows, a select list, the branches
of a set operation) with its position, for the type links ``runtime.sql.columns`` draws;
``order_dependence`` reports an INSERT without a column list, a ``*`` feeding an INSERT, and a ``*``
in a branch of a set operation (``OrderDependence``), for ``runtime.schema.usage`` to make explicit
or refuse: a stored statement must mean the same when fields are added or dropped later.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import exp

from runtime.sql.facts import OrderDependence


def inserted_values(source: exp.Expr) -> Iterator[tuple[int, exp.Expr]]:
    """(position, expression) of each value an INSERT's source puts into its target's columns."""
    while isinstance(source, (exp.Subquery, exp.Paren)) and not source.alias:
        source = source.this
    if isinstance(source, exp.Values):
        for row in source.expressions:
            items = row.expressions if isinstance(row, exp.Tuple) else [row]
            yield from enumerate(items)
    elif isinstance(source, exp.Select):
        if not any(_is_star(e) for e in source.expressions):
            for position, expression in enumerate(source.expressions):
                yield position, expression.this if isinstance(expression, exp.Alias) else expression
    elif isinstance(source, exp.SetOperation):
        yield from inserted_values(source.left)
        yield from inserted_values(source.right)


def _is_star(expression: exp.Expr) -> bool:
    return isinstance(expression, exp.Star) or (
        isinstance(expression, exp.Column) and isinstance(expression.this, exp.Star)
    )


def _has_star(query: exp.Expr) -> bool:
    """A ``*`` in the select list of ``query`` (or of any branch of it, for a set operation)."""
    while isinstance(query, (exp.Subquery, exp.Paren)) and not query.alias:
        query = query.this
    if isinstance(query, exp.SetOperation):
        return _has_star(query.left) or _has_star(query.right)
    return isinstance(query, exp.Select) and any(_is_star(e) for e in query.expressions)


def _width(source: exp.Expr | None) -> int | None:
    """How many values each row of an INSERT's source has, when the text says."""
    while isinstance(source, (exp.Subquery, exp.Paren)) and not source.alias:
        source = source.this
    if isinstance(source, exp.Values) and source.expressions:
        first = source.expressions[0]
        return len(first.expressions) if isinstance(first, exp.Tuple) else 1
    if isinstance(source, exp.SetOperation):
        return _width(source.left)
    if isinstance(source, exp.Select) and not _has_star(source):
        return len(source.expressions)
    return None


def order_dependence(tree: exp.Expr, target: exp.Table | None) -> tuple[OrderDependence, ...]:
    """Where the statement's meaning depends on the order of a table's columns (see ``OrderDependence``)."""
    found: list[OrderDependence] = []
    if isinstance(tree, exp.Insert) and target is not None and not tree.args.get("by_name"):
        table = target.name.lower()
        if not isinstance(tree.this, exp.Schema):
            last = target.args.get("alias")
            anchor = last.this if isinstance(last, exp.TableAlias) else target.parts[-1]
            end = anchor.meta.get("end")
            found.append(
                OrderDependence(
                    "insert_without_columns",
                    table=table,
                    offset=end + 1 if isinstance(end, int) else None,
                    width=_width(tree.expression),
                )
            )
        if tree.expression is not None and _has_star(tree.expression):
            found.append(OrderDependence("star_into_insert", table=table))
    for operation in tree.find_all(exp.SetOperation):
        if not operation.args.get("by_name") and (_has_star(operation.left) or _has_star(operation.right)):
            found.append(OrderDependence("star_in_set_operation"))
            break
    return tuple(found)
