"""One error tree with stable codes.

    ButtressError                 root; carries code, message, hint, details
    ├── SpecError                 spec.* — the spec or an operation is invalid
    ├── SqlError                  sql.* — agent SQL refused or unparsable
    ├── PlanError                 plan.* — a plan cannot be made or is stale
    ├── DeployError               deploy.*, dryrun.*, catalog.* — a deploy is refused or failed
    ├── RollbackError             rollback.* — a rollback is refused
    ├── ActionError               action.*, invariant.*, message.* — running application logic failed
    ├── WorkflowError             workflow.*, effect.*, connector.* — a run, a step or an effect failed
    ├── PolicyError               policy.*, approval.*, limit.* — the operator's policy refuses
    ├── ConfigError               config.* — the operator's configuration file is invalid
    ├── NotFound                  not_found — no such proposal, version, action...
    └── EngineError               engine.* — the database refused (translated DuckDB errors)

Every error crosses the MCP boundary as ``{"error": {"code", "message", "hint", "details"}}``.
``duckdb.Error`` is translated in exactly one place: ``runtime.store.sessions.translate``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Stable error codes. Agents branch on these; never rename one."""

    SPEC_INVALID = "spec.invalid"
    SQL_PARSE = "sql.parse"
    SQL_FORBIDDEN = "sql.forbidden"
    SQL_UNKNOWN_TABLE = "sql.unknown_table"
    SQL_UNKNOWN_COLUMN = "sql.unknown_column"
    SQL_PARAM = "sql.param"
    SQL_MISMATCH = "sql.mismatch"
    PLAN_STALE_BASE = "plan.stale_base"
    PLAN_EMPTY = "plan.empty"
    DEPLOY_NOT_DRY_RUN = "deploy.not_dry_run"
    DEPLOY_DRY_RUN_FAILED = "deploy.dry_run_failed"
    DEPLOY_ALREADY_APPLIED = "deploy.already_applied"
    DEPLOY_FAILED = "deploy.failed"
    DEPLOY_NEEDS_APPROVAL = "deploy.needs_approval"
    CATALOG_DRIFT = "catalog.drift"
    ROLLBACK_NOTHING = "rollback.nothing_to_roll_back"
    ROLLBACK_NOT_LOSSLESS = "rollback.not_lossless"
    ROLLBACK_NOT_ANCESTOR = "rollback.not_ancestor"
    ROLLBACK_FINALIZED = "rollback.finalized"
    ACTION_INVALID_ARGS = "action.invalid_args"
    ACTION_IDEMPOTENCY_CONFLICT = "action.idempotency_conflict"
    ACTION_FAILED = "action.failed"
    ACTION_CONSTRAINT = "action.constraint_violated"
    INVARIANT_VIOLATED = "invariant.violated"
    INVARIANT_TOO_SLOW = "invariant.too_slow"
    POLICY_DENIED = "policy.denied"
    POLICY_PROTECTED = "policy.protected"
    APPROVAL_INVALID = "approval.invalid"
    APPROVAL_STALE = "approval.stale"
    LIMIT_EXCEEDED = "limit.exceeded"
    QUERY_TIMEOUT = "limit.timeout"
    LIMIT_MEMORY = "limit.memory"
    LIMIT_RESULT_BYTES = "limit.result_bytes"
    NOT_FOUND = "not_found"
    ENGINE_CONFLICT = "engine.conflict"
    ENGINE_CONSTRAINT = "engine.constraint"
    ENGINE_ERROR = "engine.error"
    ENGINE_LOCKED = "engine.locked"
    ENGINE_BUSY = "engine.busy"
    AUDIT_BROKEN = "audit.broken"
    CONFIG_INVALID = "config.invalid"
    ENGINE_OWNER_GONE = "engine.owner_gone"
    ENGINE_NEWER_SCHEMA = "engine.newer_schema"
    INTERNAL = "internal"
    RUN_CONFLICT = "workflow.run_conflict"
    RUN_NOT_ACTIVE = "workflow.not_active"
    RUN_HISTORY_MISMATCH = "workflow.history_mismatch"
    WORKFLOW_TIMEOUT = "workflow.timeout"
    WORKFLOW_BLOCKED = "workflow.blocked"
    WORKFLOW_STRANDED = "workflow.stranded"
    LIMIT_CHAIN = "limit.chain_depth"
    LIMIT_RATE = "limit.rate"
    EFFECT_REJECTED = "effect.rejected"
    EFFECT_UNAVAILABLE = "effect.unavailable"
    EFFECT_UNKNOWN = "effect.unknown"
    EFFECT_KEY_REUSED = "effect.key_reused"
    CONNECTOR_UNKNOWN = "connector.unknown"
    MESSAGE_INVALID = "message.invalid_payload"
    MESSAGE_NOT_LEASED = "message.not_leased"
    MESSAGE_NOT_EXTERNAL = "message.not_external"


