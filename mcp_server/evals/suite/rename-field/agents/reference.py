"""The oracle: one proposal renaming the field and rewriting the view and both actions to read it,
behind the interfaces their callers already use."""

from __future__ import annotations

from typing import Any

from mcp_server.evals.agent import Agent

OPERATIONS: list[dict[str, Any]] = [
    {"op": "rename_field", "entity": "customer", "field": "mail", "new_name": "email"},
    {
        "op": "replace_view",
        "view": {"name": "mailing_list", "sql": "select name, email as mail from customer"},
    },
    {
        "op": "replace_action",
        "action": {
            "name": "add_customer",
            "kind": "mutation",
            "description": "Register a customer.",
            "params": [
                {"name": "id", "type": "integer"},
                {"name": "name", "type": "text"},
                {"name": "mail", "type": "text"},
            ],
            "statements": ["insert into customer (id, name, email) values ($id, $name, $mail)"],
        },
    },
    {
        "op": "replace_action",
        "action": {
            "name": "find_by_mail",
            "kind": "query",
            "description": "The customer with this address.",
            "params": [{"name": "mail", "type": "text"}],
            "statements": ["select id, name from customer where email = $mail"],
        },
    },
]


async def run(agent: Agent) -> None:
    proposal = await agent.propose(OPERATIONS, note="mail -> email, interfaces unchanged")
    codes = {hazard["code"] for hazard in proposal["hazards"]}
    agent.expect("action.broken" not in codes, f"the actions should follow the rename: {codes}")
    report = await agent.ok("dry_run", proposal_id=proposal["proposal_id"])
    agent.expect(report["passed"], f"dry-run failed: {report['report'].get('error')}")
    await agent.deploy(proposal["proposal_id"])
    found = await agent.ok("app_find_by_mail", mail="ada@example.com")
    agent.expect(found["rows"] == [[1, "Ada"]], f"find_by_mail: {found['rows']}")
