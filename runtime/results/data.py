"""The Data page's reads: columns, filters, facets, pages of rows, a row with its parents and children."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from runtime.results.app import Rows
from runtime.results.control import ApprovalRequest, Overview, ProposalDetail, ProposalPage, VersionPage
from runtime.results.workflows import RunDetail


class ColumnInfo(BaseModel):
    """A column of an entity or a view as the Data page shows it."""

    name: str
    type: str = Field(description="The spec's type for an entity's field; DuckDB's for a view's column.")
    key: bool = False
    nullable: bool = True
    references: str | None = Field(default=None, description="'entity.field' this column points to.")
    references_key: bool = Field(
        default=False, description="True when the field it points to is that entity's whole primary key."
    )
    referenced_by: list[str] = Field(default=[], description="'entity.field' of the columns pointing here.")


class DataFilter(BaseModel):
    """One condition on a column: ``op`` one of eq, ne, lt, le, gt, ge, contains, startswith, isnull,
    notnull (``value`` unused for the last two)."""

    column: str
    op: str
    value: str | None = None


class FacetValue(BaseModel):
    value: Any
    count: int


class ColumnFacet(BaseModel):
    """The values of a low-cardinality column among the matching rows, with their counts."""

    column: str
    values: list[FacetValue]
    more: bool = Field(description="True when the column has more distinct values than shown.")
    chosen: bool = Field(description="True when the operator asked for it; False when suggested.")


class DataPage(BaseModel):
    """A page of an entity's or a view's rows: sorted, filtered, counted, with facets."""

    table: str
    kind: str = Field(description="'entity' or 'view'.")
    columns: list[ColumnInfo]
    key: list[str]
    rows: Rows
    total: int = Field(description="Rows in the whole table.")
    matching: int = Field(description="Rows matching the filters.")
    offset: int
    limit: int
    more: bool
    sort: str | None = None
    descending: bool = False
    filters: list[DataFilter] = []
    facets: list[ColumnFacet] = []


class ParentLink(BaseModel):
    """A reference from a row to the row it points to."""

    column: str
    table: str
    field: str
    value: Any
    key: bool = Field(description="True when the field pointed to is the parent's whole primary key.")
    found: bool


class ChildRows(BaseModel):
    """Rows of another entity pointing to this row, counted, the first few shown."""

    table: str
    column: str = Field(description="The child's column that points here.")
    field: str = Field(description="This row's field it points to.")
    value: Any
    count: int
    columns: list[str]
    key: list[str]
    rows: Rows


class RowDetail(BaseModel):
    """One row of an entity, by its primary key, with its parents and its children."""

    table: str
    columns: list[ColumnInfo]
    key: dict[str, Any]
    row: list[Any] | None = Field(
        description="The row's values in column order; None when no row has the key."
    )
    parents: list[ParentLink] = []
    children: list[ChildRows] = []


RunDetail.model_rebuild()


for _model in (ApprovalRequest, Overview, VersionPage, ProposalPage, ProposalDetail):
    _model.model_rebuild()
