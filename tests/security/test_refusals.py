"""9. A deploy could break ``tools/list`` for everyone, permanently (an action parameter named ``ctx``).
10. Refusals were not audited (``check_sql``, argument validation), a tokenizer error escaped as
``internal``, and a refused call with 50 MB of arguments stored 50 MB in its audit row.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import build_server
from runtime.runtime import Runtime
from tests.mcp_server.helpers import call, code_of, error_of, ok, ship
from tests.runtime.conftest import BASE_OPERATIONS

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def session(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Client]]:
    runtime = Runtime.open(tmp_path / "app.duckdb")
    try:
        async with Client(build_server(runtime, agent="agent")) as client:
            await ship(client, BASE_OPERATIONS)
            yield runtime, client
    finally:
        runtime.close()


def action(name: str, *params: str) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": "text"} for p in params],
            "statements": [
                "insert into memo (id, body) values (100, " + " || ".join(f"${p}" for p in params) + ")"
                if params
                else "delete from memo where id = 100"
            ],
        },
    }


def refused_rows(runtime: Runtime) -> list[Any]:
    return [e for e in runtime.read_audit(limit=1000) if e.outcome == "refused"]


# ----------------------------------------------------------------------------- 9. tools/list stays up


@pytest.mark.parametrize("reserved", ["ctx", "idempotency_key", "class", "model_config", "json"])
async def test_reserved_parameter_names_are_refused_at_propose(tmp_path: Path, reserved: str) -> None:
    async with session(tmp_path) as (_, client):
        error = error_of(await client.call_tool("propose_change", {"operations": [action("note", reserved)]}))
        assert error["code"] == "spec.invalid"
        assert "reserved" in json.dumps(error)
        assert len((await client.list_tools()).tools) > 10  # the listing is intact


async def test_a_spec_whose_tools_cannot_be_built_fails_its_dry_run_not_the_tool_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tools.logic

    real = tools.logic.action_tool

    def fragile(spec: Any) -> Any:
        if spec.name == "fragile":
            raise ValueError("duplicate parameter name")
        return real(spec)

    monkeypatch.setattr(tools.logic, "action_tool", fragile)
    async with session(tmp_path) as (runtime, client):
        proposal = await call(client, "propose_change", operations=[action("fragile", "body")])
        report = await call(client, "dry_run", proposal_id=proposal["proposal_id"])
        assert not report["passed"]
        assert report["report"]["error"]["code"] == "spec.invalid"
        assert "fragile" in report["report"]["error"]["message"]
        assert runtime.current[1].action("fragile") is None
        assert len((await client.list_tools()).tools) > 10


async def test_a_committed_action_whose_tool_cannot_be_built_is_left_out_and_the_rest_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime.open(tmp_path / "app.duckdb")
    try:
        async with Client(build_server(runtime, agent="agent")) as client:
            await ship(client, [*BASE_OPERATIONS, action("fragile", "body"), action("sturdy")])
        import tools.logic

        real = tools.logic.action_tool
        monkeypatch.setattr(
            tools.logic,
            "action_tool",
            lambda spec: (
                (_ for _ in ()).throw(ValueError("broken")) if spec.name == "fragile" else real(spec)
            ),
        )
        async with Client(build_server(runtime, agent="agent")) as client:  # a server started afresh
            names = {t.name for t in (await client.list_tools()).tools}
            assert "app_sturdy" in names and "app_fragile" not in names
            assert "describe_app" in names
            ok(await client.call_tool("run_action", {"name": "fragile", "args": {"body": "x"}}))
    finally:
        runtime.close()


# ------------------------------------------------------------------------- 10. refusals are audited


async def test_check_sql_refusals_are_audited_with_their_code(tmp_path: Path) -> None:
    async with session(tmp_path) as (runtime, client):
        result = await call(client, "check_sql", sql="select * from _buttress.audit")
        assert result["ok"] is False
        rows = [e for e in refused_rows(runtime) if e.operation == "check_sql"]
    assert [e.error_code for e in rows] == ["sql.forbidden"]


async def test_invalid_arguments_are_refused_and_audited(tmp_path: Path) -> None:
    async with session(tmp_path) as (runtime, client):
        assert await code_of(client, "query", sql=12345) == "spec.invalid"
        assert await code_of(client, "propose_change", operations="not a list") == "spec.invalid"
        rows = refused_rows(runtime)
    assert {(e.operation, e.error_code) for e in rows} >= {
        ("query", "spec.invalid"),
        ("propose_change", "spec.invalid"),
    }


async def test_a_tokenizer_error_is_sql_parse_not_internal(tmp_path: Path) -> None:
    async with session(tmp_path) as (runtime, client):
        assert (
            await code_of(client, "query", sql="select id from memo where body = ''::\"U&'\"") == "sql.parse"
        )
        assert [e.error_code for e in refused_rows(runtime) if e.operation == "query"] == ["sql.parse"]


async def test_an_oversized_refused_call_stores_a_capped_audit_row(tmp_path: Path) -> None:
    async with session(tmp_path) as (runtime, client):
        huge = "select 1 -- " + "x" * 3_000_000
        assert await code_of(client, "query", sql=huge) == "limit.exceeded"
        row = [e for e in refused_rows(runtime) if e.operation == "query"][-1]
    stored = json.dumps(row.arguments)
    assert len(stored) < 20_000
    assert "3000012 characters" in stored and "sha256" in stored


async def test_an_unknown_tool_names_the_closest_ones_instead_of_telling_the_agent_to_escalate(
    tmp_path: Path,
) -> None:
    async with session(tmp_path) as (runtime, client):
        error = error_of(await client.call_tool("descibe_app", {}))
        assert error["code"] == "not_found"
        assert "describe_app" in error["hint"] and "operator" not in error["hint"]
        assert [e.operation for e in refused_rows(runtime)][-1] == "descibe_app"
