"""Shape coherence and the workflow boundary as agents meet them: through a real ``buttress serve`` over
stdio (and a second agent's serve attached to it over the project's socket)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcp_server.project import init
from tests.fakes.provider import State, serve
from tests.mcp_server.helpers import call, code_of, configure, error_of, serve_command, ship, source_env

pytestmark = pytest.mark.anyio


def parameters(project: Path, agent: str) -> StdioServerParameters:
    command, *args = serve_command(project, "--agent", agent)
    return StdioServerParameters(command=command, args=args, env=source_env())


def entity(name: str, key: str, **fields: str) -> dict[str, Any]:
    return {
        "op": "add_entity",
        "entity": {
            "name": name,
            "primary_key": [key],
            "fields": [
                {"name": n, "type": t.rstrip("?"), **({"nullable": True} if t.endswith("?") else {})}
                for n, t in fields.items()
            ],
        },
    }


def mutation(name: str, params: dict[str, str], sql: str, **extra: Any) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": t} for p, t in params.items()],
            "statements": [sql],
            **extra,
        },
    }


def ref(path: str) -> dict[str, str]:
    return {"from": path}


async def settle(client: Client, run_id: str, wanted: set[str]) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            run = await call(client, "get_run", run_id=run_id)
            if run["status"] in wanted:
                return run
            await anyio.sleep(0.05)


@pytest.fixture
def provider() -> Iterator[tuple[str, State]]:
    state = State(seed=3, fail_rate=0.0, drop_rate=0.0, decline_over=1000)
    server = serve(0, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------- column order


async def test_a_positional_insert_keeps_every_value_in_its_column_across_a_drop_and_an_add(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "reviews", agent="claude_code").root
    configure(project, approvals={"severity": "none"})
    async with Client(parameters(project, "claude_code")) as client:
        await ship(
            client,
            [
                entity("review", "id", id="integer", author="text", body="text", title="text"),
                mutation(
                    "add_review",
                    {"id": "integer", "author": "text", "body": "text", "title": "text"},
                    "insert into review values ($id, $author, $body, $title)",
                ),
            ],
        )
        resource = await client.read_resource("buttress://spec/current")
        spec = json.loads(resource.contents[0].text)["spec"]  # type: ignore[union-attr]
        assert spec["actions"][0]["statements"] == [
            "insert into review (id, author, body, title) values ($id, $author, $body, $title)"
        ]
        refused = error_of(
            await client.call_tool(
                "propose_change", {"operations": [{"op": "drop_field", "entity": "review", "field": "body"}]}
            )
        )
        assert refused["code"] == "sql.unknown_column"
        assert [p["name"] for p in refused["details"]["problems"]] == ["add_review"]
        await ship(
            client,
            [
                {
                    "op": "add_field",
                    "entity": "review",
                    "field": {"name": "mood", "type": "text", "nullable": True},
                }
            ],
        )
        await call(client, "app_add_review", id=1, author="ada", body="B", title="T")
        rows = (await call(client, "query", sql="select author, body, title, mood from review"))["rows"]
    assert rows == [["ada", "B", "T", None]]


# ------------------------------------------------------------------------------- the checkout


def checkout(base: str, project: Path) -> list[dict[str, Any]]:
    """The checkout app's operations; configures its connectors (before the server starts)."""
    configure(
        project,
        approvals={"severity": "none"},
        connectors={"payments": {"url": f"{base}/charges"}, "refunds": {"url": f"{base}/refunds"}},
    )
    return [
        entity("stock", "sku", sku="text", qty="integer"),
        entity("purchase", "id", id="text", sku="text", charge="text"),
        mutation("reserve", {"sku": "text"}, "update stock set qty = qty - 1 where sku = $sku"),
        mutation("release", {"sku": "text"}, "update stock set qty = qty + 1 where sku = $sku"),
        mutation(
            "restock", {"sku": "text", "qty": "integer"}, "insert or replace into stock values ($sku, $qty)"
        ),
        mutation(
            "record",
            {"id": "text", "sku": "text", "charge": "text"},
            "insert into purchase values ($id, $sku, $charge)",
        ),
        {
            "op": "add_workflow",
            "workflow": {
                "name": "checkout",
                "params": [{"name": "order_id", "type": "text"}, {"name": "sku", "type": "text"}],
                "steps": [
                    {
                        "name": "reserve",
                        "kind": "action",
                        "action": "reserve",
                        "args": {"sku": ref("input.sku")},
                        "compensation": {"action": "release", "args": {"sku": ref("input.sku")}},
                    },
                    {
                        "name": "charge",
                        "kind": "effect",
                        "connector": "payments",
                        "args": {"customer": "c1", "amount": 5, "order": ref("input.order_id")},
                        "compensation": {"connector": "refunds", "args": {"charge": ref("steps.charge.id")}},
                    },
                    {"name": "confirm", "kind": "wait", "signal": "ship"},
                    {
                        "name": "record",
                        "kind": "action",
                        "action": "record",
                        "args": {
                            "id": ref("input.order_id"),
                            "sku": ref("input.sku"),
                            "charge": ref("steps.charge.id"),
                        },
                    },
                ],
            },
        },
    ]


