"""The tool registry: every tool documented for the model that reads it, output models that match the
runtime's results field for field, and tool modules that load without the database engine."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from runtime.schema.changes import Operation
from tools.registry import REGISTRY

PROJECTIONS = {"AppOverview", "VersionHistory", "AuditPage", "DryRunOutput", "RunList", "MessageList"}
"""Tool models that only shape several runtime results into one answer; every other tool returns a
model of ``runtime.results`` (or the spec diff) as it is: one definition, never a mirrored copy."""

ISSUE_OPERATIONS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "slot",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "starts_at", "type": "timestamp"},
                {"name": "capacity", "type": "integer", "check": "capacity > 0"},
                {"name": "note", "type": "text", "nullable": True},
            ],
        },
    },
    {"op": "add_field", "entity": "slot", "field": {"name": "room", "type": "text", "default": "main"}},
    {"op": "drop_field", "entity": "slot", "field": "note"},
    {"op": "rename_field", "entity": "slot", "field": "room", "new_name": "location"},
    {
        "op": "add_invariant",
        "invariant": {
            "name": "capacity_is_sane",
            "description": "no slot above 500 seats",
            "sql": "select id from slot where capacity > 500",
        },
    },
    {
        "op": "add_field",
        "entity": "slot",
        "field": {"name": "created", "type": "timestamp", "default": {"expr": "now()"}},
    },
]


def test_tool_names_are_unique() -> None:
    names = [spec.name for spec in REGISTRY]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda spec: spec.name)
def test_every_tool_is_documented_for_the_model(spec: typing.Any) -> None:
    description = spec.description
    assert len(description) > 200, "say what it does, when to use it and what comes back"
    assert spec.title and spec.annotations.title == spec.title
    hints = spec.annotations
    assert None not in (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint)
    assert hints.open_world_hint is False
    if not hints.read_only_hint or "Errors:" in description:
        assert "Errors:" in description, "a tool that can be refused documents its error codes"


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda spec: spec.name)
def test_every_argument_has_a_description(spec: typing.Any) -> None:
    hints = typing.get_type_hints(spec.fn, include_extras=True)
    for name in inspect.signature(spec.fn).parameters:
        if name == "ctx":
            continue
        metadata = getattr(hints[name], "__metadata__", ())
        assert any(getattr(m, "description", None) for m in metadata), f"{spec.name}.{name}"


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda spec: spec.name)
def test_every_tool_returns_an_output_model(spec: typing.Any) -> None:
    returned = typing.get_type_hints(spec.fn)["return"]
    assert issubclass(returned, BaseModel)


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda spec: spec.name)
def test_every_tool_returns_a_runtime_result_or_a_declared_projection(spec: typing.Any) -> None:
    returned = typing.get_type_hints(spec.fn)["return"]
    if returned.__name__ in PROJECTIONS:
        assert returned.__module__.startswith("tools.")
    else:
        assert returned.__module__.startswith("runtime."), (spec.name, returned.__module__)


def test_the_documented_operation_shapes_validate() -> None:
    operations = TypeAdapter(list[Operation]).validate_python(ISSUE_OPERATIONS)
    assert [op.op for op in operations] == [op["op"] for op in ISSUE_OPERATIONS]


def test_tool_modules_reach_the_runtime_only_through_its_surface() -> None:
    """Tools are projections: they import the runtime's surface (``runtime.api``), its models, its
    schema and policy vocabulary, never its engine, planner, logic or workflow machinery (the run states are vocabulary)."""
    root = Path(__file__).resolve().parents[2] / "tools"
    below = (
        "runtime.store",
        "runtime.migrate",
        "runtime.logic",
        "runtime.workflows",
        "runtime.runtime",
        "duckdb",
    )
    reached = {
        (path.name, name)
        for path in sorted(root.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        if name.startswith(below) and name != "runtime.workflows.status"  # the run states: vocabulary
    }
    assert reached == set()
