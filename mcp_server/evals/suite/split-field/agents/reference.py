"""The oracle, in two deploys: add the new fields (nullable) and an action that moves the data;
run it; then make them required, replace the actions and drop the old field (approved)."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

SPLIT = {
    "name": "split_names",
    "kind": "mutation",
    "description": "Fill first_name and last_name from full_name.",
    "params": [],
    "statements": [
        "update person set first_name = split_part(full_name, ' ', 1), "
        "last_name = substr(full_name, strpos(full_name, ' ') + 1) where first_name is null"
    ],
}
ADD_PERSON = {
    "name": "add_person",
    "kind": "mutation",
    "description": "Add a person.",
    "params": [
        {"name": "id", "type": "integer"},
        {"name": "first_name", "type": "text"},
        {"name": "last_name", "type": "text"},
    ],
    "statements": ["insert into person (id, first_name, last_name) values ($id, $first_name, $last_name)"],
}
DIRECTORY = {
    "name": "directory",
    "kind": "query",
    "description": "Everyone, by id.",
    "statements": ["select id, first_name, last_name from person order by id"],
}


def nullable(name: str) -> dict[str, object]:
    return {"op": "add_field", "entity": "person", "field": {"name": name, "type": "text", "nullable": True}}


async def run(agent: Agent) -> None:
    await agent.ship([nullable("first_name"), nullable("last_name"), {"op": "add_action", "action": SPLIT}])
    await agent.ok("app_split_names", idempotency_key="split-names")
    missing = await agent.rows("select count(*) from person where first_name is null or last_name is null")
    agent.expect(missing == [[0]], f"people left without a split name: {missing}")
    await agent.ship(
        [
            {"op": "alter_field", "entity": "person", "field": "first_name", "nullable": False},
            {"op": "alter_field", "entity": "person", "field": "last_name", "nullable": False},
            {"op": "replace_action", "action": ADD_PERSON},
            {"op": "replace_action", "action": DIRECTORY},
            {"op": "drop_action", "name": "split_names"},
            {"op": "drop_field", "entity": "person", "field": "full_name"},
        ],
        note="full_name split into first_name and last_name",
    )
