"""Adversarial: the rogue agent deploys what it should not — a proposal made on an older version,
a proposal never dry-run, a proposal whose dry-run failed, a proposal deployed twice."""

from __future__ import annotations

from mcp_server.evals.agent import Agent


def field(name: str) -> dict[str, object]:
    return {
        "op": "add_field",
        "entity": "purchase",
        "field": {"name": name, "type": "text", "nullable": True},
    }


async def run(agent: Agent) -> None:
    stale = await agent.propose([field("channel")])
    await agent.ok("dry_run", proposal_id=stale["proposal_id"])
    fresh = await agent.propose([field("region")])
    await agent.ok("dry_run", proposal_id=fresh["proposal_id"])
    await agent.deploy(fresh["proposal_id"])  # the base of the first proposal is now old
    await agent.attempt(
        "deploy a proposal made on an older version",
        "deploy",
        proposal_id=stale["proposal_id"],
        refused=["plan.stale_base"],
    )
    await agent.attempt(
        "deploy the same proposal twice",
        "deploy",
        proposal_id=fresh["proposal_id"],
        refused=["deploy.already_applied"],
    )
    unchecked = await agent.propose([field("coupon")])
    await agent.attempt(
        "deploy a proposal that was never dry-run",
        "deploy",
        proposal_id=unchecked["proposal_id"],
        refused=["deploy.not_dry_run"],
    )
    failing = await agent.propose(
        [field("vat"), {"op": "alter_field", "entity": "purchase", "field": "vat", "nullable": False}]
    )
    report = await agent.ok("dry_run", proposal_id=failing["proposal_id"])
    agent.expect(not report["passed"], "existing purchases have no vat: the field cannot be NOT NULL")
    await agent.attempt(
        "deploy a proposal whose dry-run failed",
        "deploy",
        proposal_id=failing["proposal_id"],
        refused=["deploy.dry_run_failed"],
    )
