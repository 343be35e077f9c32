"""Every tool through an in-memory MCP client over a real DuckDB file: a success, and each error code
it can return, in the one structured error shape."""

from __future__ import annotations

from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]
import pytest
from mcp import Client
from mcp.types import ToolListChangedNotification
from pydantic import BaseModel

from mcp_server.demo import BOOKING, SAMPLE_SLOTS, SLOT
from mcp_server.errors import INTERNAL
from mcp_server.server import ButtressServer, build_server
from runtime.runtime import Runtime
from tests.mcp_server.helpers import booking_app, call, code_of, error_of, ok, ship
from tools.base import ToolContext, changing
from tools.registry import REGISTRY

pytestmark = pytest.mark.anyio

ISSUE_SLOT = {
    "op": "add_entity",
    "entity": {
        "name": "slot",
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "starts_at", "type": "timestamp"},
            {"name": "capacity", "type": "integer", "check": "capacity > 0"},
            {"name": "note", "type": "text", "nullable": True},
        ],
    },
}
ISSUE_CHANGES = [
    {"op": "add_field", "entity": "slot", "field": {"name": "room", "type": "text", "default": "main"}},
    {"op": "drop_field", "entity": "slot", "field": "note"},
    {"op": "rename_field", "entity": "slot", "field": "room", "new_name": "location"},
    {
        "op": "add_invariant",
        "invariant": {
            "name": "capacity_is_sane",
            "description": "no slot above 500 seats",
            "sql": "select id from slot where capacity > 500",
        },
    },
]


# ------------------------------------------------------------------------------------------- listing


async def test_every_tool_is_listed_with_schemas_and_annotations(server: ButtressServer) -> None:
    async with Client(server) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    for spec in REGISTRY:
        tool = listed[spec.name]
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.annotations is not None and tool.annotations.open_world_hint is False
        hints = (
            tool.annotations.read_only_hint,
            tool.annotations.destructive_hint,
            tool.annotations.idempotent_hint,
        )
        assert None not in hints, spec.name
        assert tool.description and tool.title


async def test_output_schemas_admit_both_results_and_errors(server: ButtressServer) -> None:
    failure = {"error": {"code": "not_found", "message": "m", "hint": "h", "details": {}}}
    async with Client(server) as client:
        schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
        described = await call(client, "describe_app")
    for name, schema in schemas.items():
        jsonschema.validate(failure, schema)
        if name != "demo_seed_rows":
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({"unexpected": True}, schema)
    jsonschema.validate(described, schemas["describe_app"])


async def test_propose_change_documents_every_operation_in_its_input_schema(server: ButtressServer) -> None:
    from runtime.schema.changes import OPERATION_NAMES

    async with Client(server) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "propose_change")
    documented = {
        d["properties"]["op"]["const"]
        for d in tool.input_schema["$defs"].values()
        if "op" in d.get("properties", {})
    }
    assert documented == set(OPERATION_NAMES)


# ---------------------------------------------------------------------------------------- read tools


async def test_describe_app_on_a_new_database_is_version_zero(server: ButtressServer) -> None:
    async with Client(server) as client:
        app = await call(client, "describe_app")
    assert app["version"] == 0
    assert app["entities"] == [] and app["pending_proposals"] == [] and app["drift"] == []


async def test_define_entity_dry_run_and_deploy_create_a_version(server: ButtressServer) -> None:
    async with Client(server) as client:
        proposal = await call(client, "define_entity", entity=ISSUE_SLOT["entity"], note="slots")
        assert proposal["base_version"] == 0 and proposal["steps"][0]["summary"]
        pending = (await call(client, "describe_app"))["pending_proposals"]
        assert [p["proposal_id"] for p in pending] == [proposal["proposal_id"]]
        report = await call(client, "dry_run", proposal_id=proposal["proposal_id"])
        assert report["passed"] and report["report"]["error"] is None
        deployed = await call(client, "deploy", proposal_id=proposal["proposal_id"])
        assert (deployed["previous_version"], deployed["version"]) == (0, 1)
        app = await call(client, "describe_app")
        history = await call(client, "list_versions")
        diff = await call(client, "diff_versions", from_version=0, to_version=1)
    assert [f["name"] for f in app["entities"][0]["fields"]] == ["id", "starts_at", "capacity", "note"]
    assert history["current"] == 1 and [v["number"] for v in history["versions"]] == [0, 1]
    assert history["versions"][1]["note"] == "slots"
    assert {"change": "added", "kind": "entity", "name": "slot"} in diff["changes"]


