"""Typed change operations and ``apply(spec, ops) -> spec`` (pure).

Each operation is a small frozen model discriminated by ``op``. ``apply`` validates every
operation against the spec it applies to and the final spec as a whole (names, references,
types, defaults, SQL parsed with sqlglot) and raises a precise ``SpecError`` or ``SqlError``
whose ``details.path`` points at the offending operation, before any SQL exists.

>>> from runtime.schema.spec import AppSpec
>>> op = parse_operations([{"op": "add_entity", "entity": {"name": "slot", "primary_key": ["id"],
...     "fields": [{"name": "id", "type": "integer"}]}}])
>>> apply(AppSpec(), op).entity("slot").field_names
('id',)
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import sqlglot
import sqlglot.expressions as exp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from runtime.errors import ButtressError, Code, SpecError, SqlError
from runtime.schema import flows, usage
from runtime.schema.spec import (
    ActionSpec,
    AppSpec,
    CheckedBy,
    DefaultExpr,
    DefaultValue,
    EntitySpec,
    FieldSpec,
    IndexSpec,
    InvariantSpec,
    JsonScalar,
    LogicalType,
    Name,
    OnDelete,
    Ref,
    SubscriptionSpec,
    TopicSpec,
    ViewSpec,
    WorkflowSpec,
)
from runtime.schema.types import constant_fits
from runtime.sql import sqlcheck


class _Op(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AddEntity(_Op):
    """Create an entity (a table) with its fields, primary key, unique sets and indexes."""

    op: Literal["add_entity"] = "add_entity"
    entity: EntitySpec


class DropEntity(_Op):
    """Drop an entity. Its rows are retained until finalized, so a rollback restores them."""

    op: Literal["drop_entity"] = "drop_entity"
    entity: Name


class RenameEntity(_Op):
    op: Literal["rename_entity"] = "rename_entity"
    entity: Name
    new_name: Name


class AddField(_Op):
    """Add a field. A NOT NULL field on an existing entity needs a default."""

    op: Literal["add_field"] = "add_field"
    entity: Name
    field: FieldSpec
    position: int | None = Field(
        default=None, ge=0, description="Insert before this field index (default: last)."
    )


class DropField(_Op):
    """Drop a field. Its values are retained until finalized."""

    op: Literal["drop_field"] = "drop_field"
    entity: Name
    field: Name


class RenameField(_Op):
    op: Literal["rename_field"] = "rename_field"
    entity: Name
    field: Name
    new_name: Name


class AlterField(_Op):
    """Change a field's type, nullability, default or check. Unset attributes are kept.

    ``backfill`` fills NULLs when making a field NOT NULL; ``drop_default`` / ``drop_check`` remove them.
    """

    op: Literal["alter_field"] = "alter_field"
    entity: Name
    field: Name
    type: LogicalType | None = None
    nullable: bool | None = None
    default: DefaultValue | None = None
    drop_default: bool = False
    check: str | None = None
    drop_check: bool = False
    backfill: JsonScalar | None = None
    on_delete: OnDelete | None = None


class AddUnique(_Op):
    op: Literal["add_unique"] = "add_unique"
    entity: Name
    columns: tuple[Name, ...] = Field(min_length=1)


class DropUnique(_Op):
    op: Literal["drop_unique"] = "drop_unique"
    entity: Name
    columns: tuple[Name, ...] = Field(min_length=1)


class AddIndex(_Op):
    op: Literal["add_index"] = "add_index"
    entity: Name
    index: IndexSpec


class DropIndex(_Op):
    op: Literal["drop_index"] = "drop_index"
    entity: Name
    name: Name


class AddInvariant(_Op):
    op: Literal["add_invariant"] = "add_invariant"
    invariant: InvariantSpec


class DropInvariant(_Op):
    op: Literal["drop_invariant"] = "drop_invariant"
    name: Name


class AddView(_Op):
    op: Literal["add_view"] = "add_view"
    view: ViewSpec


class ReplaceView(_Op):
    op: Literal["replace_view"] = "replace_view"
    view: ViewSpec


class DropView(_Op):
    op: Literal["drop_view"] = "drop_view"
    name: Name


class AddAction(_Op):
    op: Literal["add_action"] = "add_action"
    action: ActionSpec


class ReplaceAction(_Op):
    op: Literal["replace_action"] = "replace_action"
    action: ActionSpec


class DropAction(_Op):
    op: Literal["drop_action"] = "drop_action"
    name: Name


class AddTopic(_Op):
    """Declare a topic: a named stream of messages with a typed payload."""

    op: Literal["add_topic"] = "add_topic"
    topic: TopicSpec


class ReplaceTopic(_Op):
    """Change a topic's payload, key or delivery. Undelivered messages are converted: a dropped field's
    values are retained (a rollback or a redeploy restores them); a message that cannot be converted
    refuses the change at dry-run."""

    op: Literal["replace_topic"] = "replace_topic"
    topic: TopicSpec


class DropTopic(_Op):
    """Drop a topic. Its undelivered messages are held back (a rollback releases them)."""

    op: Literal["drop_topic"] = "drop_topic"
    name: Name


class AddWorkflow(_Op):
    """Declare a workflow: typed parameters and named steps."""

    op: Literal["add_workflow"] = "add_workflow"
    workflow: WorkflowSpec


class ReplaceWorkflow(_Op):
    """Change a workflow. Runs already started finish on the definition they started with."""

    op: Literal["replace_workflow"] = "replace_workflow"
    workflow: WorkflowSpec


class DropWorkflow(_Op):
    """Drop a workflow: no new runs. Runs in flight finish on their definition (or are cancelled)."""

    op: Literal["drop_workflow"] = "drop_workflow"
    name: Name


class AddSubscription(_Op):
    """Feed a topic's messages to a workflow or an action, one run or call per message."""

    op: Literal["add_subscription"] = "add_subscription"
    subscription: SubscriptionSpec


