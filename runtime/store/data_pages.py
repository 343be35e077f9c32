"""The Data page's reads: a page of a table, one row with its parents and children, an export —
composed from ``runtime.store.browse``'s statements and run through a ``DataSource``, whose ``query``
is the runtime's guarded read (the ``query`` tool's guard and limits). The runtime authorises and
audits each read; this module only decides what to ask and puts the answers together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.results import (
    ChildRows,
    ColumnFacet,
    DataFilter,
    DataPage,
    FacetValue,
    ParentLink,
    QueryResult,
    RowDetail,
)
from runtime.schema.spec import AppSpec
from runtime.store import browse


@dataclass(frozen=True)
class DataSource:
    """What the Data page's reads use: the current spec, the database's columns of a relation, the
    guarded query (``sql, params, row limit``) and the row limit of a query."""

    spec: AppSpec
    columns: Callable[[str], Sequence[tuple[str, str]]]
    query: Callable[[str, dict[str, Any], int | None], QueryResult]
    max_rows: int

    def relation(self, table: str) -> browse.Relation:
        return browse.relation(self.spec, table, self.columns(table))


def browse_data(
    source: DataSource,
    table: str,
    wanted: Sequence[DataFilter],
    *,
    sort: str | None,
    descending: bool,
    offset: int,
    limit: int,
    facets: Sequence[str],
    suggest: bool,
) -> DataPage:
    """A page of ``table``'s rows filtered, sorted, counted, with the facets asked for and suggested."""
    rel = source.relation(table)
    condition, params = browse.where(rel, wanted)
    ordering = browse.order(rel, sort, descending)
    chosen = list(dict.fromkeys(facets))
    for name in chosen:
        rel.column(name)
    probed = browse.probe_columns(rel, chosen) if suggest else []
    probe = source.query(browse.probe_sql(rel, condition, probed), params, 1).rows[0]
    total, matching, distinct = int(probe[0]), int(probe[1]), probe[2:]
    size = max(1, min(int(limit), source.max_rows - 1))
    start = max(0, int(offset))
    page = source.query(
        browse.rows_sql(rel, condition, ordering, limit=size + 1, offset=start), params, size + 1
    )
    suggested = [c for c, n in zip(probed, distinct, strict=True) if 0 < int(n or 0) <= browse.SUGGEST_BELOW][
        : browse.MAX_SUGGESTED
    ]
    shown = chosen + [c for c in suggested if c not in chosen]
    found: list[ColumnFacet] = []
    if shown and matching:
        counted = source.query(browse.facet_sql(rel, condition, shown), params, None).rows
        for number, name in enumerate(shown):
            values = [FacetValue(value=v, count=int(n)) for f, v, n in counted if int(f) == number]
            found.append(
                ColumnFacet(
                    column=name,
                    values=values[: browse.MAX_FACET_VALUES],
                    more=len(values) > browse.MAX_FACET_VALUES,
                    chosen=name in chosen,
                )
            )
    return DataPage(
        table=rel.name,
        kind=rel.kind,
        columns=list(rel.columns),
        key=list(rel.key),
        rows=page.rows[:size],
        total=total,
        matching=matching,
        offset=start,
        limit=size,
        more=page.row_count > size,
        sort=sort,
        descending=descending,
        filters=wanted,
        facets=found,
    )


def read_row(source: DataSource, table: str, wanted: Mapping[str, str]) -> RowDetail:
    """One row by its key, with the rows its references point to and the rows pointing to it."""
    rel = source.relation(table)
    sql, params = browse.row_sql(rel, wanted)
    found = source.query(sql, params, 2)
    row = found.rows[0] if found.rows else None
    values = dict(zip(found.columns, row, strict=True)) if row is not None else {}
    parents: list[ParentLink] = []
    children: list[ChildRows] = []
    if row is not None:
        spec = source.spec
        for column in rel.columns:
            value = values.get(column.name)
            if column.references is None or value is None:
                continue
            parent_name, parent_field = column.references.split(".", 1)
            parent = source.relation(parent_name)
            bound = browse.value_of(parent, parent_field, str(value))
            n = source.query(browse.count_sql(parent, parent_field), {"v": bound}, 1).rows[0][0]
            parents.append(
                ParentLink(
                    column=column.name,
                    table=parent_name,
                    field=parent_field,
                    value=value,
                    key=parent.key == (parent_field,),
                    found=bool(n),
                )
            )
        for column in rel.columns:
            value = values.get(column.name)
            if value is None:
                continue
            for pointer in column.referenced_by:
                child_name, child_field = pointer.split(".", 1)
                if spec.entity(child_name) is None:
                    continue
                child = source.relation(child_name)
                bound = {"v": browse.value_of(child, child_field, str(value))}
                n = source.query(browse.count_sql(child, child_field), bound, 1).rows[0][0]
                first = source.query(browse.children_sql(child, child_field), bound, browse.CHILD_ROWS)
                children.append(
                    ChildRows(
                        table=child_name,
                        column=child_field,
                        field=column.name,
                        value=value,
                        count=int(n),
                        columns=first.columns,
                        key=list(child.key),
                        rows=first.rows,
                    )
                )
    return RowDetail(
        table=rel.name,
        columns=list(rel.columns),
        key={k: values.get(k, wanted.get(k)) for k in rel.key},
        row=row,
        parents=parents,
        children=children,
    )


def export_data(
    source: DataSource, table: str, wanted: Sequence[DataFilter], *, sort: str | None, descending: bool
) -> QueryResult:
    """The matching rows, sorted, as many as the query limits allow (``truncated`` when more matched)."""
    rel = source.relation(table)
    condition, params = browse.where(rel, wanted)
    ordering = browse.order(rel, sort, descending)
    limit = source.max_rows
    sql = browse.rows_sql(rel, condition, ordering, limit=limit, offset=0)
    result = source.query(sql, params, limit)
    if result.row_count == limit and not result.truncated:  # were there more than the limit?
        matching = source.query(browse.probe_sql(rel, condition, []), params, 1).rows[0][1]
        result = result.model_copy(update={"truncated": int(matching) > limit})
    return result