async def test_propose_change_accepts_the_documented_operation_shapes(server: ButtressServer) -> None:
    async with Client(server) as client:
        await ship(client, [ISSUE_SLOT])
        proposal = await call(client, "propose_change", operations=ISSUE_CHANGES, base_version=1)
        codes = {h["code"] for h in proposal["hazards"]}
        assert "data.drop_field" in codes  # renaming the field added in the same proposal breaks no reader
        assert (await call(client, "dry_run", proposal_id=proposal["proposal_id"]))["passed"]
        await call(client, "deploy", proposal_id=proposal["proposal_id"])
        app = await call(client, "describe_app")
    assert [f["name"] for f in app["entities"][0]["fields"]] == ["id", "starts_at", "capacity", "location"]
    assert [i["name"] for i in app["invariants"]] == ["capacity_is_sane"]


async def test_query_returns_columns_rows_and_truncation(server: ButtressServer) -> None:
    async with Client(server) as client:
        await booking_app(client)
        page = await call(client, "query", sql="select id, note from slot order by id", limit=2)
        one = await call(client, "query", sql="select capacity from slot where id = $id", params={"id": 3})
    assert page == {
        "columns": ["id", "note"],
        "rows": [[1, "morning yoga"], [2, None]],
        "row_count": 2,
        "truncated": True,
    }
    assert one["rows"] == [[20]] and one["truncated"] is False


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"sql": "select * from _buttress.audit"}, "sql.forbidden"),
        ({"sql": "delete from slot"}, "sql.forbidden"),
        ({"sql": "selec id fro slot"}, "sql.parse"),
        ({"sql": "select * from nope"}, "sql.unknown_table"),
        ({"sql": "select id from slot where id = $id"}, "sql.param"),
        ({"sql": "select id from slot", "limit": 100_000}, "limit.exceeded"),
        ({"sql": 42}, "spec.invalid"),
    ],
)
async def test_query_refusals_carry_their_codes(
    server: ButtressServer, arguments: dict[str, Any], code: str
) -> None:
    async with Client(server) as client:
        await booking_app(client, seeded=False)
        assert await code_of(client, "query", **arguments) == code


async def test_check_sql_analyses_without_running(server: ButtressServer) -> None:
    async with Client(server) as client:
        await booking_app(client, seeded=False)
        checked = await call(client, "check_sql", sql="select id, who from booking where slot_id = $slot")
        refused = await call(client, "check_sql", sql="select * from _buttress.versions")
        missing = await code_of(client, "check_sql", sql="select 1", proposal_id="p404")
    assert checked["ok"] and checked["reads"] == ["booking"] and checked["params"] == ["slot"]
    assert checked["output_columns"] == ["id", "who"]
    assert not refused["ok"] and refused["error"]["code"] == "sql.forbidden"
    assert missing == "not_found"


async def test_read_audit_filters_and_returns_only_newer_entries(server: ButtressServer) -> None:
    async with Client(server) as client:
        await booking_app(client, seeded=False)
        proposes = await call(client, "read_audit", operation="propose")
        everything = await call(client, "read_audit", limit=1000)
        await call(client, "query", sql="select count(*) from slot")
        newer = await call(client, "read_audit", after_seq=everything["last_seq"])
    assert [e["operation"] for e in proposes["entries"]] == ["propose"]
    assert proposes["entries"][0]["actor"] == "test-agent"
    assert {"propose", "dry_run", "deploy"} <= {e["operation"] for e in everything["entries"]}
    # the agent's own read_audit call is audited too, just before the query
    assert [e["operation"] for e in newer["entries"]] == ["read_audit", "query"]
    assert newer["last_seq"] == everything["last_seq"] + 2


async def test_diff_versions_of_an_unknown_version_is_not_found(server: ButtressServer) -> None:
    async with Client(server) as client:
        assert await code_of(client, "diff_versions", from_version=0, to_version=7) == "not_found"


# -------------------------------------------------------------------------------------- change tools


async def test_invalid_arguments_are_spec_invalid_naming_the_path(server: ButtressServer) -> None:
    bad = {
        "op": "add_entity",
        "entity": {"name": "t", "primary_key": ["id"], "fields": [{"name": "id", "type": "integr"}]},
    }
    async with Client(server) as client:
        error = error_of(await client.call_tool("propose_change", {"operations": [bad]}))
        unknown_op = error_of(await client.call_tool("propose_change", {"operations": [{"op": "explode"}]}))
        no_entity = error_of(await client.call_tool("define_entity", {}))
    assert error["code"] == "spec.invalid"
    assert error["details"]["problems"][0]["path"].startswith("operations[0]")
    assert "integr" in error["message"]
    assert unknown_op["code"] == "spec.invalid" and no_entity["code"] == "spec.invalid"
    assert no_entity["details"]["problems"] == [{"path": "entity", "problem": "Field required"}]


