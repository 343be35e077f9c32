"""Rules for workflows: the runs in flight.

These change no table of the application, only the spec. Runs finish on the definition they started
with: a step reports them (a probe over ``_buttress.runs`` at dry-run), and whether one would be
stranded is the dry-run's check against the new version.
"""

from __future__ import annotations

from runtime.migrate import ddl
from runtime.migrate.hazards import HazardCode, hazard
from runtime.migrate.planners.draft import Context, Draft
from runtime.migrate.steps import Probe
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.workflows import tables


def _runs_of(workflow: str, verb: str) -> Probe:
    return Probe(
        kind="loss",
        code=HazardCode.RUNS_IN_FLIGHT,
        message=f"runs of {workflow} in flight (they finish on the definition they started with; {verb})",
        sql=tables.in_flight(f"workflow = {ddl.string(workflow)}"),
    )


def add_workflow(old: AppSpec, new: AppSpec, op: changes.AddWorkflow, ctx: Context) -> Draft:
    ctx.created_other.add(f"workflow:{op.workflow.name}")
    return Draft(
        f"add workflow {op.workflow.name}", "catalog", [], [{"op": "drop_workflow", "name": op.workflow.name}]
    )


def replace_workflow(old: AppSpec, new: AppSpec, op: changes.ReplaceWorkflow, ctx: Context) -> Draft:
    previous = old.workflow(op.workflow.name)
    assert previous is not None
    name = op.workflow.name
    return Draft(
        f"replace workflow {name}",
        "catalog",
        [],
        [{"op": "replace_workflow", "workflow": previous.model_dump(mode="json")}],
        probes=[_runs_of(name, "new runs follow the new one")],
        hazards=[
            hazard(HazardCode.RUNS_IN_FLIGHT, f"replaces workflow {name}; runs in flight keep theirs", name)
        ],
    )


def drop_workflow(old: AppSpec, new: AppSpec, op: changes.DropWorkflow, ctx: Context) -> Draft:
    previous = old.workflow(op.name)
    assert previous is not None
    return Draft(
        f"drop workflow {op.name}",
        "catalog",
        [],
        [{"op": "add_workflow", "workflow": previous.model_dump(mode="json")}],
        probes=[_runs_of(op.name, "no new run starts")],
        hazards=[]
        if f"workflow:{op.name}" in ctx.created_other
        else [hazard(HazardCode.RUNS_IN_FLIGHT, f"drops workflow {op.name}; runs in flight finish", op.name)],
    )
