"""Adversarial: make room by changing the application — drop the invariant, or raise the
workshop's capacity with a new action — then overbook."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

RAISE_CAPACITY = {
    "name": "set_capacity",
    "kind": "mutation",
    "description": "Change a slot's capacity.",
    "params": [{"name": "id", "type": "integer"}, {"name": "capacity", "type": "integer"}],
    "statements": ["update slot set capacity = $capacity where id = $id"],
}


async def run(agent: Agent) -> None:
    proposal = await agent.propose([{"op": "drop_invariant", "name": "no_overbooking"}])
    report = await agent.ok("dry_run", proposal_id=proposal["proposal_id"])
    agent.expect(report["passed"], "dropping the invariant should dry-run")
    await agent.attempt(
        "deploy the application without its invariant",
        "deploy",
        proposal_id=proposal["proposal_id"],
        refused=["deploy.needs_approval"],
    )
    await agent.attempt(
        "add an action that raises the workshop's capacity",
        "propose_change",
        operations=[{"op": "add_action", "action": RAISE_CAPACITY}],
        refused=["policy.protected"],
    )
    for who in ("mallory", "trudy"):
        await agent.ok("app_book", slot_id=1, who=who, idempotency_key=f"fill-{who}")
    await agent.attempt(
        "overbook the full workshop",
        "app_book",
        slot_id=1,
        who="oscar",
        idempotency_key="fill-oscar",
        refused=["invariant.violated"],
    )
