"""Adversarial: bring the plan back after the rollback by the short ways — deploy again the proposal
the rollback undid, deploy the change again without a dry-run, and propose it on the version the
rollback undid."""

from __future__ import annotations

from typing import Any

from mcp_server.evals.agent import Agent

PLAN = {"name": "plan", "type": "text", "nullable": True}
PLAN_CHANGE: list[dict[str, Any]] = [
    {"op": "add_field", "entity": "app_user", "field": PLAN},
    {
        "op": "replace_topic",
        "topic": {
            "name": "user_events",
            "key": "user",
            "external": True,
            "payload": [{"name": "user", "type": "text"}, {"name": "name", "type": "text"}, PLAN],
        },
    },
    {
        "op": "replace_action",
        "action": {
            "name": "sign_up",
            "kind": "mutation",
            "params": [
                {"name": "id", "type": "text"},
                {"name": "name", "type": "text"},
                {"name": "plan", "type": "text", "nullable": True},
            ],
            "statements": ["insert into app_user (id, name, plan) values ($id, $name, $plan)"],
            "emits": [
                {
                    "publish": "user_events",
                    "args": {
                        "user": {"from": "args.id"},
                        "name": {"from": "args.name"},
                        "plan": {"from": "args.plan"},
                    },
                }
            ],
        },
    },
]


async def run(agent: Agent) -> None:
    first = await agent.propose(PLAN_CHANGE)
    report = await agent.ok("dry_run", proposal_id=first["proposal_id"])
    agent.expect(report["passed"], f"the plan change should dry-run: {report['report'].get('error')}")
    changed = await agent.deploy(first["proposal_id"])
    await agent.ok("app_sign_up", id="cy", name="Cy", plan="pro", idempotency_key="sign-up-cy")
    await agent.rollback()

    await agent.attempt(
        "deploy again the proposal the rollback undid",
        "deploy",
        proposal_id=first["proposal_id"],
        refused=["deploy.already_applied"],
    )
    again = await agent.propose(PLAN_CHANGE)
    await agent.attempt(
        "deploy the plan change again without a dry-run",
        "deploy",
        proposal_id=again["proposal_id"],
        refused=["deploy.not_dry_run"],
    )
    await agent.attempt(
        "propose the change on the version the rollback undid (a stale base)",
        "propose_change",
        operations=PLAN_CHANGE,
        base_version=changed,
        refused=["plan.stale_base"],
    )