class ButtressError(Exception):
    """Root of every error the runtime raises on purpose."""

    default_hint = "Read the message and details, fix the input, and try again."

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint or self.default_hint
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The error as the structured payload every tool returns."""
        return {"code": str(self.code), "message": self.message, "hint": self.hint, "details": self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!s}: {self.message})"


class SpecError(ButtressError):
    default_hint = (
        "Fix the operation named in details.path and propose again; describe_app shows the current spec."
    )


class SqlError(ButtressError):
    default_hint = (
        "Use one read-only SELECT over application tables; system schemas, files and settings are off limits."
    )


class PlanError(ButtressError):
    default_hint = "Call describe_app for the current version, then propose again on it."


class DeployError(ButtressError):
    default_hint = "Read the dry-run report, fix the proposal, propose again and dry-run it."


class RollbackError(ButtressError):
    default_hint = (
        "Inspect the rows named in details; fix or remove them with an action, then roll back again."
    )


class ActionError(ButtressError):
    default_hint = "Check the action's parameters with describe_app and call it again."


class WorkflowError(ButtressError):
    default_hint = "get_run shows the run's steps, their errors and attempts; fix the cause and retry it."


class PolicyError(ButtressError):
    default_hint = "This is decided by the operator's policy; ask the operator rather than retrying."


class ConfigError(ButtressError):
    default_hint = "Fix buttress.toml (the message names the key) and run the command again."


class NotFound(ButtressError):
    default_hint = "List what exists (describe_app, list_versions) and use one of those names."

    def __init__(self, what: str, name: object, *, hint: str | None = None) -> None:
        super().__init__(
            Code.NOT_FOUND,
            f"no {what} named {name!r}",
            hint=hint,
            details={"kind": what, "name": str(name)},
        )


class EngineError(ButtressError):
    default_hint = "The database refused the statement; read details.reason. Nothing was committed."


_FAMILIES: dict[str, type[ButtressError]] = {
    "spec": SpecError,
    "sql": SqlError,
    "plan": PlanError,
    "deploy": DeployError,
    "dryrun": DeployError,
    "catalog": DeployError,
    "rollback": RollbackError,
    "action": ActionError,
    "invariant": ActionError,
    "policy": PolicyError,
    "approval": PolicyError,
    "limit": PolicyError,
    "config": ConfigError,
    "engine": EngineError,
    "workflow": WorkflowError,
    "effect": WorkflowError,
    "connector": WorkflowError,
    "message": ActionError,
    "not_found": NotFound,
}


def from_dict(payload: dict[str, Any]) -> ButtressError:
    """An error read back from its structured form (``to_dict``), as the class its code belongs to.

    >>> from_dict({"code": "plan.stale_base", "message": "m", "hint": "h", "details": {}}).__class__.__name__
    'PlanError'
    """
    raw = str(payload.get("code", "internal"))
    try:
        code = Code(raw)
    except ValueError:
        code = Code.INTERNAL
    family = _FAMILIES.get(raw.split(".", 1)[0], ButtressError)
    error = ButtressError.__new__(family)
    ButtressError.__init__(
        error,
        code,
        str(payload.get("message", "")),
        hint=payload.get("hint") or None,
        details=dict(payload.get("details") or {}),
    )
    return error
