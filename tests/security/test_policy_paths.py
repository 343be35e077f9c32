"""8. One policy decision per request, whatever path reaches the same capability; protection that
follows the object and covers every operation that touches it.

Before: an agent limited to ``actions = ["book"]`` ran ``run_action(name="wipe")``; a role without
``read`` read ``buttress://audit/recent`` (and resource reads were not audited); with
``customer.email`` protected, ``drop_entity customer``, a rename then a drop, and indexes or unique
sets on the field were accepted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_server.server import build_server
from runtime.boundary.policy import Policy
from runtime.runtime import Runtime
from tests.mcp_server.helpers import code_of, ok
from tests.runtime.conftest import BASE_OPERATIONS, deploy, seed

pytestmark = pytest.mark.anyio

ACTIONS = [
    {
        "op": "add_action",
        "action": {
            "name": "book",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}],
            "statements": ["insert into tag (id, label) values ($id, 'booked')"],
        },
    },
    {"op": "add_action", "action": {"name": "wipe", "kind": "mutation", "statements": ["delete from tag"]}},
]

POLICY = {
    "open_to_any_agent": False,
    "roles": {"blind": ("query",), "writer": ("read", "run_actions")},
    "agents": {
        "booker": {"role": "developer", "actions": ["book"]},
        "blind": {"role": "blind"},
        "dev": {"role": "developer"},
    },
    "protected": {"fields": ["customer.email"]},
}


@asynccontextmanager
async def as_agent(tmp_path: Path, agent: str) -> AsyncIterator[tuple[Runtime, Client]]:
    from runtime.boundary.policy import DEFAULT_ROLES

    policy = Policy.model_validate({**POLICY, "roles": {**DEFAULT_ROLES, **POLICY["roles"]}})
    runtime = Runtime.open(tmp_path / f"{agent}.duckdb", policy=policy)
    deploy(runtime, [*BASE_OPERATIONS, *ACTIONS])
    seed(runtime)
    try:
        async with Client(build_server(runtime, agent=agent, policy=policy)) as client:
            yield runtime, client
    finally:
        runtime.close()


def refusals(runtime: Runtime, agent: str) -> list[tuple[str, str | None]]:
    return [
        (e.operation, e.error_code)
        for e in runtime.read_audit(limit=1000)
        if e.actor == agent and e.outcome == "refused"
    ]


async def test_an_agent_limited_to_some_actions_cannot_reach_others_through_run_action(
    tmp_path: Path,
) -> None:
    async with as_agent(tmp_path, "booker") as (runtime, client):
        names = {t.name for t in (await client.list_tools()).tools}
        assert "app_book" in names and "app_wipe" not in names
        assert await code_of(client, "app_wipe") == "policy.denied"
        assert await code_of(client, "run_action", name="wipe") == "policy.denied"
        ok(await client.call_tool("run_action", {"name": "book", "args": {"id": 9}}))
        assert runtime.query("select count(*) from tag").rows == [[3]]
        assert ("run_action", "policy.denied") in refusals(runtime, "booker")


async def test_a_role_without_read_reads_no_resource_and_no_prompt_and_is_audited(tmp_path: Path) -> None:
    async with as_agent(tmp_path, "blind") as (runtime, client):
        for uri in ("buttress://audit/recent", "buttress://spec/current", "buttress://versions/0"):
            with pytest.raises(MCPError, match=r"policy\.denied"):
                await client.read_resource(uri)
        with pytest.raises(MCPError, match=r"policy\.denied"):
            await client.get_prompt("safe_change", {"goal": "x"})
        ok(await client.call_tool("query", {"sql": "select count(*) from memo"}))  # its one capability
        denied = refusals(runtime, "blind")
    assert {op for op, code in denied if code == "policy.denied"} >= {
        "read_audit",
        "describe_app",
        "read_version",
        "prompt:safe_change",
    }


async def test_resource_reads_are_audited_under_the_reader(tmp_path: Path) -> None:
    async with as_agent(tmp_path, "dev") as (runtime, client):
        await client.read_resource("buttress://spec/current")
        await client.read_resource("buttress://versions/1")
        reads = [e.operation for e in runtime.read_audit(limit=100) if e.actor == "dev" and e.outcome == "ok"]
    assert reads[:2] == ["describe_app", "read_version"]


PROTECTED_CASES: list[tuple[str, list[dict[str, Any]]]] = [
    ("drop the entity", [{"op": "drop_entity", "entity": "customer"}]),
    (
        "rename the entity, then drop the field",
        [
            {"op": "rename_entity", "entity": "customer", "new_name": "client"},
            {"op": "drop_field", "entity": "client", "field": "email"},
        ],
    ),
    ("rename the entity", [{"op": "rename_entity", "entity": "customer", "new_name": "client"}]),
    (
        "rename the field",
        [{"op": "rename_field", "entity": "customer", "field": "email", "new_name": "mail"}],
    ),
    ("drop its unique set", [{"op": "drop_unique", "entity": "customer", "columns": ["email"]}]),
    (
        "index it",
        [{"op": "add_index", "entity": "customer", "index": {"name": "by_email", "columns": ["email"]}}],
    ),
    (
        "make it unique with another field",
        [{"op": "add_unique", "entity": "customer", "columns": ["email", "name"]}],
    ),
    (
        "alter it",
        [{"op": "alter_field", "entity": "customer", "field": "email", "type": "text", "nullable": False}],
    ),
]


@pytest.mark.parametrize(("label", "operations"), PROTECTED_CASES, ids=[c[0] for c in PROTECTED_CASES])
async def test_a_protected_field_is_refused_whatever_operation_touches_it(
    tmp_path: Path, label: str, operations: list[dict[str, Any]]
) -> None:
    async with as_agent(tmp_path, "dev") as (runtime, client):
        assert await code_of(client, "propose_change", operations=operations) == "policy.protected", label
        assert runtime.current[1].entity("customer") is not None


async def test_operations_beside_a_protected_field_are_still_allowed(tmp_path: Path) -> None:
    async with as_agent(tmp_path, "dev") as (_, client):
        ops = [
            {
                "op": "add_field",
                "entity": "customer",
                "field": {"name": "nick", "type": "text", "nullable": True},
            }
        ]
        ok(await client.call_tool("propose_change", {"operations": ops}))
