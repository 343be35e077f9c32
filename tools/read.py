"""The read tools: look at the application, its history, its data and its audit log. None of them
changes anything.

Each tool projects one ``Runtime`` method; the output models below are the tools' contract with
the agent (field by field the runtime's result models, which ``tests/tools`` pins), kept free of
database imports so that the server lists its tools without loading the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field

from runtime.schema.diff import SpecDiff
from runtime.schema.spec import EntitySpec, InvariantSpec, ParamSpec, ViewSpec
from tools.base import ToolContext, ToolSpec, call_runtime, reading

if TYPE_CHECKING:
    from runtime.runtime import AppDescription

JsonScalar = str | int | float | bool | None


# ------------------------------------------------------------------------------------ output models


class ActionSummary(BaseModel):
    """A deployed action: typed, analysed SQL the runtime runs on the agent's behalf."""

    name: str
    kind: str = Field(description="'query' (reads) or 'mutation' (writes through the writer lane).")
    description: str
    params: list[ParamSpec]
    reads: list[str] = Field(description="Entities and views the action reads.")
    writes: list[str] = Field(description="Entities the action writes.")
    tool: str = Field(description="The name of the action's own tool (app_<name>).")


class PendingProposal(BaseModel):
    """A proposal made on the current version that is not deployed yet."""

    proposal_id: str
    note: str | None = None
    created_by: str
    created_at: str
    dry_run_passed: bool = Field(
        description="True once a dry-run of this proposal passed on the current version."
    )


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
    views: list[ViewSpec]
    actions: list[ActionSummary]
    pending_proposals: list[PendingProposal]
    drift: list[str] = Field(
        description="Differences between the database and the spec; non-empty blocks deploys."
    )

    @classmethod
    def of(cls, description: AppDescription) -> AppOverview:
        """The overview of the runtime's description."""
        spec = description.spec
        return cls(
            version=description.version,
            hash=description.hash,
            entities=list(spec.entities),
            invariants=list(spec.invariants),
            views=list(spec.views),
            actions=[ActionSummary.model_validate(a) for a in description.actions],
            pending_proposals=[PendingProposal.model_validate(p) for p in description.pending_proposals],
            drift=list(description.drift),
        )


class VersionEntry(BaseModel):
    """One deployed version: a deploy of a proposal, or a rollback restoring an earlier version."""

    number: int
    hash: str
    kind: str = Field(description="'init' (version 0), 'deploy' or 'rollback'.")
    parent: int | None = Field(default=None, description="The version this one was deployed on.")
    restores: int | None = Field(
        default=None, description="For a rollback: the version whose spec it restores."
    )
    proposal_id: str | None = None
    note: str | None = None
    deployed_at: str
    deployed_by: str


class VersionHistory(BaseModel):
    """Every version, and which one is current."""

    current: int = Field(description="The current version number.")
    versions: list[VersionEntry] = Field(description="Every version, oldest first.")


class QueryOutput(BaseModel):
    """The rows a query returned."""

    columns: list[str]
    rows: list[list[Any]] = Field(
        description="Rows as lists in column order; times and decimals as ISO/text strings."
    )
    row_count: int = Field(description="Number of rows returned (after the limit).")
    truncated: bool = Field(
        description="True when more rows matched than the limit; narrow the query or page."
    )


class SqlCheck(BaseModel):
    """What a statement would do, as far as analysis can tell without running it."""

    ok: bool = Field(description="True when the statement is allowed and binds against the spec.")
    kind: str | None = Field(
        default=None, description="The statement kind, e.g. 'select', 'insert', 'update'."
    )
    reads: list[str] = []
    writes: list[str] = []
    params: list[str] = Field(default=[], description="The $names the statement expects.")
    output_columns: list[str] = []
    against_version: int
    proposal_id: str | None = None
    error: dict[str, Any] | None = Field(
        default=None, description="When ok is false: {code, message, hint, details}."
    )


