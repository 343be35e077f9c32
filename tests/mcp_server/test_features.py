"""MCP beyond tools, on both revisions the SDK serves: resource change notifications (subscribe on
2025-11-25, subscriptions/listen on 2026-07-28), completions, the logging level, progress, and the
approval offered by URL elicitation (fail-closed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import ResourceTemplateReference

from mcp_server.server import build_server
from runtime.boundary.policy import AgentPolicy, ApprovalPolicy, Policy
from runtime.runtime import Runtime
from tests.mcp_server.helpers import call, error_of, ship

pytestmark = pytest.mark.anyio

SLOT = {
    "op": "add_entity",
    "entity": {"name": "slot", "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
}
HOLD = {
    "op": "add_workflow",
    "workflow": {
        "name": "hold",
        "params": [{"name": "id", "type": "integer"}],
        "steps": [{"name": "wait", "kind": "wait", "signal": "go"}],
    },
}


@pytest.fixture
def runtime(tmp_path: Path) -> Any:
    rt = Runtime.open(tmp_path / "app.duckdb")
    yield rt
    rt.close()


LEGACY = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
"""The SDK's client marks what 2026-07-28 removed (resources/subscribe, logging) as deprecated."""


@LEGACY
async def test_a_handshake_era_client_hears_the_spec_resource_change_after_a_deploy(runtime: Runtime) -> None:
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", "") == "notifications/resources/updated":
            updates.append(str(root.params.uri))

    server = build_server(runtime, agent="local")
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource("buttress://spec/current")
        await ship(client, [SLOT])
        with anyio.fail_after(10):
            while "buttress://spec/current" not in updates:
                await anyio.sleep(0.02)
        await client.unsubscribe_resource("buttress://spec/current")
        updates.clear()
        await ship(
            client,
            [
                {
                    "op": "add_field",
                    "entity": "slot",
                    "field": {"name": "n", "type": "integer", "nullable": True},
                }
            ],
        )
        await anyio.sleep(0.3)
    assert updates == []


@LEGACY
async def test_a_caller_that_may_not_read_may_not_subscribe_and_the_refusal_is_audited(
    tmp_path: Path,
) -> None:
    policy = Policy(open_to_any_agent=False, agents={"local": AgentPolicy(role="developer")})
    opened = Runtime.open(tmp_path / "app.duckdb", policy=policy)
    try:
        server = build_server(opened, agent="stranger", policy=policy)
        async with Client(server, mode="legacy") as client:
            with pytest.raises(Exception, match=r"policy\.denied"):
                await client.subscribe_resource("buttress://spec/current")
            await anyio.sleep(0.3)  # nobody listens: the run watcher reads nothing, as nobody
        refused = [(e.actor, e.operation, e.error_code) for e in opened.read_audit(limit=10)]
    finally:
        opened.close()
    assert refused == [("stranger", "resources/subscribe", "policy.denied")]


async def test_a_2026_client_hears_a_deploy_and_a_run_through_subscriptions_listen(runtime: Runtime) -> None:
    server = build_server(runtime, agent="local")
    runtime.start_scheduler()
    async with Client(server) as client:
        await ship(client, [SLOT, HOLD])
        run = await call(client, "start_workflow", workflow="hold", args={"id": 1}, run_id="r1")
        uri = f"buttress://runs/{run['run_id']}"
        async with client.listen(resource_subscriptions=["buttress://spec/current", uri]) as stream:
            await ship(
                client,
                [
                    {
                        "op": "add_field",
                        "entity": "slot",
                        "field": {"name": "n", "type": "integer", "nullable": True},
                    }
                ],
            )
            seen: set[str] = set()
            with anyio.fail_after(10):
                async for event in stream:
                    seen.add(str(getattr(event, "uri", "")))
                    if "buttress://spec/current" in seen:
                        break
            await call(client, "signal_run", run_id="r1", name="go")
            heard: list[str] = []  # the run is heard each time it moves: running, then completed
            with anyio.fail_after(10):
                async for event in stream:
                    if str(getattr(event, "uri", "")) == uri:
                        body = await client.read_resource(uri)
                        heard.append(json.loads(body.contents[0].text)["status"])  # type: ignore[union-attr]
                        if heard[-1] == "completed":
                            break
    assert heard[-1] == "completed"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_completions_offer_versions_proposals_runs_and_names(runtime: Runtime, mode: str) -> None:
    server = build_server(runtime, agent="local")
    async with Client(server, mode=mode) as client:  # type: ignore[arg-type]
        await ship(client, [SLOT, HOLD])
        proposal = await call(client, "propose_change", operations=[{"op": "drop_workflow", "name": "hold"}])
        await call(client, "start_workflow", workflow="hold", args={"id": 1}, run_id="order-7")

        async def complete(template: str, name: str, value: str) -> list[str]:
            result = await client.complete(
                ResourceTemplateReference(type="ref/resource", uri=template), {"name": name, "value": value}
            )
            return list(result.completion.values)

        assert await complete("buttress://versions/{number}", "number", "") == ["1", "0"]
        assert (await complete("buttress://proposals/{proposal_id}", "proposal_id", "p"))[0] == proposal[
            "proposal_id"
        ]
        assert await complete("buttress://runs/{run_id}", "run_id", "order") == ["order-7"]
        assert await complete("buttress://entities/{entity}", "entity", "s") == ["slot"]
        assert await complete("buttress://workflows/{workflow}", "workflow", "") == ["hold"]
        slot = json.loads((await client.read_resource("buttress://entities/slot")).contents[0].text)  # type: ignore[union-attr]
        assert slot["name"] == "slot"


@LEGACY
async def test_logging_level_is_served_where_the_revision_still_has_it(runtime: Runtime) -> None:
    server = build_server(runtime, agent="local")
    async with Client(server, mode="legacy") as legacy:
        await legacy.set_logging_level("info")
    async with Client(server) as modern:
        with pytest.raises(Exception, match=r"Method not found|2026-07-28"):
            await modern.set_logging_level("info")


async def test_a_waiting_deploy_offers_the_control_room_by_url_and_still_waits_for_the_operator(
    tmp_path: Path,
) -> None:
    policy = Policy(approvals=ApprovalPolicy(severity="high", elicitation=True))
    rt = Runtime.open(tmp_path / "app.duckdb", policy=policy)
    folder = tmp_path / ".buttress"
    folder.mkdir(exist_ok=True)
    (folder / "ui.json").write_text(json.dumps({"base": "http://127.0.0.1:8766", "pid": 1}))
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> Any:
        from mcp.types import ElicitResult

        asked.append(str(getattr(params, "url", "")))
        return ElicitResult(action="accept")

    try:
        server = build_server(rt, agent="local", policy=policy)
        async with Client(server, mode="legacy", elicitation_callback=on_elicit) as client:
            await ship(client, [SLOT, {"op": "add_entity", "entity": {**SLOT["entity"], "name": "tag"}}])
            with rt.engine.transaction() as tx:
                tx.execute("INSERT INTO tag VALUES (1)")
            proposal = await call(
                client, "propose_change", operations=[{"op": "drop_entity", "entity": "tag"}]
            )
            await call(client, "dry_run", proposal_id=proposal["proposal_id"])
            refused = error_of(await client.call_tool("deploy", {"proposal_id": proposal["proposal_id"]}))
        assert refused["code"] == "deploy.needs_approval"
        request = refused["details"]["approval_request"]
        assert asked == [f"http://127.0.0.1:8766/approvals#{request}"]
        assert rt.approval_requests()[0].status == "pending"  # the client's accept approved nothing
    finally:
        rt.close()
