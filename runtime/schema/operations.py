"""The typed change operations (pure): one small frozen model per ``op``, the ``Operation`` union that
discriminates them, and their JSON form.

``parse_operations`` turns raw JSON (a proposal) into typed operations, or raises one ``spec.invalid``
listing every problem with its path; ``operations_json`` is the form stored with a version. The
JSON schema of ``Operation`` is the input schema of the ``propose_change`` tool: each model's
docstring and field descriptions are written for the agent that reads it. What an operation does
to a spec is ``runtime.schema.apply``; the entry point is ``runtime.schema.changes``.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from runtime.errors import Code, SpecError
from runtime.schema.spec import (
    ActionSpec,
    CheckedBy,
    DefaultValue,
    EntitySpec,
    FieldSpec,
    IndexSpec,
    InvariantSpec,
    JsonScalar,
    LogicalType,
    Name,
    OnDelete,
    StepKind,
    SubscriptionSpec,
    TopicSpec,
    ViewSpec,
    WorkflowSpec,
)


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
        loc, message = _step_kind(e["type"], e["loc"], str(e["msg"]), e.get("ctx", {}))
        path = "operations" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        found.append({"path": path, "problem": message.removeprefix("Value error, ")})
    paths = [p["path"] for p in found]
    return [
        p
        for p in found
        if not any(
            (other != p["path"] and other.startswith(p["path"] + ".")) or other.startswith(p["path"] + "[")
            for other in paths
        )
    ]


def _step_kind(
    kind: str, loc: tuple[int | str, ...], message: str, context: dict[str, Any]
) -> tuple[tuple[int | str, ...], str]:
    """A workflow step's problem told as when every kind of step was one model: without the kind that
    chose its model in the path, and a missing or unknown ``kind`` as a problem of that key."""
    at = next((i for i in range(len(loc) - 1) if loc[i] == "steps" and isinstance(loc[i + 1], int)), None)
    if at is None:
        return loc, message
    step = loc[: at + 2]
    if len(loc) == at + 2 and context.get("discriminator") == "'kind'":
        if kind == "union_tag_not_found":
            return (*step, "kind"), "Field required"
        if kind == "union_tag_invalid":
            kinds = [repr(k) for k in typing.get_args(StepKind)]
            return (*step, "kind"), f"Input should be {', '.join(kinds[:-1])} or {kinds[-1]}"
    if len(loc) > at + 2 and loc[at + 2] in typing.get_args(StepKind):
        return (*step, *loc[at + 3 :]), message
    return loc, message


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
