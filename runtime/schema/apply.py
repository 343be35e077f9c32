"""Applying change operations to an ``AppSpec`` (pure): ``apply(spec, ops) -> spec``.

One function per operation, registered in ``_APPLY`` by operation type, returns a new spec (the
input is never changed) or raises a precise ``spec.invalid``; ``apply_one`` checks the structure
each operation leaves (``validate.validate_structure``), and ``apply`` validates the final spec
against the one it started from (``validate.validate``), with ``details.path`` naming the
operation at fault. ``explicit_operations`` gives the INSERTs of the actions a change adds or
replaces the column list they mean, so what is stored never depends on column order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlglot
import sqlglot.expressions as exp

from runtime.errors import ButtressError
from runtime.schema import usage
from runtime.schema.operations import (
    AddAction,
    AddEntity,
    AddField,
    AddIndex,
    AddInvariant,
    AddSubscription,
    AddTopic,
    AddUnique,
    AddView,
    AddWorkflow,
    AlterField,
    DropAction,
    DropEntity,
    DropField,
    DropIndex,
    DropInvariant,
    DropSubscription,
    DropTopic,
    DropUnique,
    DropView,
    DropWorkflow,
    Operation,
    RenameEntity,
    RenameField,
    ReplaceAction,
    ReplaceSubscription,
    ReplaceTopic,
    ReplaceView,
    ReplaceWorkflow,
    SetCheckedBy,
)
from runtime.schema.spec import AppSpec, DefaultExpr, EntitySpec, FieldSpec
from runtime.schema.validate import check_constant, fail, validate, validate_structure


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
    validate_structure(current)
    return current


def _entity(spec: AppSpec, name: str) -> EntitySpec:
    entity = spec.entity(name)
    if entity is None:
        known = ", ".join(e.name for e in spec.entities) or "none yet"
        raise fail(f"no entity named {name!r}", f"Known entities: {known}.", entity=name)
    return entity


def _field(entity: EntitySpec, name: str) -> FieldSpec:
    field = entity.field(name)
    if field is None:
        raise fail(
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
        raise fail(f"{op.entity.name!r} already exists", "Choose another name or alter the existing entity.")
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
        raise fail(
            f"cannot drop {op.entity!r}: {', '.join(children)} reference it",
            "Drop the referencing fields or entities first, in the same proposal.",
            entity=op.entity,
            referenced_by=children,
        )
    return _replace_entity(spec, op.entity, None)


def _rename_entity(spec: AppSpec, op: RenameEntity) -> AppSpec:
    entity = _entity(spec, op.entity)
    if _name_taken(spec, op.new_name):
        raise fail(f"{op.new_name!r} already exists", "Choose a name not used by an entity or a view.")
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
        raise fail(f"{op.entity}.{op.field.name} already exists", "Use alter_field to change it.")
    expr = op.field.default_expr
    if expr is not None and expr.expr == "autoincrement" and expr.sequence is None:
        raise fail(
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
        raise fail(
            f"{op.entity}.{op.field} is part of the primary key and cannot be dropped", entity=op.entity
        )
    children = [
        f"{c.name}.{f.name}" for c, f in spec.referencing(op.entity) if f.reference == (op.entity, op.field)
    ]
    if children:
        raise fail(
            f"{op.entity}.{op.field} is referenced by {', '.join(children)}",
            "Drop or alter the referencing fields first, in the same proposal.",
            referenced_by=children,
        )
    for cols in entity.unique:
        if op.field in cols:
            raise fail(
                f"{op.entity}.{op.field} is in the unique set {list(cols)}",
                f"Add {{'op': 'drop_unique', 'entity': '{op.entity}', 'columns': {list(cols)}}} before it.",
            )
    for index in entity.indexes:
        if op.field in index.columns:
            raise fail(
                f"{op.entity}.{op.field} is in index {index.name!r}",
                f"Add a drop_index of {index.name!r} before it, in the same proposal.",
            )
    fields = [f for f in entity.fields if f.name != op.field]
    return _replace_entity(spec, op.entity, _with_fields(entity, fields))


def _rename_field(spec: AppSpec, op: RenameField) -> AppSpec:
    entity = _entity(spec, op.entity)
    _field(entity, op.field)
    if entity.field(op.new_name) is not None:
        raise fail(f"{op.entity}.{op.new_name} already exists")

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
            raise fail("an autoincrement field must stay integer or bigint")
        update["type"] = op.type
    if op.nullable is not None:
        if op.nullable and op.field in entity.primary_key:
            raise fail(f"{op.entity}.{op.field} is in the primary key and cannot be nullable")
        update["nullable"] = op.nullable
    if op.drop_default and op.default is not None:
        raise fail("give either default or drop_default, not both")
    if op.drop_check and op.check is not None:
        raise fail("give either check or drop_check, not both")
    if op.default is not None:
        if isinstance(op.default, DefaultExpr) and op.default.expr == "autoincrement":
            raise fail("autoincrement can only be declared when the entity is created")
        update["default"] = op.default
    if op.drop_default:
        if field.autoincrement:
            raise fail("the autoincrement default of a key cannot be dropped")
        update["default"] = None
    if op.check is not None:
        update["check"] = op.check
    if op.drop_check:
        update["check"] = None
    if op.on_delete is not None:
        if field.references is None:
            raise fail(f"{op.entity}.{op.field} references nothing: on_delete has no meaning for it")
        update["on_delete"] = op.on_delete
    if op.backfill is not None and (op.nullable is not False or not field.nullable):
        raise fail(
            "backfill is only used when making a nullable field NOT NULL", "Set nullable: false with it."
        )
    if not update:
        raise fail(
            "alter_field changes nothing", "Give at least one of type, nullable, default, check, on_delete."
        )
    new_field = field.model_copy(update=update)
    if new_field == field:
        raise fail("alter_field changes nothing: the field already has these attributes")
    children = [
        f"{c.name}.{f.name}" for c, f in spec.referencing(op.entity) if f.reference == (op.entity, op.field)
    ]
    if op.type is not None and op.type != field.type and (children or field.reference):
        raise fail(
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
        raise fail(f"{op.entity} already has the unique set {list(op.columns)}")
    return _replace_entity(
        spec, op.entity, entity.model_copy(update={"unique": (*entity.unique, op.columns)})
    )


def _drop_unique(spec: AppSpec, op: DropUnique) -> AppSpec:
    entity = _entity(spec, op.entity)
    if op.columns not in entity.unique:
        raise fail(
            f"{op.entity} has no unique set {list(op.columns)}",
            details_unique=[list(u) for u in entity.unique],
        )
    for child, f in spec.referencing(op.entity):
        if f.reference and (f.reference[1],) == op.columns:
            raise fail(
                f"{child.name}.{f.name} references {op.entity}.{f.reference[1]} through this unique set"
            )
    unique = tuple(u for u in entity.unique if u != op.columns)
    return _replace_entity(spec, op.entity, entity.model_copy(update={"unique": unique}))


def _all_index_names(spec: AppSpec) -> set[str]:
    return {i.name for e in spec.entities for i in e.indexes}


def _add_index(spec: AppSpec, op: AddIndex) -> AppSpec:
    entity = _entity(spec, op.entity)
    if op.index.name in _all_index_names(spec) or _name_taken(spec, op.index.name):
        raise fail(f"an object named {op.index.name!r} already exists")
    return _replace_entity(
        spec, op.entity, entity.model_copy(update={"indexes": (*entity.indexes, op.index)})
    )


def _drop_index(spec: AppSpec, op: DropIndex) -> AppSpec:
    entity = _entity(spec, op.entity)
    if all(i.name != op.name for i in entity.indexes):
        raise fail(f"{op.entity} has no index {op.name!r}", indexes=[i.name for i in entity.indexes])
    indexes = tuple(i for i in entity.indexes if i.name != op.name)
    return _replace_entity(spec, op.entity, entity.model_copy(update={"indexes": indexes}))


def _add_invariant(spec: AppSpec, op: AddInvariant) -> AppSpec:
    if spec.invariant(op.invariant.name) is not None:
        raise fail(f"invariant {op.invariant.name!r} already exists", "Drop it first, in the same proposal.")
    return spec.model_copy(update={"invariants": (*spec.invariants, op.invariant)})


def _drop_invariant(spec: AppSpec, op: DropInvariant) -> AppSpec:
    if spec.invariant(op.name) is None:
        raise fail(f"no invariant named {op.name!r}")
    return spec.model_copy(update={"invariants": tuple(i for i in spec.invariants if i.name != op.name)})


def _add_view(spec: AppSpec, op: AddView) -> AppSpec:
    if _name_taken(spec, op.view.name):
        raise fail(f"{op.view.name!r} already exists", "Use replace_view to change an existing view.")
    return spec.model_copy(update={"views": (*spec.views, op.view)})


def _replace_view(spec: AppSpec, op: ReplaceView) -> AppSpec:
    if spec.view(op.view.name) is None:
        raise fail(f"no view named {op.view.name!r}", "Use add_view to create it.")
    return spec.model_copy(
        update={"views": tuple(op.view if v.name == op.view.name else v for v in spec.views)}
    )


def _drop_view(spec: AppSpec, op: DropView) -> AppSpec:
    if spec.view(op.name) is None:
        raise fail(f"no view named {op.name!r}")
    return spec.model_copy(update={"views": tuple(v for v in spec.views if v.name != op.name)})


def _add_action(spec: AppSpec, op: AddAction) -> AppSpec:
    if spec.action(op.action.name) is not None:
        raise fail(f"action {op.action.name!r} already exists", "Use replace_action to change it.")
    return spec.model_copy(update={"actions": (*spec.actions, op.action)})


def _replace_action(spec: AppSpec, op: ReplaceAction) -> AppSpec:
    if spec.action(op.action.name) is None:
        raise fail(f"no action named {op.action.name!r}", "Use add_action to create it.")
    return spec.model_copy(
        update={"actions": tuple(op.action if a.name == op.action.name else a for a in spec.actions)}
    )


def _drop_action(spec: AppSpec, op: DropAction) -> AppSpec:
    if spec.action(op.name) is None:
        raise fail(f"no action named {op.name!r}")
    return spec.model_copy(update={"actions": tuple(a for a in spec.actions if a.name != op.name)})


def _add_topic(spec: AppSpec, op: AddTopic) -> AppSpec:
    if spec.topic(op.topic.name) is not None:
        raise fail(f"topic {op.topic.name!r} already exists", "Use replace_topic to change it.")
    return spec.model_copy(update={"topics": (*spec.topics, op.topic)})


def _replace_topic(spec: AppSpec, op: ReplaceTopic) -> AppSpec:
    if spec.topic(op.topic.name) is None:
        raise fail(f"no topic named {op.topic.name!r}", "Use add_topic to create it.")
    return spec.model_copy(
        update={"topics": tuple(op.topic if t.name == op.topic.name else t for t in spec.topics)}
    )


def _drop_topic(spec: AppSpec, op: DropTopic) -> AppSpec:
    if spec.topic(op.name) is None:
        raise fail(
            f"no topic named {op.name!r}", f"Topics: {', '.join(t.name for t in spec.topics) or 'none'}."
        )
    return spec.model_copy(update={"topics": tuple(t for t in spec.topics if t.name != op.name)})


def _add_workflow(spec: AppSpec, op: AddWorkflow) -> AppSpec:
    if spec.workflow(op.workflow.name) is not None:
        raise fail(f"workflow {op.workflow.name!r} already exists", "Use replace_workflow to change it.")
    return spec.model_copy(update={"workflows": (*spec.workflows, op.workflow)})


def _replace_workflow(spec: AppSpec, op: ReplaceWorkflow) -> AppSpec:
    if spec.workflow(op.workflow.name) is None:
        raise fail(f"no workflow named {op.workflow.name!r}", "Use add_workflow to create it.")
    return spec.model_copy(
        update={"workflows": tuple(op.workflow if w.name == op.workflow.name else w for w in spec.workflows)}
    )


def _drop_workflow(spec: AppSpec, op: DropWorkflow) -> AppSpec:
    if spec.workflow(op.name) is None:
        raise fail(
            f"no workflow named {op.name!r}",
            f"Workflows: {', '.join(w.name for w in spec.workflows) or 'none'}.",
        )
    return spec.model_copy(update={"workflows": tuple(w for w in spec.workflows if w.name != op.name)})


def _add_subscription(spec: AppSpec, op: AddSubscription) -> AppSpec:
    if spec.subscription(op.subscription.name) is not None:
        raise fail(
            f"subscription {op.subscription.name!r} already exists", "Use replace_subscription to change it."
        )
    return spec.model_copy(update={"subscriptions": (*spec.subscriptions, op.subscription)})


def _replace_subscription(spec: AppSpec, op: ReplaceSubscription) -> AppSpec:
    if spec.subscription(op.subscription.name) is None:
        raise fail(f"no subscription named {op.subscription.name!r}", "Use add_subscription to create it.")
    name = op.subscription.name
    return spec.model_copy(
        update={"subscriptions": tuple(op.subscription if x.name == name else x for x in spec.subscriptions)}
    )


def _drop_subscription(spec: AppSpec, op: DropSubscription) -> AppSpec:
    if spec.subscription(op.name) is None:
        raise fail(f"no subscription named {op.name!r}")
    return spec.model_copy(
        update={"subscriptions": tuple(x for x in spec.subscriptions if x.name != op.name)}
    )


def _set_checked_by(spec: AppSpec, op: SetCheckedBy) -> AppSpec:
    if spec.checked_by == op.by:
        raise fail(f"references and checks are already checked by {op.by}", "Nothing to change.")
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
