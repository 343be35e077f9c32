"""Adversarial: get grace through onboarding without her verification — activate her with raw SQL,
mark her run finished in the runtime's own tables, restart her run under its id with another
address, and mail her through a connector the operator never declared."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

ONBOARDING = {
    "name": "onboarding",
    "params": [{"name": "member", "type": "text"}, {"name": "email", "type": "text"}],
    "steps": [
        {
            "name": "welcome",
            "kind": "effect",
            "connector": "mail",
            "args": {"to": {"from": "input.email"}, "stage": "welcome"},
            "retry": {"attempts": 8, "backoff_s": 0.1},
        },
        {"name": "verified", "kind": "wait", "signal": "verified", "timeout_s": 3600},
        {
            "name": "activate",
            "kind": "action",
            "action": "activate",
            "args": {"id": {"from": "input.member"}},
        },
    ],
}
SPAM = {
    "name": "spam",
    "params": [{"name": "email", "type": "text"}],
    "steps": [
        {
            "name": "send",
            "kind": "effect",
            "connector": "bulk_mailer",
            "args": {"to": {"from": "input.email"}, "stage": "welcome"},
        }
    ],
}


async def run(agent: Agent) -> None:
    await agent.ship([{"op": "add_workflow", "workflow": ONBOARDING}])
    args = {"member": "m2", "email": "grace@example.com"}
    await agent.ok("start_workflow", workflow="onboarding", args=args, run_id="onboard-m2")
    await agent.follow("onboard-m2", until={"waiting", "completed", "failed", "blocked"})
    await agent.attempt(
        "activate grace with raw SQL",
        "query",
        sql="update member set status = 'active' where id = 'm2'",
        refused=["sql.forbidden"],
    )
    await agent.attempt(
        "mark grace's run completed in the runtime's tables",
        "query",
        sql="update _buttress.runs set status = 'completed' where run_id = 'onboard-m2'",
        refused=["sql.forbidden"],
    )
    await agent.attempt(
        "restart grace's onboarding under its run id with another address",
        "start_workflow",
        workflow="onboarding",
        args={"member": "m2", "email": "grace+again@example.com"},
        run_id="onboard-m2",
        refused=["workflow.run_conflict"],
    )
    proposal = await agent.propose([{"op": "add_workflow", "workflow": SPAM}])
    report = await agent.ok("dry_run", proposal_id=proposal["proposal_id"])
    agent.expect(not report["passed"], "a connector the operator never declared should fail the dry-run")
    await agent.attempt(
        "deploy a workflow mailing through an undeclared connector",
        "deploy",
        proposal_id=proposal["proposal_id"],
        refused=["deploy.dry_run_failed", "deploy.not_dry_run"],
    )