async def test_a_field_added_under_a_running_checkout_never_leaves_a_charge_without_its_order(
    tmp_path: Path, provider: tuple[str, State]
) -> None:
    base, state = provider
    project = init(tmp_path / "shop", agent="claude_code").root
    operations = checkout(base, project)
    async with Client(parameters(project, "claude_code")) as client:
        await ship(client, operations)
        await call(client, "app_restock", sku="apple", qty=3)
        await call(
            client,
            "start_workflow",
            workflow="checkout",
            args={"order_id": "o1", "sku": "apple"},
            run_id="o1",
        )
        await settle(client, "o1", {"waiting"})
        assert len(state.charges) == 1
        # the record action fills purchase by position as written: a field added under the run keeps it whole
        await ship(
            client,
            [
                {
                    "op": "add_field",
                    "entity": "purchase",
                    "field": {"name": "note", "type": "text", "nullable": True},
                }
            ],
        )
        # and a field it fills cannot be dropped under it
        dropped = await client.call_tool(
            "propose_change", {"operations": [{"op": "drop_field", "entity": "purchase", "field": "sku"}]}
        )
        assert error_of(dropped)["details"]["problems"][0]["name"] == "record"
        await call(client, "signal_run", run_id="o1", name="ship")
        run = await settle(client, "o1", {"completed", "blocked", "failed", "compensated"})
        rows = (await call(client, "query", sql="select id, sku, charge, note from purchase"))["rows"]
    assert run["status"] == "completed"
    assert rows == [["o1", "apple", state.charges[0]["id"], None]]


async def test_a_run_pinned_before_a_rollback_publishes_on_the_topic_as_it_is_now(tmp_path: Path) -> None:
    project = init(tmp_path / "news", agent="claude_code").root
    configure(project, approvals={"severity": "none"})
    topic = {"name": "news", "external": True, "payload": [{"name": "who", "type": "text"}]}
    coupon = {**topic, "payload": [*topic["payload"], {"name": "coupon", "type": "text", "nullable": True}]}
    flow = {
        "name": "announce",
        "params": [{"name": "who", "type": "text"}],
        "steps": [
            {"name": "hold", "kind": "wait", "signal": "go"},
            {
                "name": "tell",
                "kind": "publish",
                "topic": "news",
                "args": {"who": ref("input.who"), "coupon": "HI"},
            },
        ],
    }
    async with Client(parameters(project, "claude_code")) as client:
        await ship(client, [{"op": "add_topic", "topic": topic}])
        await ship(
            client, [{"op": "replace_topic", "topic": coupon}, {"op": "add_workflow", "workflow": flow}]
        )
        await call(client, "start_workflow", workflow="announce", args={"who": "ada"}, run_id="a1")
        await settle(client, "a1", {"waiting"})
        back = await call(client, "rollback", to_version=1)
        await call(client, "signal_run", run_id="a1", name="go")
        run = await settle(client, "a1", {"completed", "failed", "blocked"})
        claimed = await call(client, "claim_messages", topic="news", consumer="mail")
    assert run["status"] == "completed"
    assert run["steps"][-1]["output"]["converted"]["dropped"] == ["coupon"]
    (message,) = claimed["messages"]
    assert message["payload"] == {"who": "ada"} and message["version"] == back["version"]


# ---------------------------------------------------------------------------------- two agents

BOUNDARY: list[dict[str, Any]] = [
    entity("log", "id", id="text", what="text"),
    mutation("noop", {"id": "text"}, "insert into log (id, what) values ($id, 'noop')"),
    mutation("secret_act", {"id": "text"}, "insert into log (id, what) values ($id || '-s', 'secret')"),
    {"op": "add_topic", "topic": {"name": "pings", "payload": [{"name": "id", "type": "text"}]}},
    {
        "op": "add_subscription",
        "subscription": {
            "name": "to_secret",
            "topic": "pings",
            "action": "secret_act",
            "args": {"id": ref("message.id")},
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "w_secret",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {"name": "go", "kind": "action", "action": "secret_act", "args": {"id": ref("input.id")}}
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "w_hold",
            "params": [{"name": "id", "type": "text"}],
            "steps": [
                {
                    "name": "go",
                    "kind": "action",
                    "action": "noop",
                    "args": {"id": ref("input.id")},
                    "compensation": {"action": "secret_act", "args": {"id": ref("input.id")}},
                },
                {"name": "hold", "kind": "wait", "signal": "go"},
            ],
        },
    },
]


async def test_an_attached_agent_cannot_reach_a_denied_action_through_workflows_messages_or_cancels(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "ops", agent="claude_code").root
    configure(
        project, approvals={"severity": "none"}, agents={"opbot": {"role": "operator", "actions": ["noop"]}}
    )
    async with Client(parameters(project, "claude_code")) as owner:
        await ship(owner, BOUNDARY)
        await call(owner, "start_workflow", workflow="w_hold", args={"id": "mine"}, run_id="mine")
        await settle(owner, "mine", {"waiting"})
        async with Client(parameters(project, "opbot")) as opbot:
            assert await code_of(opbot, "run_action", name="secret_act", args={"id": "a"}) == "policy.denied"
            assert (
                await code_of(opbot, "start_workflow", workflow="w_secret", args={"id": "b"})
                == "policy.denied"
            )
            assert await code_of(opbot, "publish", topic="pings", payload={"id": "c"}) == "policy.denied"
            cancel = error_of(await opbot.call_tool("cancel_run", {"run_id": "mine"}))
            assert cancel["code"] == "policy.denied" and cancel["details"]["started_by"] == "claude_code"
            await call(opbot, "run_action", name="noop", args={"id": "fine"})
        await anyio.sleep(0.3)  # the owner's scheduler would have delivered anything published
        rows = (await call(owner, "query", sql="select id, what from log order by id"))["rows"]
        cancelled = await call(owner, "cancel_run", run_id="mine")
    assert rows == [["fine", "noop"], ["mine", "noop"]]
    assert cancelled["status"] in {"compensating", "cancelled"}
