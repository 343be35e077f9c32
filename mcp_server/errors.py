"""Tool failures as MCP tool error results, in one shape for every tool.

Every failure a tool call can meet becomes ``CallToolResult(is_error=True)`` whose text is
``<code>: <message> — <hint>`` and whose ``structuredContent`` is
``{"error": {"code", "message", "hint", "details"}}``:

    ButtressError (the runtime's)          its own code, message, hint and details
    invalid arguments (pydantic)           spec.invalid (action.invalid_args for app_ tools),
                                           details.problems = [{path, problem}]
    unknown tool name                      not_found, naming the closest tools
    anything else                          internal; the exception text stays in the server log

Protocol errors (JSON-RPC) are left to the SDK: they mean a malformed request, not a failed call.

Clients that validate ``structuredContent`` against a tool's ``outputSchema`` do so for error
results too, so every listed ``outputSchema`` admits the error shape as an alternative
(``with_error_alternative``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field, ValidationError

from runtime.errors import ButtressError, Code, SpecError

logger = logging.getLogger(__name__)

INTERNAL = str(Code.INTERNAL)


class ErrorBody(BaseModel):
    """What went wrong, and what to do about it."""

    code: str = Field(description="Stable error code, e.g. plan.stale_base; branch on it.")
    message: str
    hint: str = Field(description="What to do next.")
    details: dict[str, Any] = Field(description="Rows, paths, hazards or versions the error concerns.")


class ToolFailure(BaseModel):
    """The structured content of every tool error result (isError: true)."""

    error: ErrorBody


def with_error_alternative(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's output schema that also admits ``{"error": {...}}``, the shape of its error results."""
    failure = ToolFailure.model_json_schema()
    defs = {**schema.get("$defs", {}), **failure.pop("$defs", {}), "ToolFailure": failure}
    success = {key: value for key, value in schema.items() if key != "$defs"}
    return {
        "type": "object",
        "description": "The tool's result; when isError is true, {error: {code, message, hint, details}}.",
        "anyOf": [success, {"$ref": "#/$defs/ToolFailure"}],
        "$defs": defs,
    }


def error_payload(
    code: str, message: str, hint: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The structured error every tool returns: ``{"error": {code, message, hint, details}}``."""
    return {"error": {"code": code, "message": message, "hint": hint, "details": details or {}}}


def error_result(payload: dict[str, Any]) -> CallToolResult:
    """A tool error result carrying ``payload`` as structured content and as one line of text."""
    error = payload["error"]
    text = f"{error['code']}: {error['message']} — {error['hint']}"
    if error["details"]:
        text += "\ndetails: " + json.dumps(error["details"], default=str)[:4000]
    return CallToolResult(
        is_error=True, content=[TextContent(type="text", text=text)], structured_content=payload
    )


def buttress_error_result(error: ButtressError) -> CallToolResult:
    """A runtime error as a tool error result, with the runtime's code, message, hint and details."""
    return error_result({"error": error.to_dict()})


def invalid_arguments(tool: str, error: ValidationError) -> SpecError:
    """Arguments that do not fit a tool's input schema, as ``spec.invalid`` naming every problem."""
    problems = [
        {"path": _path(e["loc"]), "problem": e["msg"].removeprefix("Value error, ")}
        for e in error.errors(include_url=False, include_input=False)
    ]
    first = problems[0] if problems else {"path": "", "problem": "invalid arguments"}
    return SpecError(
        Code.SPEC_INVALID,
        f"invalid arguments for {tool} at {first['path'] or 'the top level'}: {first['problem']}",
        hint=f"Fix the arguments named in details.problems; the inputSchema of {tool} documents every field.",
        details={"problems": problems[:20]},
    )


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def failure_of(tool: str, error: ToolError) -> ButtressError:
    """What ``MCPServer.call_tool`` raised, as the runtime error it stands for; crashes are logged
    with their traceback and reported as ``internal`` without the exception's text."""
    cause = error.__cause__
    if isinstance(cause, ButtressError):
        logger.info("tool %s refused: %s", tool, cause.code)
        return cause
    if isinstance(cause, ValidationError) and not isinstance(error, UnexpectedToolError):
        return invalid_arguments(tool, cause)
    logger.error("tool %s crashed", tool, exc_info=cause or error)
    return ButtressError(
        Code.INTERNAL,
        f"{tool} failed unexpectedly; nothing was reported about the cause",
        hint="Retry once; if it fails again, tell the operator (the server log has the details).",
    )
