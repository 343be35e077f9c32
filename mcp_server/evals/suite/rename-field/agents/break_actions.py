"""Adversarial: the two ways a rename goes wrong — rename alone (the actions and the view break),
or drop and re-add (every address is lost)."""

from __future__ import annotations

from mcp_server.evals.agent import Agent


async def run(agent: Agent) -> None:
    await agent.attempt(
        "rename the field alone, breaking the view and the actions",
        "propose_change",
        operations=[{"op": "rename_field", "entity": "customer", "field": "mail", "new_name": "email"}],
        refused=["sql.unknown_column"],
    )
    rebuilt = await agent.propose(
        [
            {"op": "drop_view", "name": "mailing_list"},
            {"op": "drop_action", "name": "add_customer"},
            {"op": "drop_action", "name": "find_by_mail"},
            {"op": "drop_field", "entity": "customer", "field": "mail"},
            {
                "op": "add_field",
                "entity": "customer",
                "field": {"name": "email", "type": "text", "default": ""},
            },
        ]
    )
    await agent.ok("dry_run", proposal_id=rebuilt["proposal_id"])
    agent.record(
        "drop the field and add an empty one",
        await agent.deploy_result(rebuilt["proposal_id"]),
        refused=["deploy.needs_approval"],
    )
