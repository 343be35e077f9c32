"""The planner (pure): base spec + operations → a Plan of ordered steps.

Each step carries its forward SQL (retention statements first), the operations that reverse it,
the retained data that makes the reverse lossless, probes that dry-run uses to report losses and
failing rows, and its hazards. Where DuckDB cannot ALTER, the step is a single-transaction table
rebuild (``ddl.rebuild``) that spells out the full definition.

Data that a rollback retained can be restored by a later step (``restores``): the deploy layer
passes the retained tables that apply, so the SQL in a stored plan is always concrete.

``_PLANNERS`` maps each operation type to its rule in ``runtime.migrate.planners``; the plan's data
(Plan, Step, Probe, Retention) is declared in ``runtime.migrate.steps`` and importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runtime.migrate import ddl
from runtime.migrate.ddl import q
from runtime.migrate.hazards import HazardCode, hazard
from runtime.migrate.planners import entities, fields, logic, topics, workflows
from runtime.migrate.planners.draft import Context, Draft
from runtime.migrate.steps import Plan, Probe, Retention, Step
from runtime.migrate.steps import RestoreKey as RestoreKey  # deploy imports these from here, as before
from runtime.migrate.steps import Strategy as Strategy
from runtime.schema import changes
from runtime.schema.changes import Operation
from runtime.schema.spec import AppSpec
from runtime.sql.dialect import DUCKDB, Alter, Dialect


def plan(
    base: AppSpec,
    ops: Sequence[Operation],
    *,
    base_version: int,
    restores: Mapping[RestoreKey, Retention] | None = None,
    step_offset: int = 0,
    frozen: frozenset[str] = frozenset(),
    dialect: Dialect = DUCKDB,
) -> tuple[AppSpec, Plan]:
    """Validate ``ops`` against ``base`` and plan them. Returns the target spec and the plan.

    ``step_offset`` numbers the steps after those of an earlier plan they will be joined to;
    ``frozen`` names tables indexed earlier in the same transaction (DuckDB still refuses their ALTERs);
    ``dialect``: the engine the SQL is spelled for.
    """
    target = changes.apply(base, ops)
    ctx = Context(
        base=base,
        target_version=base_version + 1,
        restores=restores or {},
        dialect=dialect,
        indexed=set(frozen) | {e.name for e in base.entities if ddl.indexes_of(base, e)},
    )
    steps: list[Step] = []
    current = base
    for index, op in enumerate(ops, start=step_offset):
        ctx.index = index
        after = changes.apply_one(current, op)
        draft = _PLANNERS[type(op)](current, after, op, ctx)
        steps.append(
            Step(
                index=index,
                op=op.model_dump(mode="json"),
                summary=draft.summary,
                strategy=draft.strategy,
                sql=tuple(draft.sql),
                reverse=tuple(draft.reverse),
                retains=tuple(draft.retains),
                restores=tuple(draft.restores),
                probes=tuple(draft.probes),
                hazards=tuple(draft.hazards),
            )
        )
        current = after
    if dialect.name == "postgres":
        steps = [_with_locks(step, base) for step in steps]
    views = _sync_views(base, target, ops, dialect)
    if not dialect.needs_rebuild(Alter.ALTER_INDEXED_TABLE) and steps and base.views:
        # PostgreSQL tracks what a view depends on and refuses to drop or change it under the view, and
        # to replace a view with other columns: its views are dropped first and created again at the end
        drops = tuple(f"DROP VIEW IF EXISTS {q(v.name)} CASCADE" for v in reversed(base.views))
        steps[0] = steps[0].model_copy(update={"sql": drops + steps[0].sql})
        views = [ddl.create_view(view, dialect=dialect) for view in target.views]
    if views:
        index = step_offset + len(ops)
        steps.append(
            Step(
                index=index,
                op={"op": "sync_views"},
                summary="bring views to the target spec",
                strategy="create",
                sql=tuple(views),
                reverse=(),
            )
        )
    return target, Plan(
        base_version=base_version,
        target_version=base_version + 1,
        base_hash=base.hash(),
        target_hash=target.hash(),
        steps=tuple(steps),
    )


_LOCKING = re.compile(r'^(?:ALTER TABLE|DROP TABLE|CREATE (?:UNIQUE )?INDEX \S+ ON)\s+"((?:[^"]|"")+)"')
"""A statement that takes an ACCESS EXCLUSIVE (or, for an index, SHARE) lock on the table it names."""


def _with_locks(step: Step, base: AppSpec) -> Step:
    """``step`` with the ``lock.table_exclusive`` hazard when it locks tables that exist before the plan
    (PostgreSQL holds the lock until the deploy commits; a new table has no readers to block)."""
    existing = {e.name for e in base.entities}
    locked = sorted(
        {
            name.replace('""', '"')
            for statement in step.sql
            if (found := _LOCKING.match(statement)) is not None
            for name in [found.group(1)]
            if name.replace('""', '"') in existing
        }
    )
    if not locked:
        return step
    lock = hazard(
        HazardCode.TABLE_LOCK,
        f"locks {', '.join(locked)} until the change commits: reads and writes of "
        f"{'it' if len(locked) == 1 else 'them'} wait on every server",
        *locked,
    )
    return step.model_copy(update={"hazards": (*step.hazards, lock)})


def _sync_views(
    base: AppSpec, target: AppSpec, ops: Sequence[Operation], dialect: Dialect = DUCKDB
) -> list[str]:
    """DuckDB binds a view when it is created, so the views a proposal touches are (re)created once,
    after every table change, in the target spec's order; removed ones are dropped."""
    touched = {
        op.view.name if isinstance(op, changes.AddView | changes.ReplaceView) else op.name
        for op in ops
        if isinstance(op, changes.AddView | changes.ReplaceView | changes.DropView)
    }
    if not touched:
        return []
    out = [f"DROP VIEW IF EXISTS {q(name)}" for name in sorted(touched) if target.view(name) is None]
    out += [
        ddl.create_view(view, replace=True, dialect=dialect) for view in target.views if view.name in touched
    ]
    return out