class ReplaceSubscription(_Op):
    op: Literal["replace_subscription"] = "replace_subscription"
    subscription: SubscriptionSpec


class DropSubscription(_Op):
    op: Literal["drop_subscription"] = "drop_subscription"
    name: Name


class SetCheckedBy(_Op):
    """Move who enforces ``references`` and field ``check`` expressions: ``buttress`` (the runtime, on
    the rows each transaction wrote, with ``on_delete``) or ``duckdb`` (FOREIGN KEY and CHECK
    constraints). Rebuilds the tables that hold references or checks; reversible."""

    op: Literal["set_checked_by"] = "set_checked_by"
    by: CheckedBy


Operation = Annotated[
    AddEntity
    | DropEntity
    | RenameEntity
    | AddField
    | DropField
    | RenameField
    | AlterField
    | AddUnique
    | DropUnique
    | AddIndex
    | DropIndex
    | AddInvariant
    | DropInvariant
    | AddView
    | ReplaceView
    | DropView
    | AddAction
    | ReplaceAction
    | DropAction
    | SetCheckedBy
    | AddTopic
    | ReplaceTopic
    | DropTopic
    | AddWorkflow
    | ReplaceWorkflow
    | DropWorkflow
    | AddSubscription
    | ReplaceSubscription
    | DropSubscription,
    Field(discriminator="op"),
]

OPERATION_NAMES: list[str] = [
    str(kind.model_fields["op"].default) for kind in typing.get_args(typing.get_args(Operation)[0])
]
"""Every operation's ``op``, in the order of the ``Operation`` union."""

_OPERATIONS: TypeAdapter[list[Operation]] = TypeAdapter(list[Operation])


def parse_operations(raw: Sequence[Any], *, agent: bool = True) -> list[Operation]:
    """Validate raw JSON operations into typed ones, or raise ``spec.invalid`` listing every problem.

    ``agent``: the operations come from outside (a proposal); names the runtime chooses itself
    (sequences) are refused in them. Reverse operations the runtime derives pass ``agent=False``.
    """
    try:
        return _OPERATIONS.validate_python(list(raw), context={"agent": agent})
    except ValidationError as error:
        problems = _problems(error)
        first = problems[0] if problems else {"path": "operations", "problem": "invalid"}
        raise SpecError(
            Code.SPEC_INVALID,
            f"invalid operation at {first['path']}: {first['problem']}",
            hint=_hint_for(first),
            details={"problems": problems[:20]},
        ) from None


