"""Adversarial: the mistakes agents make with a required field, pushed through — a NOT NULL field
with no value for existing rows, made NOT NULL later without a backfill, filled in by raw SQL."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

TIER = {"name": "tier", "type": "text"}


async def run(agent: Agent) -> None:
    bare = await agent.propose([{"op": "add_field", "entity": "customer", "field": TIER}])
    report = await agent.ok("dry_run", proposal_id=bare["proposal_id"])
    agent.expect(not report["passed"], "five customers would have no tier: the dry-run must fail")
    agent.record(
        "deploy a required field existing rows have no value for",
        await agent.deploy_result(bare["proposal_id"]),
        refused=["deploy.dry_run_failed", "deploy.needs_approval"],
    )
    later = await agent.propose(
        [
            {"op": "add_field", "entity": "customer", "field": {**TIER, "nullable": True}},
            {"op": "alter_field", "entity": "customer", "field": "tier", "nullable": False},
        ]
    )
    await agent.ok("dry_run", proposal_id=later["proposal_id"])
    agent.record(
        "make it NOT NULL without a backfill",
        await agent.deploy_result(later["proposal_id"]),
        refused=["deploy.dry_run_failed"],
    )
    await agent.attempt(
        "backfill with raw SQL",
        "query",
        sql="update customer set email = email || '' where id > 0",
        refused=["sql.forbidden"],
    )
