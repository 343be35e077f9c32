"""What the parts of a spec use, and whether a statement still means what it meant (pure).

Three questions the planner and the dry-run ask of the SQL a spec stores, answered from sqlglot's
analysis (``runtime.sql.facts.Analysis``) and the spec's types:

* **Column order.** An INSERT without a column list fills a table by position: its meaning changes
  when a field is dropped and another added. ``explicit_columns`` gives every such statement of
  the actions a proposal adds or replaces the column list it means *at the version it is proposed
  for*, so no stored statement depends on column order. A ``*`` feeding an INSERT, or lining up the
  branches of a UNION, cannot be given one without guessing: it is refused with the explicit form.
* **Types.** A bare parameter or column put into a column, or compared with one, must hold values
  of a type that fits it (``type_problems``): a field retyped under an action is found before the
  action runs, not when it fails or quietly converts.
* **Field usage.** Which actions (read or written), views and invariants use a field, and through
  those actions which workflow steps, compensations and subscriptions (``field_users``): what a
  drop, rename or retype hazard names.

>>> from runtime.schema.spec import AppSpec, EntitySpec, FieldSpec
>>> spec = AppSpec(entities=(EntitySpec(name="review", primary_key=("id",), fields=(
...     FieldSpec(name="id", type="integer"), FieldSpec(name="body", type="text"))),))
>>> explicit_insert("insert into review values ($id, $body)", spec)
'insert into review (id, body) values ($id, $body)'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from runtime.errors import ButtressError, Code, SqlError
from runtime.schema.spec import ActionSpec, ActionStep, AppSpec
from runtime.schema.types import is_widening
from runtime.sql import sqlcheck
from runtime.sql.facts import Analysis, Link

TEXT_FORMS: Final = frozenset({"uuid", "date", "timestamp", "timestamptz", "json"})
"""Column types a text value is written in (DuckDB parses it, or refuses it when it does not parse)."""


# ----------------------------------------------------------------------------------- column order


def explicit_insert(sql: str, spec: AppSpec, *, where: str = "statement") -> str:
    """``sql`` with the column list its INSERT means under ``spec`` (unchanged when it has one).

    Raises ``sql.mismatch`` when its rows do not have one value per column, and ``sql.forbidden``
    (with the explicit form in the hint) for a ``*`` that feeds an INSERT or a set operation.
    """
    analysis = sqlcheck.analyze_statement(sql, spec.relations(), allow_writes=True)
    refuse_order_dependence(analysis, spec, where=where)
    found = next((d for d in analysis.order_dependent if d.kind == "insert_without_columns"), None)
    if found is None or found.table is None or found.offset is None:
        return sql
    entity = spec.entity(found.table)
    if entity is None:
        return sql
    columns = entity.field_names
    if found.width is not None and found.width != len(columns):
        raise SqlError(
            Code.SQL_MISMATCH,
            f"{where}: INSERT INTO {found.table} without a column list gives {found.width} values per row, "
            f"but {found.table} has {len(columns)} columns ({', '.join(columns)})",
            hint=f"Name the columns the values go into: INSERT INTO {found.table} (<columns>) VALUES (...).",
            details={"table": found.table, "values": found.width, "columns": list(columns)},
        )
    text = analysis.sql
    return f"{text[: found.offset]} ({', '.join(columns)}){text[found.offset :]}"


def refuse_order_dependence(analysis: Analysis, spec: AppSpec, *, where: str) -> None:
    """Refuse a ``*`` whose columns an INSERT or a set operation takes by position."""
    for found in analysis.order_dependent:
        if found.kind == "insert_without_columns":
            continue
        if found.kind == "star_into_insert":
            entity = spec.entity(found.table or "")
            columns = ", ".join(entity.field_names) if entity is not None else "<columns>"
            example = f"INSERT INTO {found.table} ({columns}) SELECT <one named expression per column> ..."
            message = f"{where}: a * feeds INSERT INTO {found.table}: which value lands in which column depends on column order"
        else:
            example = "SELECT a, b FROM x UNION ALL SELECT a, b FROM y"
            message = f"{where}: a * in a set operation lines columns up by position"
        raise SqlError(
            Code.SQL_FORBIDDEN,
            message,
            hint=f"Name the columns instead of *, in the order they go: {example}. A stored statement must "
            "mean the same when fields are added or dropped later.",
            details={"order_dependent": found.kind, "table": found.table},
        )


def explicit_columns(action: ActionSpec, spec: AppSpec) -> ActionSpec:
    """The action with every INSERT given the column list it means under ``spec``."""
    statements = tuple(
        explicit_insert(statement, spec, where=f"action {action.name!r} statement {index}")
        if action.kind == "mutation"
        else statement
        for index, statement in enumerate(action.statements)
    )
    if statements == action.statements:
        return action
    return action.model_copy(update={"statements": statements})


# ------------------------------------------------------------------------------------------ types


def column_type(spec: AppSpec, relation: str, column: str) -> str | None:
    """The logical type of an entity's field (None for a view's column: its type is DuckDB's to say)."""
    entity = spec.entity(relation)
    found = entity.field(column) if entity is not None else None
    return found.type if found is not None else None


