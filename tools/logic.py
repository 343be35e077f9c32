"""The logic tools: run the application's deployed actions.

``run_action`` runs any action by name; every deployed action is also its own tool ``app_<name>``
whose input schema is derived from the action's typed parameters and whose annotations follow its
kind. Both project ``Runtime.run_action``: arguments validated against the spec, mutations
serialized on the writer lane with the affected invariants checked before commit, idempotency
keys stored with the effect.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from runtime.results import ActionResult
from tools.base import ToolContext, ToolSpec, call_runtime, changing, reading

if TYPE_CHECKING:
    from runtime.schema.spec import ActionSpec

ACTION_TOOL_PREFIX = "app_"
IdempotencyKey = Annotated[
    str | None,
    Field(
        default=None,
        max_length=200,
        description="Send the same key when retrying the same call: the first result is returned, "
        "nothing runs twice. A key reused with different arguments is refused.",
    ),
]


async def run_action(
    ctx: ToolContext,
    name: Annotated[
        str, Field(min_length=1, max_length=63, description="The action's name (describe_app lists them).")
    ],
    args: Annotated[dict[str, Any] | None, Field(description="The action's parameters by name.")] = None,
    idempotency_key: IdempotencyKey = None,
) -> ActionResult:
    """Run a deployed action of the application by name.

    Use it to read or change application data the way the application defines (describe_app lists
    each action with its parameters, kind, and the tables it reads and writes); each action is also
    available as its own tool `app_<name>`. A mutation runs alone, in one transaction with the checks
    of every invariant it can affect: it commits completely or not at all. Pass an idempotency_key
    when a retry must not act twice (payments, orders).

    Returns the columns and rows of the last statement that produces rows, rows_affected, and
    `replayed` when the key returned an earlier result.

    Errors: invariant.violated (a business rule refused the change; details name the invariant and
    sample rows; nothing changed — do not retry unchanged), action.invalid_args (fix the arguments per
    details.problems), action.constraint_violated (a key, NOT NULL, CHECK or foreign key refused the
    write), action.idempotency_conflict (the key was used with other arguments: use a new key),
    not_found (no such action: call describe_app), limit.timeout, policy.denied.
    """
    return await call_runtime(
        ctx,
        lambda runtime, actor: runtime.run_action(
            name, args or {}, idempotency_key=idempotency_key, actor=actor
        ),
    )


def action_tool(action: ActionSpec) -> ToolSpec:
    """The ``app_<name>`` tool of one action: its parameters become the tool's typed arguments."""
    from runtime.schema.types import python_type

    async def run(ctx: ToolContext, **arguments: Any) -> ActionResult:
        key = arguments.pop("idempotency_key", None)
        return await call_runtime(
            ctx,
            lambda runtime, actor: runtime.run_action(
                action.name, arguments, idempotency_key=key, actor=actor
            ),
        )

    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=ToolContext)]
    annotations: dict[str, Any] = {"ctx": ToolContext, "return": ActionResult}
    for param in action.params:
        base: Any = python_type(param.type)
        if base is object:
            base = Any
        description = param.description or f"{param.type}{' or null' if param.nullable else ''}"
        if param.nullable:
            annotation: Any = Annotated[base | None, Field(description=description)]
            default: Any = None
        else:
            annotation, default = Annotated[base, Field(description=description)], inspect.Parameter.empty
        parameters.append(
            inspect.Parameter(
                param.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
            )
        )
        annotations[param.name] = annotation
    if action.kind == "mutation":
        parameters.append(
            inspect.Parameter(
                "idempotency_key", inspect.Parameter.KEYWORD_ONLY, annotation=IdempotencyKey, default=None
            )
        )
        annotations["idempotency_key"] = IdempotencyKey
    run.__signature__ = inspect.Signature(parameters, return_annotation=ActionResult)  # type: ignore[attr-defined]
    run.__annotations__ = annotations
    run.__name__ = ACTION_TOOL_PREFIX + action.name
    run.__doc__ = (
        f"{action.description or 'Application action ' + action.name}\n\n"
        f"A {action.kind} action of the application (same as run_action name={action.name!r}). "
        + (
            "It runs alone in one transaction with the invariants it can affect checked before commit; "
            "pass idempotency_key to make retries safe. "
            if action.kind == "mutation"
            else "It only reads. "
        )
        + "Errors: invariant.violated, action.invalid_args, action.constraint_violated, "
        "action.idempotency_conflict, limit.timeout."
    )
    title = f"Action {action.name}"
    if action.kind == "query":
        return reading(run, title, untrusted=True)
    return changing(run, title, destructive=True, idempotent=False, untrusted=True)


TOOLS: tuple[ToolSpec, ...] = (
    changing(run_action, "Run an action", destructive=True, idempotent=False, untrusted=True),
)
