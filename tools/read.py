"""The read tools: look at the application, its history, its data and its audit log. None of them
changes anything.

Each tool projects one ``Runtime`` method and returns its result model (``runtime.results``, free of
database imports, so the server lists its tools without loading the engine); the few models below
only shape several results into one answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from runtime.boundary.policy import PolicyOrigin
from runtime.results import (
    ActionSummary,
    AppDescription,
    AuditEntry,
    ConnectorSummary,
    InvariantCheck,
    PendingProposal,
    QueryResult,
    SqlCheckResult,
    VersionInfo,
    WorkflowSummary,
)
from runtime.schema.diff import SpecDiff
from runtime.schema.spec import (
    EntitySpec,
    InvariantSpec,
    SubscriptionSpec,
    TopicSpec,
    ViewSpec,
    WorkflowSpec,
)
from tools.base import ToolContext, ToolSpec, call_runtime, reading

JsonScalar = str | int | float | bool | None


# ------------------------------------------------------------------------------------ output models


class AppOverview(BaseModel):
    """The whole application at its current version."""

    version: int = Field(description="The current version number; 0 is the empty application.")
    hash: str = Field(description="Hash of the current spec's canonical JSON.")
    entities: list[EntitySpec] = Field(
        description="One table each: fields, primary key, unique sets, indexes."
    )
    invariants: list[InvariantSpec] = Field(
        description="Queries selecting violating rows; they must return none."
    )
    invariant_checks: list[InvariantCheck] = Field(
        default=[],
        description="For each invariant: checked incrementally (on the keys a mutation touched) or in full, "
        "and why.",
    )
    views: list[ViewSpec]
    actions: list[ActionSummary]
    pending_proposals: list[PendingProposal]
    drift: list[str] = Field(
        description="Differences between the database and the spec; non-empty blocks deploys."
    )
    audit_problem: str | None = Field(
        default=None,
        description="Set when the audit log disagrees with its anchor (rows deleted or rewritten): tell the "
        "operator.",
    )
    topics: list[TopicSpec] = Field(default=[], description="Typed message streams: payload, key, external.")
    workflows: list[WorkflowSpec] = Field(
        default=[],
        description="Durable workflows: params and steps (kinds, arguments, retries, compensations).",
    )
    subscriptions: list[SubscriptionSpec] = Field(
        default=[], description="Topics feeding a workflow or an action, with their arguments."
    )
    connectors: list[ConnectorSummary] = Field(
        default=[], description="The connectors the operator configured: the names effect steps may use."
    )
    work: WorkflowSummary | None = Field(
        default=None,
        description="Work in flight: runs by status, effects whose outcome is unknown, undelivered messages.",
    )
    detail: str = Field(
        default="full", description="'full', or 'names' (every part named, with its shape left out)."
    )
    policy: PolicyOrigin | None = Field(
        default=None,
        description="The operator's policy in force: buttress.toml's sha256 and when it was read (the server "
        "re-reads it when it changes), and restart_needed: settings changed in the file that wait for a restart.",
    )
    policy_problem: str | None = Field(
        default=None,
        description="Set when buttress.toml was changed but refused (the policy read before stays in force): "
        "tell the operator.",
    )

    @classmethod
    def of(cls, description: AppDescription, detail: str = "full") -> AppOverview:
        """The overview of the runtime's description: everything, or (``names``) a compact map."""
        spec = description.spec
        full = cls(
            version=description.version,
            hash=description.hash,
            entities=list(spec.entities),
            invariants=list(spec.invariants),
            invariant_checks=description.invariant_checks,
            views=list(spec.views),
            actions=description.actions,
            pending_proposals=description.pending_proposals,
            drift=list(description.drift),
            audit_problem=description.audit_problem,
            topics=list(spec.topics),
            workflows=list(spec.workflows),
            subscriptions=list(spec.subscriptions),
            connectors=description.connectors,
            work=description.work,
            policy=description.policy,
            policy_problem=description.policy_problem,
            detail=detail,
        )
        if detail != "names":
            return full
        return full.model_copy(
            update={
                "invariants": [i.model_copy(update={"sql": "…"}) for i in spec.invariants],
                "views": [v.model_copy(update={"sql": "…"}) for v in spec.views],
                "actions": [
                    a.model_copy(update={"fields_read": [], "fields_written": [], "description": ""})
                    for a in description.actions
                ],
                "workflows": [
                    w.model_copy(update={"steps": tuple(s.model_copy(update={"args": {}}) for s in w.steps)})
                    for w in spec.workflows
                ],
            }
        )


class VersionHistory(BaseModel):
    """Every version, and which one is current."""

    current: int = Field(description="The current version number.")
    versions: list[VersionInfo] = Field(description="Every version, oldest first.")


class AuditPage(BaseModel):
    """Audit entries, oldest first."""

    entries: list[AuditEntry] = Field(description="Oldest first.")
    last_seq: int | None = Field(
        description="The highest seq returned; pass it as after_seq to read only what happens next."
    )


# ------------------------------------------------------------------------------------------- tools


async def describe_app(
    ctx: ToolContext,
    detail: Annotated[
        Literal["full", "names"],
        Field(
            description="'full' (default): every part with its SQL, steps and fields; 'names': a compact map "
            "for a small context window (SQL, step arguments and field lists left out)."
        ),
    ] = "full",
) -> AppOverview:
    """Describe the application as it is now — the complete map: version, entities (tables) with their
    fields, invariants (and how each is checked), views, actions (parameters, the fields they read and
    write, their emits), topics (payloads), workflows (steps, retries, compensations), subscriptions,
    the connectors the operator configured, the work in flight (runs by status, unknown effects,
    undelivered messages), proposals waiting to be deployed, and drift.

    Call this first, and again before proposing a change: `propose_change` is checked against the
    current version, and `version` here is the `base_version` to pass.

    Errors: engine.locked (another process holds the database: tell the operator).
    """
    description = await call_runtime(ctx, lambda runtime, actor: runtime.describe(actor=actor))
    return AppOverview.of(description, detail)


