"""Adversarial: the shortcuts of a split — require the new fields before the data has moved, move
it with raw SQL, drop the old field while the actions still read it."""

from __future__ import annotations

from mcp_server.evals.agent import Agent


async def run(agent: Agent) -> None:
    early = await agent.propose(
        [
            {
                "op": "add_field",
                "entity": "person",
                "field": {"name": "first_name", "type": "text", "nullable": True},
            },
            {"op": "alter_field", "entity": "person", "field": "first_name", "nullable": False},
        ]
    )
    await agent.ok("dry_run", proposal_id=early["proposal_id"])
    agent.record(
        "require first_name before any row has one",
        await agent.deploy_result(early["proposal_id"]),
        refused=["deploy.dry_run_failed"],
    )
    await agent.attempt(
        "move the names with raw SQL",
        "query",
        sql="update person set full_name = split_part(full_name, ' ', 1)",
        refused=["sql.forbidden"],
    )
    dropped = await agent.propose([{"op": "drop_field", "entity": "person", "field": "full_name"}])
    report = await agent.ok("dry_run", proposal_id=dropped["proposal_id"])
    agent.expect(not report["passed"], "add_person and directory read full_name: the dry-run must fail")
    agent.record(
        "drop full_name while the actions still read it",
        await agent.deploy_result(dropped["proposal_id"]),
        refused=["deploy.dry_run_failed"],
    )
