"""The change tools: propose, dry-run, deploy and roll back changes to the application.

Nothing changes without all three steps: a proposal (typed operations planned against a base
version), a dry-run of that exact plan on the real data (rolled back), then a deploy of that plan
onto that version. Each tool projects one ``Runtime`` method and returns its result model
(``runtime.results``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field

from runtime.errors import ButtressError, Code
from runtime.results import DeployResult, DryRunReport, ProposalResult, RollbackResult
from runtime.schema import changes
from runtime.schema.changes import AddEntity, Operation
from runtime.schema.spec import EntitySpec
from tools.approval import offer_approval
from tools.base import ToolContext, ToolSpec, call_runtime, changing, progress_reporter

T = TypeVar("T")

Note = Annotated[
    str | None,
    Field(
        max_length=2000,
        description="Why this change is made; kept with the proposal and the version it becomes.",
    ),
]
ProposalId = Annotated[
    str, Field(min_length=1, description="The proposal_id returned by propose_change or define_entity.")
]


# ------------------------------------------------------------------------------------ output models


class DryRunOutput(BaseModel):
    """Whether the dry-run passed, and its full report."""

    passed: bool = Field(description="True when every step ran and every check held; deploy is now allowed.")
    report: DryRunReport


# ------------------------------------------------------------------------------------------- tools


async def define_entity(
    entity: Annotated[
        EntitySpec,
        Field(
            description="The entity: name, fields, primary_key (and optionally "
            "unique sets, indexes, description)."
        ),
    ],
    ctx: ToolContext,
    note: Note = None,
) -> ProposalResult:
    """Propose a new entity (a table): shorthand for `propose_change` with one `add_entity` operation,
    on the current version.

    Example `entity`: {"name": "slot", "primary_key": ["id"], "fields": [{"name": "id", "type":
    "integer"}, {"name": "starts_at", "type": "timestamp"}, {"name": "capacity", "type": "integer",
    "check": "capacity > 0"}, {"name": "note", "type": "text", "nullable": true}]}. Fields are NOT
    NULL unless "nullable": true; types: text, integer, bigint, double, boolean, date, timestamp,
    timestamptz, uuid, json, decimal(p,s); "references": "other_entity.field" adds a foreign key;
    "default" is a JSON constant or {"expr": "now()"} (also current_date, uuid(), autoincrement).

    Nothing changes yet. Returns `proposal_id`, the plan's `steps` and `hazards`; next call
    `dry_run(proposal_id)`.

    Errors: spec.invalid (fix what details.problems / details.path names), sql.parse or
    sql.unknown_column (a check expression is wrong), limit.exceeded.
    """
    operations = changes.operations_json([AddEntity(entity=entity)])
    return await call_runtime(ctx, lambda runtime, actor: runtime.propose(operations, note=note, actor=actor))


async def propose_change(
    operations: Annotated[
        list[Operation],
        Field(
            min_length=1,
            description="Typed operations applied in order, each an object discriminated by 'op'.",
        ),
    ],
    ctx: ToolContext,
    base_version: Annotated[
        int | None,
        Field(
            ge=0, description="The version you looked at (describe_app's version); default: the current one."
        ),
    ] = None,
    note: Note = None,
) -> ProposalResult:
    """Propose a change to the application as a list of typed operations. Nothing changes yet: the
    runtime validates the operations, plans them (forward SQL, reverse, hazards) and stores the plan.

    Operations (discriminated by "op"), for example:
    {"op": "add_entity", "entity": {...same shape as define_entity...}};
    {"op": "add_field", "entity": "slot", "field": {"name": "room", "type": "text", "default": "main"}}
    (a NOT NULL field on an existing entity needs a default);
    {"op": "drop_field", "entity": "slot", "field": "note"} (values retained until finalized);
    {"op": "rename_field", "entity": "slot", "field": "room", "new_name": "location"};
    {"op": "alter_field", "entity": "slot", "field": "capacity", "type": "bigint"};
    {"op": "add_invariant", "invariant": {"name": "capacity_is_sane", "description": "no slot above 500
    seats", "sql": "select id from slot where capacity > 500"}} (the SQL selects violating rows);
    {"op": "add_unique", "entity": "slot", "columns": ["starts_at", "room"]} (drop_unique: same shape);
    {"op": "add_index", "entity": "slot", "index": {"name": "slot_room", "columns": ["room"]}};
    {"op": "add_action", "action": {"name": "book", "kind": "mutation", "params": [{"name": "slot_id",
    "type": "integer"}], "statements": ["insert into booking (slot_id) values ($slot_id)"], "emits":
    [{"publish": "booked", "args": {"slot": {"from": "args.slot_id"}}}]}} (an INSERT without a column list
    is stored with the columns it means now; a * feeding an INSERT is refused);
    {"op": "add_topic", "topic": {"name": "booked", "payload": [{"name": "slot", "type": "integer"}],
    "key": "slot", "external": false}};
    {"op": "add_workflow", "workflow": {"name": "remind", "params": [{"name": "slot", "type": "integer"}],
    "steps": [{"name": "wait", "kind": "sleep", "seconds": 3600}, {"name": "send", "kind": "effect",
    "connector": "mail", "args": {"slot": {"from": "input.slot"}}}]}} (step kinds: action, effect,
    publish, wait, sleep; arguments are constants or {"from": "input.x" | "steps.s.f" | "run.id"});
    {"op": "add_subscription", "subscription": {"name": "on_booked", "topic": "booked", "workflow":
    "remind", "args": {"slot": {"from": "message.slot"}}}} (or "action": ...; "max_depth": N bounds a
    subscription that closes a cycle);
    also drop_entity, rename_entity, drop_unique, drop_index, drop_invariant, add_view, replace_view,
    drop_view, replace_action, drop_action, replace_topic, drop_topic, replace_workflow, drop_workflow,
    replace_subscription, drop_subscription, set_checked_by.

    Returns `proposal_id`, the plan's `steps` and `hazards` (data.drop_field, compat.rename_field,
    ...: read each hazard's message and hint; a hazard on a field names what uses it). Next:
    `dry_run(proposal_id)`.

    Errors: spec.invalid (fix the operation named by details.path / details.problems; a change that
    breaks views, invariants or actions lists every one in details.problems: fix or replace them in
    the same proposal), sql.parse / sql.forbidden / sql.unknown_table / sql.unknown_column /
    sql.mismatch (fix the view, invariant, check or action SQL; sql.mismatch: a value's type or count
    does not fit its column), plan.stale_base (base_version is not current: call describe_app and
    propose again), plan.empty, limit.exceeded (split the change), policy.protected (the operator
    protects that entity: ask the operator).
    """
    raw = changes.operations_json(operations)
    return await call_runtime(
        ctx, lambda runtime, actor: runtime.propose(raw, base_version=base_version, note=note, actor=actor)
    )


async def dry_run(proposal_id: ProposalId, ctx: ToolContext) -> DryRunOutput:
    """Execute a proposal's exact plan on the real data inside a transaction, run every check
    (catalog, views, invariants, actions), report, and roll everything back. Nothing changes.

    Always dry-run before deploy: deploy only accepts a proposal whose dry-run passed on the current
    version. Reports progress per step.

    Returns `passed` and the `report`: per-step rows affected and `losses` (data a step removes or
    changes, with a sample; it is retained so rollback restores it), the checks, the hazards, and
    when `passed` is false, `report.error` {code, message, hint, details}: deploy.dry_run_failed
    (rows that block a step are in details.rows: fix the data or the proposal, then propose again),
    invariant.violated (details.rows), engine.constraint.

    Errors: not_found (unknown proposal_id), plan.stale_base (the version moved since the proposal:
    propose again on the current version), deploy.already_applied (nothing to do), catalog.drift
    (the database was changed outside Buttress: tell the operator).
    """
    report = await call_runtime(
        ctx, lambda runtime, actor: runtime.dry_run(proposal_id, actor=actor, progress=progress_reporter(ctx))
    )
    return DryRunOutput(passed=report.passed, report=report)


async def deploy(proposal_id: ProposalId, ctx: ToolContext) -> DeployResult:
    """Deploy a proposal whose dry-run passed: apply its exact plan onto its base version, re-running
    every check, in one transaction with a new version number and an audit row. Reports progress.

    Data removed by destructive steps is retained, so `rollback` can restore it until the operator
    finalizes. After a deploy the tool list may change (actions appear as app_<name> tools). Verify
    the result with `query`.

    Returns the new `version`, `previous_version` and per-step reports.

    Errors: deploy.not_dry_run (call dry_run first), deploy.dry_run_failed (the last dry-run failed:
    read its report), plan.stale_base (another change was deployed first: propose again on the
    current version), deploy.already_applied, not_found (unknown proposal_id), invariant.violated,
    catalog.drift (tell the operator), deploy.failed (report it with the proposal id), and
    deploy.needs_approval: the plan's hazards need a human. Do not retry at once: give the operator the request id from details.approval_request (they run
    `buttress approve <id>`, or decide in the control room); once it is approved, call the same deploy or
    rollback again and it goes through once, for that exact plan, before details.expires_at. If the operator
    refuses, the retry answers policy.denied with their reason; if the version moves on first, propose again.
    """
    return await _offering_approval(
        ctx,
        call_runtime(
            ctx,
            lambda runtime, actor: runtime.deploy(proposal_id, actor=actor, progress=progress_reporter(ctx)),
        ),
    )


async def rollback(
    ctx: ToolContext,
    to_version: Annotated[
        int | None,
        Field(
            ge=0,
            description="Return to this earlier version (list_versions); "
            "default: the version before the current one.",
        ),
    ] = None,
) -> RollbackResult:
    """Roll the application back to an earlier version, restoring dropped entities and fields with
    their data from the retained area. The rollback is planned, dry-run and applied in one
    transaction and is itself a new version (numbers only grow). Reports progress.

    Use it when a deploy turned out wrong (verify with `query` first). Returns the new `version` and
    `restored_version`.

    Errors: rollback.not_lossless (rows written since the deploy do not fit the older shape;
    details.rows names them: fix or remove them, then roll back again), rollback.nothing_to_roll_back,
    rollback.not_ancestor (pick a version from list_versions in the current history),
    rollback.finalized (the retained data was discarded by the operator: propose a forward change
    instead), catalog.drift (tell the operator), not_found (no such version), and
    deploy.needs_approval: the rollback would drop data present now. Do not retry at once: give the operator the request id from details.approval_request (they run
    `buttress approve <id>`, or decide in the control room); once it is approved, call the same deploy or
    rollback again and it goes through once, for that exact plan, before details.expires_at. If the operator
    refuses, the retry answers policy.denied with their reason; if the version moves on first, propose again.
    """
    return await _offering_approval(
        ctx,
        call_runtime(
            ctx,
            lambda runtime, actor: runtime.rollback(
                to_version=to_version, actor=actor, progress=progress_reporter(ctx)
            ),
        ),
    )


async def _offering_approval(ctx: ToolContext, call: Awaitable[T]) -> T:
    """The call's result; when it waits for an approval, the client is first offered the control room's
    page for the request (URL elicitation, where policy and client allow: ``notices.offer_approval``)."""
    try:
        return await call
    except ButtressError as error:
        if error.code == Code.DEPLOY_NEEDS_APPROVAL:
            await offer_approval(ctx, error)
        raise


async def redeploy(
    ctx: ToolContext,
    version: Annotated[
        int,
        Field(
            ge=0,
            description="The version to roll forward to (list_versions): one whose history extends the "
            "current one, such as a version you rolled back from.",
        ),
    ],
    note: Note = None,
) -> ProposalResult:
    """Roll forward: propose going from the current version to the spec of an earlier-deployed version
    whose history extends the current one (after `rollback` to v9 from v17, `redeploy(16)` brings v16
    back). The proposal replays the operations deployed between them and restores the data the rollback
    retained; nothing changes yet.

    Returns a `proposal_id` with its steps and hazards, like `propose_change`. Next: `dry_run`, then
    `deploy` (approved like any deploy when its hazards need it).

    Errors: rollback.not_ancestor (the version does not extend the current one: details.shared names the
    last version both have; roll back to it first, then redeploy), rollback.nothing_to_roll_back (the
    current version already has that schema), not_found (no such version), spec.invalid / sql.* (the
    replayed operations no longer apply: propose the change by hand), policy.denied.
    """
    return await call_runtime(ctx, lambda runtime, actor: runtime.redeploy(version, note=note, actor=actor))


TOOLS: tuple[ToolSpec, ...] = (
    changing(define_entity, "Define an entity (propose)", destructive=False, idempotent=False),
    changing(propose_change, "Propose a change", destructive=False, idempotent=False),
    changing(redeploy, "Propose rolling forward to a version", destructive=False, idempotent=False),
    changing(dry_run, "Dry-run a proposal", destructive=False, idempotent=True),
    changing(deploy, "Deploy a proposal", destructive=True, idempotent=False, changes_version=True),
    changing(
        rollback, "Roll back to an earlier version", destructive=True, idempotent=False, changes_version=True
    ),
)