def fits(value: str, column: str) -> bool:
    """A value of logical type ``value`` can be written into a column of type ``column`` unchanged."""
    return is_widening(value, column) or (value == "text" and column in TEXT_FORMS)


def carries(value: str, param: str) -> bool:
    """A run's value of type ``value`` (carried as JSON: numbers and booleans as such; text, decimals,
    dates, times and UUIDs as strings) is accepted by a parameter or payload field of type ``param``."""
    if param in {"json", value}:
        return True
    if param == "text":
        return value in {"uuid", "date", "timestamp", "timestamptz"} or value.startswith("decimal")
    return (value != "text" and fits(value, param)) or (value == "text" and param in TEXT_FORMS)


def _family(logical: str) -> str:
    if logical in {"integer", "bigint", "double"} or logical.startswith("decimal"):
        return "number"
    if logical in {"date", "timestamp", "timestamptz"}:
        return "time"
    return logical


def comparable(left: str, right: str) -> bool:
    """Values of the two types compare without an implicit conversion that changes their meaning."""
    a, b = _family(left), _family(right)
    if a == b:
        return True
    return "text" in {a, b} and ({a, b} - {"text"}) <= {"time", "uuid", "json"}


@dataclass(frozen=True)
class TypeProblem:
    """A bare parameter or column whose type does not fit the column it meets."""

    statement: int
    link: Link
    other_type: str
    column_type: str

    @property
    def message(self) -> str:
        other = (
            f"${self.link.other[1]}"
            if self.link.other[0] == "param"
            else f"{self.link.other[1]}.{self.link.other[2]}"
        )
        column = f"{self.link.column[0]}.{self.link.column[1]}"
        if self.link.kind == "compare":
            return (
                f"statement {self.statement} compares {column} ({self.column_type}) with {other} "
                f"({self.other_type})"
            )
        return (
            f"statement {self.statement} puts {other} ({self.other_type}) into {column} ({self.column_type})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "statement": self.statement,
            "kind": self.link.kind,
            "field": f"{self.link.column[0]}.{self.link.column[1]}",
            "field_type": self.column_type,
            "value": "$" + self.link.other[1]
            if self.link.other[0] == "param"
            else ".".join(self.link.other[1:]),
            "value_type": self.other_type,
            "problem": self.message,
        }


def type_problems(action: ActionSpec, analyses: Sequence[Analysis], spec: AppSpec) -> list[TypeProblem]:
    """Every bare parameter or column of the action that meets a column of a type it does not fit."""
    params = {p.name: p.type for p in action.params}
    out: list[TypeProblem] = []
    for index, analysis in enumerate(analyses):
        for link in analysis.links:
            target = column_type(spec, *link.column)
            if link.other[0] == "param":
                other = params.get(link.other[1])
            else:
                other = column_type(spec, link.other[1], link.other[2])
            if target is None or other is None:
                continue
            ok = comparable(target, other) if link.kind == "compare" else fits(other, target)
            if not ok:
                out.append(TypeProblem(index, link, other, target))
    return out