async def list_versions(ctx: ToolContext) -> VersionHistory:
    """List every deployed version, oldest first, with who deployed it, when, and from which proposal.

    Use it to pick a version for `diff_versions` or `rollback(to_version=...)`. Rollbacks are
    versions too (`kind` 'rollback', `restores` names the version whose spec they restore), so
    version numbers only grow.
    """
    versions = await call_runtime(ctx, lambda runtime, actor: runtime.versions(actor=actor))
    return VersionHistory(current=max((v.number for v in versions), default=0), versions=versions)


async def diff_versions(
    from_version: Annotated[int, Field(ge=0, description="The older version number (see list_versions).")],
    to_version: Annotated[int, Field(ge=0, description="The newer version number.")],
    ctx: ToolContext,
) -> SpecDiff:
    """Compare the specs of two versions: entities, fields (attribute by attribute), invariants, views
    and actions that were added, removed or changed.

    Use it to review what a deploy changed, or what a rollback would restore.

    Errors: not_found (no such version: call list_versions).
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.diff_versions(from_version, to_version, actor=actor)
    )


async def query(
    sql: Annotated[
        str,
        Field(
            min_length=1,
            description="One read-only SELECT (or WITH ... SELECT) over entities "
            "and views. Use $name placeholders for values.",
        ),
    ],
    ctx: ToolContext,
    params: Annotated[
        dict[str, JsonScalar] | None,
        Field(description="Values for the $name placeholders, exactly the names the statement uses."),
    ] = None,
    limit: Annotated[
        int | None,
        Field(
            ge=1,
            description="Maximum rows to return (default and ceiling: the "
            "operator's max_rows, 1000 unless configured).",
        ),
    ] = None,
) -> QueryResult:
    """Run one read-only SQL query against the application's data, on a consistent snapshot.

    Use it to look at data and to verify a deploy or rollback. Only SELECT over the application's
    entities and views is allowed; system tables, files, settings and writes are refused. Pass
    values as `params` ({"name": value} for `$name` in the SQL), never by pasting them into the SQL.

    Returns `columns`, `rows` (lists in column order), `row_count` and `truncated` (true when
    more rows matched than `limit`).

    Errors: sql.parse (not valid SQL: fix the syntax), sql.forbidden (not a single read-only
    SELECT, or it names system objects or files: rewrite it as a SELECT over entities/views),
    sql.unknown_table / sql.unknown_column (call describe_app for the names), sql.param (params do
    not match the $names), limit.exceeded (lower `limit`), limit.timeout (narrow the query),
    engine.error (the database refused it: read details.reason).
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.query(sql, params, limit=limit, actor=actor)
    )


async def check_sql(
    sql: Annotated[str, Field(min_length=1, description="The statement to analyse; it is not executed.")],
    ctx: ToolContext,
    proposal_id: Annotated[
        str | None,
        Field(description="Check against this proposal's target spec instead of the current version."),
    ] = None,
) -> SqlCheckResult:
    """Analyse a SQL statement without running it: is it allowed, which entities does it read and
    write, which $params does it expect, which columns does it return.

    Use it to check a view, invariant or action statement before putting it in a proposal; pass
    `proposal_id` to check it against the spec that proposal would deploy (e.g. after a rename).

    Returns `ok`; when false, `error` holds {code, message, hint, details} (sql.parse,
    sql.forbidden, sql.unknown_table, sql.unknown_column) saying what to fix.

    Errors: not_found (no such proposal: propose_change returns proposal ids).
    """
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.check_sql(sql, proposal_id=proposal_id, actor=actor)
    )


async def read_audit(
    ctx: ToolContext,
    limit: Annotated[int, Field(ge=1, le=1000, description="How many of the most recent entries.")] = 50,
    after_seq: Annotated[int, Field(ge=0, description="Only entries newer than this sequence number.")] = 0,
    operation: Annotated[
        str | None, Field(description="Only this operation, e.g. 'deploy', 'query', 'propose'.")
    ] = None,
) -> AuditPage:
    """Read the audit log: every tool call (allowed, refused or failed) with actor, arguments, outcome,
    error code and the versions before and after.

    Use it to see what happened (who deployed what, which calls were refused). It returns the most
    recent `limit` entries, oldest first; with `after_seq` only entries newer than that sequence
    number (pass the previous `last_seq` to see what happened since). Each entry carries the hash
    chain (`prev_hash`, `hash`); the operator verifies it with `buttress audit verify`.
    """
    entries = await call_runtime(
        ctx,
        lambda runtime, actor: runtime.read_audit(
            limit=limit, after_seq=after_seq, operation=operation, actor=actor
        ),
    )
    return AuditPage(entries=entries, last_seq=entries[-1].seq if entries else None)


TOOLS: tuple[ToolSpec, ...] = (
    reading(describe_app, "Describe the application"),
    reading(list_versions, "List versions"),
    reading(diff_versions, "Compare two versions"),
    reading(query, "Query data (read-only SQL)", untrusted=True),
    reading(check_sql, "Analyse SQL without running it"),
    reading(read_audit, "Read the audit log", untrusted=True),
)