async def test_operations_the_runtime_rejects_are_spec_invalid(server: ButtressServer) -> None:
    missing_key = {"name": "t", "primary_key": ["x"], "fields": [{"name": "id", "type": "integer"}]}
    async with Client(server) as client:
        error = error_of(
            await client.call_tool(
                "propose_change", {"operations": [{"op": "drop_field", "entity": "nope", "field": "x"}]}
            )
        )
        assert await code_of(client, "define_entity", entity=missing_key) == "spec.invalid"
    assert error["code"] == "spec.invalid" and error["details"]["path"] == "operations[0]"


async def test_a_stale_base_version_is_refused(server: ButtressServer) -> None:
    async with Client(server) as client:
        early = await call(client, "define_entity", entity=SLOT)
        await ship(client, [{"op": "add_entity", "entity": {**SLOT, "name": "room"}}])
        assert (
            await code_of(client, "propose_change", operations=[ISSUE_SLOT], base_version=0)
            == "plan.stale_base"
        )
        assert await code_of(client, "dry_run", proposal_id=early["proposal_id"]) == "plan.stale_base"
        assert await code_of(client, "deploy", proposal_id=early["proposal_id"]) == "plan.stale_base"


async def test_deploy_needs_a_passing_dry_run_and_happens_once(server: ButtressServer) -> None:
    async with Client(server) as client:
        proposal = await call(client, "define_entity", entity=SLOT)
        assert await code_of(client, "deploy", proposal_id=proposal["proposal_id"]) == "deploy.not_dry_run"
        await call(client, "dry_run", proposal_id=proposal["proposal_id"])
        await call(client, "deploy", proposal_id=proposal["proposal_id"])
        assert (
            await code_of(client, "deploy", proposal_id=proposal["proposal_id"]) == "deploy.already_applied"
        )
        assert (
            await code_of(client, "dry_run", proposal_id=proposal["proposal_id"]) == "deploy.already_applied"
        )
        assert await code_of(client, "deploy", proposal_id="p404") == "not_found"
        assert await code_of(client, "dry_run", proposal_id="p404") == "not_found"


async def test_a_failing_dry_run_reports_why_and_blocks_deploy(server: ButtressServer) -> None:
    tighter = {"op": "alter_field", "entity": "slot", "field": "capacity", "check": "capacity > 15"}
    async with Client(server) as client:
        await booking_app(client)
        proposal = await call(client, "propose_change", operations=[tighter])
        report = await call(client, "dry_run", proposal_id=proposal["proposal_id"])
        refused = await code_of(client, "deploy", proposal_id=proposal["proposal_id"])
    assert report["passed"] is False
    assert report["report"]["error"]["code"] == "deploy.dry_run_failed"
    assert refused == "deploy.dry_run_failed"


async def test_rollback_restores_dropped_data(server: ButtressServer) -> None:
    change = [
        {"op": "drop_field", "entity": "slot", "field": "note"},
        {"op": "rename_field", "entity": "booking", "field": "who", "new_name": "guest"},
    ]
    async with Client(server) as client:
        await booking_app(client)
        assert await ship(client, change) == 2
        assert (await call(client, "query", sql="select * from slot"))["columns"] == [
            "id",
            "starts_at",
            "capacity",
        ]
        rolled = await call(client, "rollback")
        notes = await call(client, "query", sql="select note from slot order by id")
        who = await call(client, "query", sql="select who from booking order by id")
    assert (rolled["previous_version"], rolled["version"], rolled["restored_version"]) == (2, 3, 1)
    assert [row[0] for row in notes["rows"]] == [slot[3] for slot in SAMPLE_SLOTS]
    assert who["row_count"] == 4


async def test_rollback_refusals_carry_their_codes(server: ButtressServer) -> None:
    async with Client(server) as client:
        assert await code_of(client, "rollback") == "rollback.nothing_to_roll_back"
        await booking_app(client, seeded=False)
        assert await code_of(client, "rollback", to_version=5) == "rollback.not_ancestor"
        assert await code_of(client, "rollback", to_version=-1) == "spec.invalid"


async def test_rollback_that_cannot_hold_new_rows_is_not_lossless(server: ButtressServer) -> None:
    strict_slot = {**SLOT, "fields": [{**field, "nullable": False} for field in SLOT["fields"]]}
    async with Client(server) as client:
        await ship(
            client, [{"op": "add_entity", "entity": strict_slot}, {"op": "add_entity", "entity": BOOKING}]
        )
        await ship(client, [{"op": "alter_field", "entity": "slot", "field": "note", "nullable": True}])
        await call(client, "demo_seed_rows")  # slot 2 has a NULL note
        error = error_of(await client.call_tool("rollback", {}))
        version = (await call(client, "describe_app"))["version"]
    assert error["code"] == "rollback.not_lossless"
    assert error["details"]["rows"] and version == 2


