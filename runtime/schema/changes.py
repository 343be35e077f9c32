"""Typed change operations and ``apply(spec, ops) -> spec`` (pure): the one entry point.

Each operation is a small frozen model discriminated by ``op``. ``apply`` validates every
operation against the spec it applies to and the final spec as a whole (names, references,
types, defaults, SQL parsed with sqlglot) and raises a precise ``SpecError`` or ``SqlError``
whose ``details.path`` points at the offending operation, before any SQL exists.

This module only re-exports, so that callers import every name from here:

* ``runtime.schema.operations``: the operation models, the ``Operation`` union, ``OPERATION_NAMES``,
  ``parse_operations`` and ``operations_json``;
* ``runtime.schema.apply``: ``apply``, ``apply_one``, ``explicit_operations`` and
  ``rename_column_in_expression``;
* ``runtime.schema.validate``: ``validate``, ``check_action`` and ``check_constant``.

>>> from runtime.schema.spec import AppSpec
>>> op = parse_operations([{"op": "add_entity", "entity": {"name": "slot", "primary_key": ["id"],
...     "fields": [{"name": "id", "type": "integer"}]}}])
>>> apply(AppSpec(), op).entity("slot").field_names
('id',)
"""

from __future__ import annotations

from runtime.schema.apply import apply, apply_one, explicit_operations, rename_column_in_expression
from runtime.schema.operations import (
    OPERATION_NAMES,
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
    operations_json,
    parse_operations,
)
from runtime.schema.validate import check_action, check_constant, validate

__all__ = [
    "OPERATION_NAMES",
    "AddAction",
    "AddEntity",
    "AddField",
    "AddIndex",
    "AddInvariant",
    "AddSubscription",
    "AddTopic",
    "AddUnique",
    "AddView",
    "AddWorkflow",
    "AlterField",
    "DropAction",
    "DropEntity",
    "DropField",
    "DropIndex",
    "DropInvariant",
    "DropSubscription",
    "DropTopic",
    "DropUnique",
    "DropView",
    "DropWorkflow",
    "Operation",
    "RenameEntity",
    "RenameField",
    "ReplaceAction",
    "ReplaceSubscription",
    "ReplaceTopic",
    "ReplaceView",
    "ReplaceWorkflow",
    "SetCheckedBy",
    "apply",
    "apply_one",
    "check_action",
    "check_constant",
    "explicit_operations",
    "operations_json",
    "parse_operations",
    "rename_column_in_expression",
    "validate",
]