def _problems(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as ``{path, problem}``, without the errors a container reports only because
    one of its items failed (a field with a bad type also made its ``fields`` tuple "too short")."""
    found = []
    for e in error.errors(include_url=False):
        path = "operations" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        found.append({"path": path, "problem": str(e["msg"]).removeprefix("Value error, ")})
    paths = [p["path"] for p in found]
    return [
        p
        for p in found
        if not any(
            (other != p["path"] and other.startswith(p["path"] + ".")) or other.startswith(p["path"] + "[")
            for other in paths
        )
    ]


def _hint_for(problem: dict[str, str]) -> str:
    """What to do about the first problem of a malformed operation."""
    path, text = problem["path"], problem["problem"]
    if path.endswith(".type") and "unknown type" in text:
        return "Use one of the types the message lists (e.g. integer, text, decimal(10,2))."
    if path.endswith(".op") or "discriminator" in text or "tag" in text:
        return "Each operation is an object whose 'op' names one of the operation types (add_entity, add_field, ...)."
    if "Extra inputs" in text:
        return "Remove the key named at the end of details.problems[0].path; propose_change describes each shape."
    if "Field required" in text:
        return (
            "Add the key named at the end of details.problems[0].path; propose_change describes each shape."
        )
    return "Fix the value at details.problems[0].path; propose_change describes each operation's shape."


def operations_json(ops: Sequence[Operation]) -> list[dict[str, Any]]:
    return [op.model_dump(mode="json", exclude_defaults=False) for op in ops]


# --------------------------------------------------------------------------------------------- apply


def apply(spec: AppSpec, ops: Sequence[Operation]) -> AppSpec:
    """Apply operations in order and validate the result. Pure: the input spec is never changed.

    The actions the operations add or replace are stored with explicit INSERT column lists
    (``explicit_operations``); every action of the result is checked against it and against
    ``spec`` (what the change broke: analysis, column order, types), all problems in one error.
    """
    current = spec
    ops = explicit_operations(spec, ops)
    for index, op in enumerate(ops):
        try:
            current = apply_one(current, op)
        except ButtressError as error:
            error.details.setdefault("path", f"operations[{index}]")
            error.details.setdefault("op", op.op)
            raise
    validate(current, changed_actions=_changed_actions(ops), changed=_changed_objects(ops), base=spec)
    return current


def explicit_operations(spec: AppSpec, ops: Sequence[Operation]) -> list[Operation]:
    """``ops`` with every INSERT of the actions they add or replace given the column list it means in
    the spec the operations produce (``usage.explicit_insert``): what is stored never depends on
    column order. Statements that do not analyse, or cannot be made explicit, are left as written:
    ``validate`` reports them with every other problem."""
    if not any(isinstance(op, AddAction | ReplaceAction) for op in ops):
        return list(ops)
    target = spec
    try:
        for op in ops:
            target = apply_one(target, op)
    except ButtressError:
        return list(ops)  # apply() reports the operation at fault
    out: list[Operation] = []
    for op in ops:
        if isinstance(op, AddAction | ReplaceAction) and op.action.kind == "mutation":
            statements = []
            for statement in op.action.statements:
                try:
                    statements.append(usage.explicit_insert(statement, target))
                except ButtressError:
                    statements.append(statement)
            if tuple(statements) != op.action.statements:
                op = op.model_copy(
                    update={"action": op.action.model_copy(update={"statements": tuple(statements)})}
                )
        out.append(op)
    return out


def apply_one(spec: AppSpec, op: Operation) -> AppSpec:
    """Apply one operation and validate the structure it leaves (keys, references, defaults)."""
    current = _APPLY[type(op)](spec, op)
    _validate_structure(current)
    return current


def _fail(message: str, hint: str | None = None, **details: Any) -> SpecError:
    return SpecError(Code.SPEC_INVALID, message, hint=hint, details=details)


def _entity(spec: AppSpec, name: str) -> EntitySpec:
    entity = spec.entity(name)
    if entity is None:
        known = ", ".join(e.name for e in spec.entities) or "none yet"
        raise _fail(f"no entity named {name!r}", f"Known entities: {known}.", entity=name)
    return entity


def _field(entity: EntitySpec, name: str) -> FieldSpec:
    field = entity.field(name)
    if field is None:
        raise _fail(
            f"entity {entity.name!r} has no field {name!r}",
            f"Fields of {entity.name}: {', '.join(entity.field_names)}.",
            entity=entity.name,
            field=name,
        )
    return field


def _replace_entity(spec: AppSpec, old_name: str, new: EntitySpec | None) -> AppSpec:
    entities = tuple(
        new if e.name == old_name else e for e in spec.entities if new is not None or e.name != old_name
    )
    return spec.model_copy(update={"entities": entities})


def _with_fields(entity: EntitySpec, fields: Sequence[FieldSpec], **update: Any) -> EntitySpec:
    return entity.model_copy(update={"fields": tuple(fields), **update})


def _name_taken(spec: AppSpec, name: str) -> bool:
    return spec.entity(name) is not None or spec.view(name) is not None


def _sequence_names(spec: AppSpec) -> set[str]:
    return {
        f.default_expr.sequence
        for e in spec.entities
        for f in e.fields
        if f.default_expr and f.default_expr.sequence
    }


def _assign_sequence(spec: AppSpec, entity: str, field: FieldSpec) -> FieldSpec:
    expr = field.default_expr
    if expr is None or expr.expr != "autoincrement" or expr.sequence:
        return field
    taken, base = _sequence_names(spec), f"{entity}_{field.name}_seq"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return field.model_copy(update={"default": DefaultExpr(expr="autoincrement", sequence=name)})


def _add_entity(spec: AppSpec, op: AddEntity) -> AppSpec:
    if _name_taken(spec, op.entity.name):
        raise _fail(f"{op.entity.name!r} already exists", "Choose another name or alter the existing entity.")
    entity = op.entity
    fields: list[FieldSpec] = []
    interim = spec
    for f in entity.fields:
        f = _assign_sequence(interim, entity.name, f)
        fields.append(f)
        interim = interim.model_copy(update={"entities": (*interim.entities, _with_fields(entity, fields))})
    entity = _with_fields(entity, fields)
    return spec.model_copy(update={"entities": (*spec.entities, entity)})


def _drop_entity(spec: AppSpec, op: DropEntity) -> AppSpec:
    _entity(spec, op.entity)
    children = sorted({c.name for c, _ in spec.referencing(op.entity) if c.name != op.entity})
    if children:
        raise _fail(
            f"cannot drop {op.entity!r}: {', '.join(children)} reference it",
            "Drop the referencing fields or entities first, in the same proposal.",
            entity=op.entity,
            referenced_by=children,
        )
    return _replace_entity(spec, op.entity, None)


def _rename_entity(spec: AppSpec, op: RenameEntity) -> AppSpec:
    entity = _entity(spec, op.entity)
    if _name_taken(spec, op.new_name):
        raise _fail(f"{op.new_name!r} already exists", "Choose a name not used by an entity or a view.")
    renamed = entity.model_copy(update={"name": op.new_name})
    spec = _replace_entity(spec, op.entity, renamed)
    return _rewrite_references(spec, (op.entity, None), (op.new_name, None))


def _rewrite_references(spec: AppSpec, old: tuple[str, str | None], new: tuple[str, str | None]) -> AppSpec:
    """Point foreign keys at a renamed entity or field."""
    entities = []
    for e in spec.entities:
        fields = []
        for f in e.fields:
            ref = f.reference
            if ref and ref[0] == old[0] and (old[1] is None or ref[1] == old[1]):
                f = f.model_copy(update={"references": f"{new[0]}.{new[1] or ref[1]}"})
            fields.append(f)
        entities.append(_with_fields(e, fields))
    return spec.model_copy(update={"entities": tuple(entities)})


def _add_field(spec: AppSpec, op: AddField) -> AppSpec:
    entity = _entity(spec, op.entity)
    if entity.field(op.field.name) is not None:
        raise _fail(f"{op.entity}.{op.field.name} already exists", "Use alter_field to change it.")
    expr = op.field.default_expr
    if expr is not None and expr.expr == "autoincrement" and expr.sequence is None:
        raise _fail(
            "autoincrement can only be declared when the entity is created",
            "Add the field with a constant default, or create a new entity.",
        )
    field = _assign_sequence(spec, entity.name, op.field)
    fields = list(entity.fields)
    fields.insert(len(fields) if op.position is None else min(op.position, len(fields)), field)
    return _replace_entity(spec, op.entity, _with_fields(entity, fields))


def _drop_field(spec: AppSpec, op: DropField) -> AppSpec:
    entity = _entity(spec, op.entity)
    _field(entity, op.field)
    if op.field in entity.primary_key:
        raise _fail(
            f"{op.entity}.{op.field} is part of the primary key and cannot be dropped", entity=op.entity
        )
    children = [
        f"{c.name}.{f.name}" for c, f in spec.referencing(op.entity) if f.reference == (op.entity, op.field)
    ]
    if children:
        raise _fail(
            f"{op.entity}.{op.field} is referenced by {', '.join(children)}",
            "Drop or alter the referencing fields first, in the same proposal.",
            referenced_by=children,
        )
    for cols in entity.unique:
        if op.field in cols:
            raise _fail(
                f"{op.entity}.{op.field} is in the unique set {list(cols)}",
                f"Add {{'op': 'drop_unique', 'entity': '{op.entity}', 'columns': {list(cols)}}} before it.",
            )
    for index in entity.indexes:
        if op.field in index.columns:
            raise _fail(
                f"{op.entity}.{op.field} is in index {index.name!r}",
                f"Add a drop_index of {index.name!r} before it, in the same proposal.",
            )
    fields = [f for f in entity.fields if f.name != op.field]
    return _replace_entity(spec, op.entity, _with_fields(entity, fields))


def _rename_field(spec: AppSpec, op: RenameField) -> AppSpec:
    entity = _entity(spec, op.entity)
    _field(entity, op.field)
    if entity.field(op.new_name) is not None:
        raise _fail(f"{op.entity}.{op.new_name} already exists")

    def swap(name: str) -> str:
        return op.new_name if name == op.field else name

    fields = []
    for f in entity.fields:
        update: dict[str, Any] = {}
        if f.name == op.field:
            update["name"] = op.new_name
        if f.check:
            update["check"] = rename_column_in_expression(f.check, op.field, op.new_name)
        fields.append(f.model_copy(update=update))
    renamed = _with_fields(
        entity,
        fields,
        primary_key=tuple(swap(c) for c in entity.primary_key),
        unique=tuple(tuple(swap(c) for c in cols) for cols in entity.unique),
        indexes=tuple(
            i.model_copy(update={"columns": tuple(swap(c) for c in i.columns)}) for i in entity.indexes
        ),
    )
    spec = _replace_entity(spec, op.entity, renamed)
    return _rewrite_references(spec, (op.entity, op.field), (op.entity, op.new_name))


def rename_column_in_expression(sql: str, old: str, new: str) -> str:
    """Rewrite column references in a CHECK expression (pure; the tree is copied)."""
    tree = sqlglot.parse_one(sql, dialect="duckdb").copy()
    for column in tree.find_all(exp.Column):
        if column.name == old:
            column.set("this", exp.to_identifier(new))
    return tree.sql(dialect="duckdb")


def _alter_field(spec: AppSpec, op: AlterField) -> AppSpec:
    entity = _entity(spec, op.entity)
    field = _field(entity, op.field)
    update: dict[str, Any] = {}
    if op.type is not None:
        if field.autoincrement and op.type not in {"integer", "bigint"}:
            raise _fail("an autoincrement field must stay integer or bigint")
        update["type"] = op.type
    if op.nullable is not None:
        if op.nullable and op.field in entity.primary_key:
            raise _fail(f"{op.entity}.{op.field} is in the primary key and cannot be nullable")
        update["nullable"] = op.nullable
    if op.drop_default and op.default is not None:
        raise _fail("give either default or drop_default, not both")
    if op.drop_check and op.check is not None:
        raise _fail("give either check or drop_check, not both")
    if op.default is not None:
        if isinstance(op.default, DefaultExpr) and op.default.expr == "autoincrement":
            raise _fail("autoincrement can only be declared when the entity is created")
        update["default"] = op.default
    if op.drop_default:
        if field.autoincrement:
            raise _fail("the autoincrement default of a key cannot be dropped")
        update["default"] = None
    if op.check is not None:
        update["check"] = op.check
    if op.drop_check:
        update["check"] = None
    if op.on_delete is not None:
        if field.references is None:
            raise _fail(f"{op.entity}.{op.field} references nothing: on_delete has no meaning for it")
        update["on_delete"] = op.on_delete
    if op.backfill is not None and (op.nullable is not False or not field.nullable):
        raise _fail(
            "backfill is only used when making a nullable field NOT NULL", "Set nullable: false with it."
        )
    if not update:
        raise _fail(
            "alter_field changes nothing", "Give at least one of type, nullable, default, check, on_delete."
        )
    new_field = field.model_copy(update=update)
    if new_field == field:
        raise _fail("alter_field changes nothing: the field already has these attributes")
    children = [
        f"{c.name}.{f.name}" for c, f in spec.referencing(op.entity) if f.reference == (op.entity, op.field)
    ]
    if op.type is not None and op.type != field.type and (children or field.reference):
        raise _fail(
            f"the type of {op.entity}.{op.field} cannot change while a foreign key links it",
            "Drop the foreign key fields first, or keep the type.",
            referenced_by=children,
        )
    if op.backfill is not None:
        check_constant(op.backfill, new_field.type, f"{op.entity}.{op.field} backfill")
    fields = [new_field if f.name == op.field else f for f in entity.fields]
    return _replace_entity(spec, op.entity, _with_fields(entity, fields))


def _add_unique(spec: AppSpec, op: AddUnique) -> AppSpec:
    entity = _entity(spec, op.entity)
    if op.columns in entity.unique or op.columns == entity.primary_key:
        raise _fail(f"{op.entity} already has the unique set {list(op.columns)}")
    return _replace_entity(
        spec, op.entity, entity.model_copy(update={"unique": (*entity.unique, op.columns)})
    )


def _drop_unique(spec: AppSpec, op: DropUnique) -> AppSpec:
    entity = _entity(spec, op.entity)
    if op.columns not in entity.unique:
        raise _fail(
            f"{op.entity} has no unique set {list(op.columns)}",
            details_unique=[list(u) for u in entity.unique],
        )
    for child, f in spec.referencing(op.entity):
        if f.reference and (f.reference[1],) == op.columns:
            raise _fail(
                f"{child.name}.{f.name} references {op.entity}.{f.reference[1]} through this unique set"
            )
    unique = tuple(u for u in entity.unique if u != op.columns)
    return _replace_entity(spec, op.entity, entity.model_copy(update={"unique": unique}))


def _all_index_names(spec: AppSpec) -> set[str]:
    return {i.name for e in spec.entities for i in e.indexes}


def _add_index(spec: AppSpec, op: AddIndex) -> AppSpec:
    entity = _entity(spec, op.entity)
    if op.index.name in _all_index_names(spec) or _name_taken(spec, op.index.name):
        raise _fail(f"an object named {op.index.name!r} already exists")
    return _replace_entity(
        spec, op.entity, entity.model_copy(update={"indexes": (*entity.indexes, op.index)})
    )


def _drop_index(spec: AppSpec, op: DropIndex) -> AppSpec:
    entity = _entity(spec, op.entity)
    if all(i.name != op.name for i in entity.indexes):
        raise _fail(f"{op.entity} has no index {op.name!r}", indexes=[i.name for i in entity.indexes])
    indexes = tuple(i for i in entity.indexes if i.name != op.name)
    return _replace_entity(spec, op.entity, entity.model_copy(update={"indexes": indexes}))


def _add_invariant(spec: AppSpec, op: AddInvariant) -> AppSpec:
    if spec.invariant(op.invariant.name) is not None:
        raise _fail(f"invariant {op.invariant.name!r} already exists", "Drop it first, in the same proposal.")
    return spec.model_copy(update={"invariants": (*spec.invariants, op.invariant)})


def _drop_invariant(spec: AppSpec, op: DropInvariant) -> AppSpec:
    if spec.invariant(op.name) is None:
        raise _fail(f"no invariant named {op.name!r}")
    return spec.model_copy(update={"invariants": tuple(i for i in spec.invariants if i.name != op.name)})


def _add_view(spec: AppSpec, op: AddView) -> AppSpec:
    if _name_taken(spec, op.view.name):
        raise _fail(f"{op.view.name!r} already exists", "Use replace_view to change an existing view.")
    return spec.model_copy(update={"views": (*spec.views, op.view)})


def _replace_view(spec: AppSpec, op: ReplaceView) -> AppSpec:
    if spec.view(op.view.name) is None:
        raise _fail(f"no view named {op.view.name!r}", "Use add_view to create it.")
    return spec.model_copy(
        update={"views": tuple(op.view if v.name == op.view.name else v for v in spec.views)}
    )


def _drop_view(spec: AppSpec, op: DropView) -> AppSpec:
    if spec.view(op.name) is None:
        raise _fail(f"no view named {op.name!r}")
    return spec.model_copy(update={"views": tuple(v for v in spec.views if v.name != op.name)})


def _add_action(spec: AppSpec, op: AddAction) -> AppSpec:
    if spec.action(op.action.name) is not None:
        raise _fail(f"action {op.action.name!r} already exists", "Use replace_action to change it.")
    return spec.model_copy(update={"actions": (*spec.actions, op.action)})


def _replace_action(spec: AppSpec, op: ReplaceAction) -> AppSpec:
    if spec.action(op.action.name) is None:
        raise _fail(f"no action named {op.action.name!r}", "Use add_action to create it.")
    return spec.model_copy(
        update={"actions": tuple(op.action if a.name == op.action.name else a for a in spec.actions)}
    )


def _drop_action(spec: AppSpec, op: DropAction) -> AppSpec:
    if spec.action(op.name) is None:
        raise _fail(f"no action named {op.name!r}")
    return spec.model_copy(update={"actions": tuple(a for a in spec.actions if a.name != op.name)})


def _add_topic(spec: AppSpec, op: AddTopic) -> AppSpec:
    if spec.topic(op.topic.name) is not None:
        raise _fail(f"topic {op.topic.name!r} already exists", "Use replace_topic to change it.")
    return spec.model_copy(update={"topics": (*spec.topics, op.topic)})


def _replace_topic(spec: AppSpec, op: ReplaceTopic) -> AppSpec:
    if spec.topic(op.topic.name) is None:
        raise _fail(f"no topic named {op.topic.name!r}", "Use add_topic to create it.")
    return spec.model_copy(
        update={"topics": tuple(op.topic if t.name == op.topic.name else t for t in spec.topics)}
    )


def _drop_topic(spec: AppSpec, op: DropTopic) -> AppSpec:
    if spec.topic(op.name) is None:
        raise _fail(
            f"no topic named {op.name!r}", f"Topics: {', '.join(t.name for t in spec.topics) or 'none'}."
        )
    return spec.model_copy(update={"topics": tuple(t for t in spec.topics if t.name != op.name)})


def _add_workflow(spec: AppSpec, op: AddWorkflow) -> AppSpec:
    if spec.workflow(op.workflow.name) is not None:
        raise _fail(f"workflow {op.workflow.name!r} already exists", "Use replace_workflow to change it.")
    return spec.model_copy(update={"workflows": (*spec.workflows, op.workflow)})


def _replace_workflow(spec: AppSpec, op: ReplaceWorkflow) -> AppSpec:
    if spec.workflow(op.workflow.name) is None:
        raise _fail(f"no workflow named {op.workflow.name!r}", "Use add_workflow to create it.")
    return spec.model_copy(
        update={"workflows": tuple(op.workflow if w.name == op.workflow.name else w for w in spec.workflows)}
    )


def _drop_workflow(spec: AppSpec, op: DropWorkflow) -> AppSpec:
    if spec.workflow(op.name) is None:
        raise _fail(
            f"no workflow named {op.name!r}",
            f"Workflows: {', '.join(w.name for w in spec.workflows) or 'none'}.",
        )
    return spec.model_copy(update={"workflows": tuple(w for w in spec.workflows if w.name != op.name)})


def _add_subscription(spec: AppSpec, op: AddSubscription) -> AppSpec:
    if spec.subscription(op.subscription.name) is not None:
        raise _fail(
            f"subscription {op.subscription.name!r} already exists", "Use replace_subscription to change it."
        )
    return spec.model_copy(update={"subscriptions": (*spec.subscriptions, op.subscription)})


def _replace_subscription(spec: AppSpec, op: ReplaceSubscription) -> AppSpec:
    if spec.subscription(op.subscription.name) is None:
        raise _fail(f"no subscription named {op.subscription.name!r}", "Use add_subscription to create it.")
    name = op.subscription.name
    return spec.model_copy(
        update={"subscriptions": tuple(op.subscription if x.name == name else x for x in spec.subscriptions)}
    )


def _drop_subscription(spec: AppSpec, op: DropSubscription) -> AppSpec:
    if spec.subscription(op.name) is None:
        raise _fail(f"no subscription named {op.name!r}")
    return spec.model_copy(
        update={"subscriptions": tuple(x for x in spec.subscriptions if x.name != op.name)}
    )


def _set_checked_by(spec: AppSpec, op: SetCheckedBy) -> AppSpec:
    if spec.checked_by == op.by:
        raise _fail(f"references and checks are already checked by {op.by}", "Nothing to change.")
    return spec.model_copy(update={"checked_by": op.by})


_APPLY: dict[type[Any], Callable[[AppSpec, Any], AppSpec]] = {
    AddEntity: _add_entity,
    DropEntity: _drop_entity,
    RenameEntity: _rename_entity,
    AddField: _add_field,
    DropField: _drop_field,
    RenameField: _rename_field,
    AlterField: _alter_field,
    AddUnique: _add_unique,
    DropUnique: _drop_unique,
    AddIndex: _add_index,
    DropIndex: _drop_index,
    AddInvariant: _add_invariant,
    DropInvariant: _drop_invariant,
    AddView: _add_view,
    ReplaceView: _replace_view,
    DropView: _drop_view,
    AddAction: _add_action,
    ReplaceAction: _replace_action,
    DropAction: _drop_action,
    SetCheckedBy: _set_checked_by,
    AddTopic: _add_topic,
    ReplaceTopic: _replace_topic,
    DropTopic: _drop_topic,
    AddWorkflow: _add_workflow,
    ReplaceWorkflow: _replace_workflow,
    DropWorkflow: _drop_workflow,
    AddSubscription: _add_subscription,
    ReplaceSubscription: _replace_subscription,
    DropSubscription: _drop_subscription,
}


def _changed_objects(ops: Sequence[Operation]) -> frozenset[str]:
    """``view:x`` / ``invariant:x`` for the views and invariants the operations add or replace."""
    out = set()
    for op in ops:
        if isinstance(op, AddView | ReplaceView):
            out.add(f"view:{op.view.name}")
        elif isinstance(op, AddInvariant):
            out.add(f"invariant:{op.invariant.name}")
    return frozenset(out)


def _changed_actions(ops: Sequence[Operation]) -> frozenset[str]:
    return frozenset(op.action.name for op in ops if isinstance(op, AddAction | ReplaceAction))


# ----------------------------------------------------------------------------------------- validate


def _validate_structure(spec: AppSpec) -> None:
    """Keys, references, defaults and checks of every entity (run after each operation)."""
    seen: set[str] = set()
    for entity in spec.entities:
        if entity.name in seen:
            raise _fail(f"duplicate entity {entity.name!r}")
        seen.add(entity.name)
        _validate_entity(spec, entity)
    _refuse_reference_cycles(spec)


def _refuse_reference_cycles(spec: AppSpec) -> None:
    """Foreign keys must form no cycle: tables are created parents first, and rebuilt the same way."""
    parents = {e.name: {f.reference[0] for f in e.fields if f.reference} for e in spec.entities}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise _fail(
                f"foreign keys form a cycle: {' -> '.join(cycle)}",
                "Break the cycle: make one of the references a plain field, or use a link entity.",
                cycle=cycle,
            )
        state[name] = 1
        for parent in sorted(parents.get(name, ())):
            visit(parent, [*path, name])
        state[name] = 2

    for entity in sorted(parents):
        visit(entity, [])


def _validate_entity(spec: AppSpec, entity: EntitySpec) -> None:
    names = entity.field_names
    if len(set(names)) != len(names):
        raise _fail(f"entity {entity.name!r} has duplicate field names", entity=entity.name)
    where = f"entity {entity.name!r}"
    _require_columns(entity, entity.primary_key, f"{where} primary key")
    if len(set(entity.primary_key)) != len(entity.primary_key):
        raise _fail(f"{where} primary key repeats a field")
    for f in entity.fields:
        if f.name in entity.primary_key and f.nullable:
            raise _fail(f"{entity.name}.{f.name} is in the primary key and cannot be nullable")
    for cols in entity.unique:
        _require_columns(entity, cols, f"{where} unique set")
    for index in entity.indexes:
        _require_columns(entity, index.columns, f"{where} index {index.name!r}")
    for f in entity.fields:
        _validate_field(spec, entity, f)


def _require_columns(entity: EntitySpec, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if entity.field(c) is None]
    if missing:
        raise _fail(f"{what} names unknown fields {missing}", f"Fields: {', '.join(entity.field_names)}.")


def _validate_field(spec: AppSpec, entity: EntitySpec, f: FieldSpec) -> None:
    label = f"{entity.name}.{f.name}"
    expr = f.default_expr
    if expr is not None:
        allowed = {
            "now()": {"timestamp", "timestamptz", "date"},
            "current_date": {"date", "timestamp", "timestamptz"},
            "uuid()": {"uuid", "text"},
            "autoincrement": {"integer", "bigint"},
        }[expr.expr]
        if f.type not in allowed:
            raise _fail(
                f"default {expr.expr} does not fit {label} of type {f.type}", f"Use it on: {sorted(allowed)}."
            )
    elif f.default is not None:
        check_constant(f.default, f.type, f"{label} default")
    if f.check is not None:
        sqlcheck.analyze_expression(f.check, entity.field_names, context=f"check of {label}")
    ref = f.reference
    if f.references is not None:
        if ref is None or not ref[1]:
            raise _fail(f"{label} references {f.references!r}; write it as 'entity.field'")
        if ref[0] == entity.name:
            raise _fail(
                f"{label} references its own entity",
                "Self-references are not supported yet; use a link entity.",
            )
        target = spec.entity(ref[0])
        if target is None:
            raise _fail(f"{label} references unknown entity {ref[0]!r}")
        target_field = target.field(ref[1])
        if target_field is None:
            raise _fail(f"{label} references unknown field {f.references!r}")
        if (ref[1],) != target.primary_key and (ref[1],) not in target.unique:
            raise _fail(
                f"{label} references {f.references}, which is neither the primary key nor unique",
                "Reference a single-field primary key, or add a unique set on it first.",
            )
        if target_field.type != f.type:
            raise _fail(f"{label} is {f.type} but references {f.references} of type {target_field.type}")
    if f.on_delete != "restrict":
        if f.references is None:
            raise _fail(f"{label} references nothing: on_delete has no meaning for it")
        if spec.checked_by != "buttress":
            raise _fail(
                f"{label}: on_delete {f.on_delete} needs references checked by buttress",
                'Add {"op": "set_checked_by", "by": "buttress"} first (DuckDB constraints only restrict).',
            )
        if f.on_delete == "set_null" and not f.nullable:
            raise _fail(f"{label}: on_delete set_null needs a nullable field", "Make the field nullable.")


def check_constant(value: Any, logical: str, label: str) -> None:
    """Refuse a constant that does not fit its logical type."""
    if not constant_fits(value, logical):
        raise _fail(f"{label} {value!r} is not a valid {logical} value")


def validate(
    spec: AppSpec,
    *,
    changed_actions: frozenset[str] | None = None,
    changed: frozenset[str] = frozenset(),
    base: AppSpec | None = None,
) -> None:
    """Validate a whole spec: structure, then views, invariants and actions against it.

    Every object that no longer fits is reported at once, in one error (``details.problems``), so an
    agent fixes a dropped entity's view, invariant and actions in one proposal, not one per attempt.
    Every action is analysed; what a change may newly break is judged against ``base`` (the spec the
    change applies to): a type mismatch the base did not have, an INSERT that fills a table by
    position (stored before column lists were made explicit) when that table's columns change.
    ``changed_actions`` (None: all) are the actions the proposal writes: their statements must not
    depend on column order at all. ``changed`` names the objects the proposal itself writes
    (``view:x``, ``invariant:x``), whose hint is to fix their SQL rather than to replace them.
    """
    _validate_structure(spec)
    names: set[str] = {e.name for e in spec.entities}
    relations: dict[str, tuple[str, ...]] = {e.name: e.field_names for e in spec.entities}
    entities = frozenset(e.name for e in spec.entities)
    problems: list[tuple[str, str, ButtressError]] = []
    for view in spec.views:
        if view.name in names:
            raise _fail(f"view {view.name!r} collides with another entity or view")
        try:
            analysis = sqlcheck.analyze_query(view.sql, relations)
            relations[view.name] = analysis.output_columns
            if f"view:{view.name}" in changed:
                usage.refuse_order_dependence(analysis, spec, where=f"view {view.name!r}")
        except SqlError as error:
            problems.append(("view", view.name, error))
        names.add(view.name)
    for invariant in spec.invariants:
        try:
            analysis = sqlcheck.analyze_query(invariant.sql, relations)
            if f"invariant:{invariant.name}" in changed:
                usage.refuse_order_dependence(analysis, spec, where=f"invariant {invariant.name!r}")
        except SqlError as error:
            problems.append(("invariant", invariant.name, error))
    base_types = _type_problem_keys(base) if base is not None else None
    for action in spec.actions:
        written = changed_actions is None or action.name in changed_actions
        try:
            analyses = check_action(action, relations, entities)
            if written:
                for index, analysis in enumerate(analyses):
                    _refuse_positional(action, index, analysis, spec)
            elif base is not None:
                _refuse_reordered(action, analyses, spec, base)
            mismatches = usage.type_problems(action, analyses, spec)
            if not written and base_types is not None:
                mismatches = [m for m in mismatches if (action.name, *_type_key(m)) not in base_types]
            if mismatches:
                raise usage.type_error(action, mismatches)
        except ButtressError as error:
            problems.append(("action", action.name, error))
    if problems:
        raise _objects_misfit(problems, changed | {f"action:{a}" for a in changed_actions or ()})
    if len({a.name for a in spec.actions}) != len(spec.actions):
        raise _fail("duplicate action names")
    flows.validate_flows(spec)
    if len({i.name for i in spec.invariants}) != len(spec.invariants):
        raise _fail("duplicate invariant names")


def _type_key(problem: usage.TypeProblem) -> tuple[Any, ...]:
    return (problem.link, problem.other_type, problem.column_type)


_TYPE_KEYS: dict[str, frozenset[tuple[Any, ...]]] = {}


def _type_problem_keys(spec: AppSpec) -> frozenset[tuple[Any, ...]]:
    """The type mismatches ``spec``'s own actions already had (cached per spec): a change is judged
    on what it newly breaks."""
    key = spec.hash()
    found = _TYPE_KEYS.get(key)
    if found is None:
        relations = spec.relations()
        entities = frozenset(e.name for e in spec.entities)
        keys: set[tuple[Any, ...]] = set()
        for action in spec.actions:
            try:
                analyses = check_action(action, relations, entities)
            except ButtressError:
                continue
            keys.update((action.name, *_type_key(m)) for m in usage.type_problems(action, analyses, spec))
        if len(_TYPE_KEYS) > 256:
            _TYPE_KEYS.clear()
        found = _TYPE_KEYS[key] = frozenset(keys)
    return found


def _refuse_positional(action: ActionSpec, index: int, analysis: sqlcheck.Analysis, spec: AppSpec) -> None:
    """A statement the proposal writes must name the columns it fills (``explicit_operations`` gives
    an INSERT its list; what is left could not be given one)."""
    where = f"action {action.name!r} statement {index}"
    usage.refuse_order_dependence(analysis, spec, where=where)
    if any(d.kind == "insert_without_columns" for d in analysis.order_dependent):
        usage.explicit_insert(analysis.sql, spec, where=where)  # raises what makes it impossible
        raise SqlError(
            Code.SQL_MISMATCH,
            f"{where}: an INSERT without a column list fills its table by position",
            hint="Name the columns: INSERT INTO <table> (<columns>) VALUES (...).",
            details={"action": action.name, "statement": index},
        )


def _refuse_reordered(
    action: ActionSpec, analyses: Sequence[sqlcheck.Analysis], spec: AppSpec, base: AppSpec
) -> None:
    """An unchanged action stored with an INSERT that fills its table by position breaks when the
    change alters that table's columns: the values would land in other columns."""
    for index, analysis in enumerate(analyses):
        for found in analysis.order_dependent:
            if found.kind != "insert_without_columns" or found.table is None:
                continue
            before, after = base.entity(found.table), spec.entity(found.table)
            if before is None or after is None or before.field_names == after.field_names:
                continue
            try:
                explicit = usage.explicit_insert(analysis.sql, base)
            except ButtressError:
                explicit = f"INSERT INTO {found.table} ({', '.join(before.field_names)}) ..."
            raise SqlError(
                Code.SQL_MISMATCH,
                f"action {action.name!r} statement {index} fills {found.table} by position, and this change "
                f"makes its columns ({', '.join(before.field_names)}) into ({', '.join(after.field_names)}): "
                "its values would land in other columns",
                hint=f"Replace the action in the same proposal with its columns named, e.g. {explicit}",
                details={
                    "action": action.name,
                    "statement": index,
                    "table": found.table,
                    "columns_before": list(before.field_names),
                    "columns_after": list(after.field_names),
                    "explicit": explicit,
                },
            )


def _objects_misfit(problems: list[tuple[str, str, ButtressError]], changed: frozenset[str]) -> ButtressError:
    """One error for every view, invariant and action that does not fit the proposed schema."""
    kind, name, first = problems[0]
    listed = [
        {
            "kind": k,
            "name": n,
            "code": str(e.code),
            "problem": e.message,
            "written_by_this_proposal": f"{k}:{n}" in changed,
        }
        for k, n, e in problems
    ]
    own = [p for p in listed if p["written_by_this_proposal"]]
    existing = [f"{p['kind']} {p['name']}" for p in listed if not p["written_by_this_proposal"]]
    advice = []
    if own:
        advice.append("Fix the SQL of the objects this proposal adds or replaces.")
    if existing:
        advice.append(
            f"The change breaks {', '.join(existing)}: replace or drop them in the same proposal "
            "(replace_view, drop_invariant + add_invariant, replace_action)."
        )
    advice.append(first.hint)
    label = (
        first.message if first.message.startswith(f"{kind} {name!r}") else f"{kind} {name!r}: {first.message}"
    )
    message = (
        label
        if len(problems) == 1
        else f"{len(problems)} objects do not fit: "
        + "; ".join(
            e.message if e.message.startswith(f"{k} {n!r}") else f"{k} {n!r}: {e.message}"
            for k, n, e in problems
        )
    )
    error = type(first)(first.code, message, hint=" ".join(advice), details={**first.details, kind: name})
    error.details["problems"] = listed
    return error


def check_action(
    action: ActionSpec, relations: dict[str, tuple[str, ...]], entities: frozenset[str] | None = None
) -> list[sqlcheck.Analysis]:
    """Analyse every statement of an action against the relations; raise on the first problem."""
    entities = frozenset(relations) if entities is None else entities
    declared = {p.name for p in action.params}
    if len(declared) != len(action.params):
        raise _fail(f"action {action.name!r} declares a parameter twice")
    analyses = []
    used: set[str] = set()
    for index, statement in enumerate(action.statements):
        try:
            analysis = sqlcheck.analyze_statement(
                statement, relations, allow_writes=action.kind == "mutation"
            )
        except SqlError as error:
            error.details.update(action=action.name, statement=index)
            error.message = f"action {action.name!r} statement {index}: {error.message}"
            raise
        unknown = [p for p in analysis.params if p not in declared]
        if unknown:
            raise SqlError(
                Code.SQL_PARAM,
                f"action {action.name!r} statement {index} uses undeclared parameters {unknown}",
                hint="Declare every $name in params, with its type.",
                details={"action": action.name, "statement": index, "params": unknown},
            )
        views = analysis.writes - entities
        if views:
            raise SqlError(
                Code.SQL_FORBIDDEN,
                f"action {action.name!r} statement {index} writes to views {sorted(views)}",
                hint="Write to entities; views are read-only.",
                details={"action": action.name, "statement": index, "views": sorted(views)},
            )
        used.update(analysis.params)
        analyses.append(analysis)
    for emit in action.emits:  # a parameter may exist only to be emitted
        for value in (*emit.args.values(), emit.run_id):
            if isinstance(value, Ref) and value.parts[0] == "args":
                used.add(value.parts[1])
    unused = sorted(declared - used)
    if unused:
        raise SqlError(
            Code.SQL_PARAM,
            f"action {action.name!r} declares parameters it never uses: {unused}",
            hint="Remove them from params or use them as $name in a statement.",
            details={"action": action.name, "params": unused},
        )
    return analyses