async def test_an_unknown_tool_is_not_found(server: ButtressServer) -> None:
    async with Client(server) as client:
        error = error_of(await client.call_tool("drop_everything", {}))
    assert error["code"] == "not_found" and error["details"] == {"kind": "tool", "name": "drop_everything"}


class Nothing(BaseModel):
    value: int


async def explode(ctx: ToolContext) -> Nothing:
    """Fails with a secret."""
    raise RuntimeError("secret detail /etc/passwd")


async def misbuild(ctx: ToolContext) -> Nothing:
    """Builds an invalid result."""
    return Nothing.model_validate({"secret detail": 1})


@pytest.mark.parametrize("tool", [explode, misbuild])
async def test_unexpected_failures_are_internal_and_leak_nothing(runtime: Runtime, tool: Any) -> None:
    server = build_server(
        runtime, agent="test-agent", extra_tools=(changing(tool, "x", destructive=False, idempotent=True),)
    )
    async with Client(server) as client:
        result = await client.call_tool(tool.__name__, {})
    error = error_of(result)
    assert error["code"] == INTERNAL
    assert "secret" not in str(result.model_dump())


# ------------------------------------------------------------------------- progress and notifications


async def test_dry_run_deploy_and_rollback_report_progress(server: ButtressServer) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server) as client:
        proposal = await call(client, "define_entity", entity=SLOT)
        for tool, arguments in (
            ("dry_run", {"proposal_id": proposal["proposal_id"]}),
            ("deploy", {"proposal_id": proposal["proposal_id"]}),
            ("rollback", {}),
        ):
            seen.clear()
            ok(await client.call_tool(tool, arguments, progress_callback=on_progress))
            assert seen and seen[-1][0] == seen[-1][1], tool


async def test_deploy_and_rollback_announce_list_changed_to_legacy_clients(server: ButtressServer) -> None:
    notices: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            notices.append(message.method)

    async with Client(server, mode="legacy", message_handler=on_message) as client:
        capabilities = client.session.server_capabilities
        assert capabilities is not None and capabilities.tools is not None
        assert capabilities.tools.list_changed is True
        await booking_app(client, seeded=False)
        await call(client, "rollback")
        with anyio.fail_after(5):
            while len(notices) < 2:
                await anyio.sleep(0.01)
    assert notices == ["notifications/tools/list_changed"] * 2


async def test_deploy_announces_list_changed_to_listening_clients(server: ButtressServer) -> None:
    async with Client(server) as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as subscription:
            await booking_app(client, seeded=False)
            with anyio.fail_after(5):
                event = await subscription.__anext__()
    assert type(event).__name__ == "ToolsListChanged"


# ------------------------------------------------------------------------------- resources and prompt


async def test_resources_serve_specs_and_the_audit_log(server: ButtressServer) -> None:
    import json

    async with Client(server) as client:
        await booking_app(client, seeded=False)
        current = json.loads((await client.read_resource("buttress://spec/current")).contents[0].text)  # type: ignore[union-attr]
        first = json.loads((await client.read_resource("buttress://versions/0")).contents[0].text)  # type: ignore[union-attr]
        audit = json.loads((await client.read_resource("buttress://audit/recent")).contents[0].text)  # type: ignore[union-attr]
        templates = (await client.list_resource_templates()).resource_templates
        with pytest.raises(Exception, match="not_found"):
            await client.read_resource("buttress://versions/99")
    assert current["version"] == 1 and [e["name"] for e in current["spec"]["entities"]] == ["slot", "booking"]
    assert first["version"] == 0 and first["spec"]["entities"] == []
    # resource reads are audited like the tools: the two before the audit read show up in it
    assert [e["operation"] for e in audit][-3:] == ["deploy", "describe_app", "read_version"]
    assert [t.uri_template for t in templates] == [
        "buttress://versions/{number}",
        "buttress://runs/{run_id}",
        "buttress://proposals/{proposal_id}",
        "buttress://entities/{entity}",
        "buttress://actions/{action}",
        "buttress://workflows/{workflow}",
        "buttress://topics/{topic}",
    ]


async def test_safe_change_prompt_walks_through_the_lifecycle(server: ButtressServer) -> None:
    async with Client(server) as client:
        prompt = await client.get_prompt("safe_change", {"goal": "add a room field"})
    text = prompt.messages[0].content.text  # type: ignore[union-attr]
    steps = ["describe_app", "propose_change", "dry_run", "deploy", "query", "rollback", "add a room field"]
    assert all(step in text for step in steps)
    assert text.index("dry_run") < text.index("deploy(") < text.index("rollback")