class AuditRecord(BaseModel):
    """One row of the hash-chained audit log."""

    seq: int
    time: str = Field(description="When, as ISO 8601 UTC.")
    actor: str
    operation: str
    arguments: dict[str, Any]
    outcome: str = Field(description="'ok', 'refused', 'passed' or 'failed'.")
    error_code: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    proposal_id: str | None = None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    """Audit entries, oldest first."""

    entries: list[AuditRecord] = Field(description="Oldest first.")
    last_seq: int | None = Field(
        description="The highest seq returned; pass it as after_seq to read only what happens next."
    )


# ------------------------------------------------------------------------------------------- tools


async def describe_app(ctx: ToolContext) -> AppOverview:
    """Describe the application as it is now: version, entities (tables) with their fields, invariants,
    views, actions, proposals waiting to be deployed, and drift.

    Call this first, and again before proposing a change: `propose_change` is checked against the
    current version, and `version` here is the `base_version` to pass.

    Returns the current `version` and `hash`, the spec's `entities`, `invariants`, `views`,
    `actions` (each with its own `app_<name>` tool), `pending_proposals` and `drift` (differences
    between the database and the spec; while non-empty, deploys are refused with catalog.drift and
    an operator must reconcile).

    Errors: engine.locked (another process holds the database: tell the operator).
    """
    description = await call_runtime(ctx, lambda runtime, actor: runtime.describe(actor=actor))
    return AppOverview.of(description)


async def list_versions(ctx: ToolContext) -> VersionHistory:
    """List every deployed version, oldest first, with who deployed it, when, and from which proposal.

    Use it to pick a version for `diff_versions` or `rollback(to_version=...)`. Rollbacks are
    versions too (`kind` 'rollback', `restores` names the version whose spec they restore), so
    version numbers only grow.
    """
    versions = await call_runtime(ctx, lambda runtime, actor: runtime.versions(actor=actor))
    entries = [VersionEntry.model_validate(v.model_dump()) for v in versions]
    return VersionHistory(current=max((v.number for v in entries), default=0), versions=entries)


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
) -> QueryOutput:
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
    result = await call_runtime(
        ctx, lambda runtime, actor: runtime.query(sql, params, limit=limit, actor=actor)
    )
    return QueryOutput.model_validate(result.model_dump())


async def check_sql(
    sql: Annotated[str, Field(min_length=1, description="The statement to analyse; it is not executed.")],
    ctx: ToolContext,
    proposal_id: Annotated[
        str | None,
        Field(description="Check against this proposal's target spec instead of the current version."),
    ] = None,
) -> SqlCheck:
    """Analyse a SQL statement without running it: is it allowed, which entities does it read and
    write, which $params does it expect, which columns does it return.

    Use it to check a view, invariant or action statement before putting it in a proposal; pass
    `proposal_id` to check it against the spec that proposal would deploy (e.g. after a rename).

    Returns `ok`; when false, `error` holds {code, message, hint, details} (sql.parse,
    sql.forbidden, sql.unknown_table, sql.unknown_column) saying what to fix.

    Errors: not_found (no such proposal: propose_change returns proposal ids).
    """
    result = await call_runtime(
        ctx, lambda runtime, actor: runtime.check_sql(sql, proposal_id=proposal_id, actor=actor)
    )
    return SqlCheck.model_validate(result.model_dump())


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
    records = [AuditRecord.model_validate(e.model_dump()) for e in entries]
    return AuditPage(entries=records, last_seq=records[-1].seq if records else None)


TOOLS: tuple[ToolSpec, ...] = (
    reading(describe_app, "Describe the application"),
    reading(list_versions, "List versions"),
    reading(diff_versions, "Compare two versions"),
    reading(query, "Query data (read-only SQL)"),
    reading(check_sql, "Analyse SQL without running it"),
    reading(read_audit, "Read the audit log"),
)
