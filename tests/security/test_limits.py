"""Work is bounded: time on every writer-lane operation, the per-mutation cost of each invariant, and
the time, bytes and memory of every query — and nothing stalls the other sessions meanwhile.

4. No time limit on dry-run, deploy and rollback; a stuck lane hung everyone.
5. A slow invariant passed dry-run, then denied every write it met.
6. Results and memory were unbounded (a 1 GB string, a 10 GB list).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from mcp_server.project import init
from mcp_server.server import build_server
from runtime.boundary.policy import Limits, Policy
from runtime.runtime import Runtime
from tests.mcp_server.helpers import call, configure, error_of, ok, serve_command, source_env
from tests.mcp_server.test_http import client_for, free_port, wait_for_port, with_agents

pytestmark = pytest.mark.anyio

SLOW = "select x from range(1000000000000) t(x) where hash(x) = 42"
ROOM = {
    "op": "add_entity",
    "entity": {
        "name": "room",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
    },
}
PUT = {
    "op": "add_action",
    "action": {
        "name": "put",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
        "statements": ["insert or replace into room (id, seats) values ($id, $seats)"],
    },
}


def slow_invariant(name: str = "slow") -> dict[str, Any]:
    return {"op": "add_invariant", "invariant": {"name": name, "description": "slow", "sql": SLOW}}


@asynccontextmanager
async def limited(tmp_path: Path, **limits: Any) -> AsyncIterator[tuple[Runtime, Client, Client]]:
    """A runtime with these limits, and two clients (two sessions) on one server over it."""
    policy = Policy(limits=Limits(**limits))
    runtime = Runtime.open(tmp_path / "app.duckdb", policy=policy)
    server = build_server(runtime, agent="agent", policy=policy)
    try:
        async with Client(server) as first, Client(server) as second:
            proposal = await call(first, "propose_change", operations=[ROOM, PUT])
            assert (await call(first, "dry_run", proposal_id=proposal["proposal_id"]))["passed"]
            await call(first, "deploy", proposal_id=proposal["proposal_id"])
            yield runtime, first, second
    finally:
        runtime.close()


def audited(runtime: Runtime, operation: str) -> list[str | None]:
    return [e.error_code for e in runtime.read_audit(limit=1000, operation=operation)]


# ---------------------------------------------------------------------------------- 4. time limits


async def test_a_dry_run_past_the_change_time_limit_is_interrupted_with_a_coded_audited_error(
    tmp_path: Path,
) -> None:
    async with limited(tmp_path, change_timeout_s=1.0, invariant_budget_ms=60_000) as (runtime, agent, _):
        proposal = await call(agent, "propose_change", operations=[slow_invariant()])
        started = time.monotonic()
        report = await call(agent, "dry_run", proposal_id=proposal["proposal_id"])
        took = time.monotonic() - started
        assert not report["passed"] and report["report"]["error"]["code"] == "limit.timeout"
        assert took < 1.0 + 3.0  # the limit plus a stated margin
        assert "limit.timeout" in audited(runtime, "dry_run")
        assert runtime.current[1].invariant("slow") is None


async def test_while_a_change_holds_the_lane_other_writers_get_engine_busy_and_readers_answer(
    tmp_path: Path,
) -> None:
    async with limited(tmp_path, change_timeout_s=4.0, invariant_budget_ms=60_000, lane_wait_s=0.5) as (
        runtime,
        agent,
        other,
    ):
        proposal = await call(agent, "propose_change", operations=[slow_invariant()])
        answers: dict[str, Any] = {}

        async def stuck_dry_run() -> None:
            answers["dry_run"] = await agent.call_tool("dry_run", {"proposal_id": proposal["proposal_id"]})

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stuck_dry_run)
            while not runtime.engine._lane.locked():
                await anyio.sleep(0.01)
            started = time.monotonic()
            write = await other.call_tool("app_put", {"id": 1, "seats": 3})
            answers["write_s"] = time.monotonic() - started
            started = time.monotonic()
            read = await other.call_tool("query", {"sql": "select count(*) from room"})
            answers["read_s"] = time.monotonic() - started
        assert error_of(write)["code"] == "engine.busy"
        assert answers["write_s"] < 0.5 + 1.0
        assert ok(read)["rows"] == [[0]] and answers["read_s"] < 1.0
        assert ok(answers["dry_run"])["report"]["error"]["code"] == "limit.timeout"
        assert "engine.busy" in [
            e.error_code for e in runtime.read_audit(limit=1000, operation="app_put")
        ] + [e.error_code for e in runtime.read_audit(limit=1000, operation="run_action")]


# ------------------------------------------------------------------------ 5. invariant cost budget


async def test_an_invariant_too_slow_for_a_mutation_is_refused_at_dry_run_with_its_measured_time(
    tmp_path: Path,
) -> None:
    async with limited(tmp_path, invariant_budget_ms=300) as (_, agent, _other):
        proposal = await call(agent, "propose_change", operations=[slow_invariant("heavy")])
        report = await call(agent, "dry_run", proposal_id=proposal["proposal_id"])
        assert not report["passed"]
        error = report["report"]["error"]
        assert error["code"] == "invariant.too_slow"
        assert error["details"]["invariant"] == "heavy" and error["details"]["budget_ms"] == 300
        assert error["details"]["hazard"]["code"] == "invariant.too_slow"
        assert "heavy" in error["details"]["hazard"]["message"]
        refused = await agent.call_tool("deploy", {"proposal_id": proposal["proposal_id"]})
        assert error_of(refused)["code"] == "deploy.dry_run_failed"
        # writes go on: nothing was deployed
        ok(await agent.call_tool("app_put", {"id": 1, "seats": 3}))


async def test_a_cheap_invariant_passes_and_the_report_shows_its_cost(tmp_path: Path) -> None:
    async with limited(tmp_path, invariant_budget_ms=300) as (_, agent, _other):
        cheap = {
            "op": "add_invariant",
            "invariant": {"name": "sane", "description": "d", "sql": "select id from room where seats < 0"},
        }
        proposal = await call(agent, "propose_change", operations=[cheap])
        report = await call(agent, "dry_run", proposal_id=proposal["proposal_id"])
        assert report["passed"]
        detail = next(c["detail"] for c in report["report"]["checks"] if c["name"] == "invariants")
        assert "sane" in detail and "budget 300 ms" in detail


# ------------------------------------------------------------------------- 6. results and memory

MEMORY_LIMIT_MB = 512
MEMORY_MARGIN_MB = 512
"""The stated margin: the interpreter, the MCP stack and the libraries (about 200 MB), plus at most
one result value being converted."""
TIME_LIMIT_S = 5.0
TIME_MARGIN_S = 4.0

HOSTILE = {
    "select repeat('x', 1000000000) as big": {"sql.forbidden"},
    "select list(x) from range(100000000) t(x)": {"limit.memory"},
    "with recursive r(s, n) as (select 'x', 0 union all select s || s, n + 1 from r where n < 31) "
    "select max(length(s)) from r": {"limit.memory"},
    "select count(*) from range(1000000000000) t(x) where hash(x) = 42": {"limit.timeout"},
    "select string_agg(x::varchar, ',') from range(3000000) t(x)": {"limit.result_bytes"},
    "select x, repeat('y', 1000) from range(100000) t(x)": set(),
}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
@pytest.mark.parametrize(
    "anyio_backend", ["asyncio"]
)  # the server is another process: one client loop is enough
async def test_hostile_queries_answer_in_time_with_codes_within_memory_while_another_session_is_served(
    tmp_path: Path,
) -> None:
    project = init(tmp_path / "project").root
    tokens = with_agents(project)
    configure(
        project, limits={"memory_limit_mb": MEMORY_LIMIT_MB, "threads": 2, "query_timeout_s": TIME_LIMIT_S}
    )
    port = free_port()
    command = serve_command(project, "--http", "--port", str(port))
    process = await anyio.open_process(
        command, env={**os.environ, **source_env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Authorization": f"Bearer {tokens['read-agent']}"}
    latencies: list[float] = []
    outcomes: dict[str, tuple[set[str], float]] = {}
    try:
        await wait_for_port(port, process)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as attacker_http,
            httpx2.AsyncClient(headers=headers, timeout=120) as bystander_http,
            client_for(url, attacker_http) as attacker,
            client_for(url, bystander_http) as bystander,
        ):
            done = anyio.Event()

            async def attack() -> None:
                for sql in HOSTILE:
                    started = time.monotonic()
                    result = await attacker.call_tool("query", {"sql": sql})
                    took = time.monotonic() - started
                    codes = {error_of(result)["code"]} if result.is_error else set()
                    outcomes[sql] = (codes, took)
                done.set()

            async def keep_reading() -> None:
                while not done.is_set():
                    started = time.monotonic()
                    ok(await bystander.call_tool("query", {"sql": "select 1"}))
                    latencies.append(time.monotonic() - started)
                    await anyio.sleep(0.05)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(attack)
                tasks.start_soon(keep_reading)
        peak = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    for sql, expected in HOSTILE.items():
        codes, took = outcomes[sql]
        assert codes == expected, (sql, codes)
        assert took < TIME_LIMIT_S + TIME_MARGIN_S, (sql, took)
    assert latencies and max(latencies) < 1.0, sorted(latencies)[-5:]
    assert peak < MEMORY_LIMIT_MB + MEMORY_MARGIN_MB, peak