_PLANNERS: dict[type[Any], Callable[[AppSpec, AppSpec, Any, Context], Draft]] = {
    changes.AddEntity: entities.add_entity,
    changes.DropEntity: entities.drop_entity,
    changes.RenameEntity: entities.rename_entity,
    changes.AddField: fields.add_field,
    changes.DropField: fields.drop_field,
    changes.RenameField: fields.rename_field,
    changes.AlterField: fields.alter_field,
    changes.AddUnique: entities.add_unique,
    changes.DropUnique: entities.drop_unique,
    changes.AddIndex: entities.add_index,
    changes.DropIndex: entities.drop_index,
    changes.AddView: logic.add_view,
    changes.ReplaceView: logic.replace_view,
    changes.DropView: logic.drop_view,
    changes.AddInvariant: logic.add_invariant,
    changes.DropInvariant: logic.drop_invariant,
    changes.AddAction: logic.add_action,
    changes.ReplaceAction: logic.replace_action,
    changes.DropAction: logic.drop_action,
    changes.SetCheckedBy: entities.set_checked_by,
    changes.AddTopic: topics.add_topic,
    changes.ReplaceTopic: topics.replace_topic,
    changes.DropTopic: topics.drop_topic,
    changes.AddWorkflow: workflows.add_workflow,
    changes.ReplaceWorkflow: workflows.replace_workflow,
    changes.DropWorkflow: workflows.drop_workflow,
    changes.AddSubscription: topics.add_subscription,
    changes.ReplaceSubscription: topics.replace_subscription,
    changes.DropSubscription: topics.drop_subscription,
}

__all__ = ["Plan", "Probe", "Retention", "Step", "plan"]