def type_error(action: ActionSpec, problems: Sequence[TypeProblem]) -> SqlError:
    first = problems[0]
    return SqlError(
        Code.SQL_MISMATCH,
        f"action {action.name!r} {first.message}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
        hint="Declare the parameter with the field's type (or cast it explicitly in the SQL), or replace "
        "the action in the same proposal.",
        details={"action": action.name, "mismatches": [p.as_dict() for p in problems]},
    )


# ------------------------------------------------------------------------------------ field usage


def _analysed(sql: str, relations: dict[str, tuple[str, ...]], *, writes: bool) -> Analysis | None:
    try:
        return sqlcheck.analyze_statement(sql, relations, allow_writes=writes)
    except ButtressError:
        return None


def uses(spec: AppSpec) -> dict[str, frozenset[tuple[str, str]]]:
    """Each view, invariant and action (``view:x``, ``invariant:x``, ``action:x``) with the fields it
    reads or writes, a view's own columns resolved to the fields under them."""
    relations: dict[str, tuple[str, ...]] = {e.name: e.field_names for e in spec.entities}
    through: dict[str, frozenset[tuple[str, str]]] = {}
    out: dict[str, frozenset[tuple[str, str]]] = {}

    def fields(pairs: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for relation, column in pairs:
            if relation in through:
                found |= through[relation]
            else:
                found.add((relation, column))
        return frozenset(found)

    for view in spec.views:
        analysis = _analysed(view.sql, relations, writes=False)
        relations[view.name] = analysis.output_columns if analysis is not None else ()
        used = fields(analysis.columns_read) if analysis is not None else frozenset()
        through[view.name] = used
        out[f"view:{view.name}"] = used
    for invariant in spec.invariants:
        analysis = _analysed(invariant.sql, relations, writes=False)
        out[f"invariant:{invariant.name}"] = (
            fields(analysis.columns_read) if analysis is not None else frozenset()
        )
    for action in spec.actions:
        used_by_action: set[tuple[str, str]] = set()
        for statement in action.statements:
            analysis = _analysed(statement, relations, writes=action.kind == "mutation")
            if analysis is not None:
                used_by_action |= fields(analysis.columns_read | analysis.columns_written)
        out[f"action:{action.name}"] = frozenset(used_by_action)
    return out


def field_users(spec: AppSpec, entity: str, field: str) -> list[str]:
    """Everything in ``spec`` that uses ``entity.field``: views, invariants and actions directly, and
    the workflow steps, compensations and subscriptions that run those actions."""
    key = (entity, field)
    found = {name for name, used in uses(spec).items() if key in used}
    actions = {name.split(":", 1)[1] for name in found if name.startswith("action:")}
    out = sorted(name.replace(":", " ", 1) for name in found)
    for workflow in spec.workflows:
        for step in workflow.steps:
            if isinstance(step, ActionStep) and step.action in actions:
                out.append(f"workflow {workflow.name} step {step.name}")
            undo = step.compensated_by()
            if undo is not None and undo.action in actions:
                out.append(f"workflow {workflow.name} step {step.name} compensation")
    calling = {w.name for w in spec.workflows if set(w.calls) & actions}
    for subscription in spec.subscriptions:
        if subscription.action in actions or subscription.workflow in calling:
            out.append(f"subscription {subscription.name}")
    return out


def users_text(users: Sequence[str], limit: int = 8) -> str:
    """``; used by action a, view v`` (or nothing), for a hazard message."""
    if not users:
        return ""
    shown = ", ".join(users[:limit]) + (f" and {len(users) - limit} more" if len(users) > limit else "")
    return f"; used by {shown}"
