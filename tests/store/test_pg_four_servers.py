"""Four `buttress serve --http` processes (two by default) on one PostgreSQL database
(engine-specific: PostgreSQL), each with its own project directory, as four hosts would run them.
Agents book slots through all of them at once and no slot is ever overbooked; one idempotency key
sent to every server at once books once and replays the rest; transfers through every server conserve
the total and never overdraw; messages published on every server are each delivered once, none
skipped; the audit log is one verified chain afterwards.

``BUTTRESS_PG_SERVE_BOOKINGS`` sets how many bookings are attempted (CI's long trial: 10,000).
"""

from __future__ import annotations

import os
import random
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_server.project import Project, init
from tests.mcp_server.helpers import call, serve_command, ship, source_env
from tests.mcp_server.test_http import client_for, free_port, wait_for_port, with_agents
from tests.runtime.test_actions import BOOKING
from tests.store.test_pg_runtime import MONEY, NOTED

pytestmark = pytest.mark.anyio

URL_ENV = "BUTTRESS_TEST_DATABASE_URL"
LONG = "BUTTRESS_PG_SERVE_BOOKINGS" in os.environ
SERVERS = 4 if LONG else 2
"""Four servers in the long trial; two by default (each is a process to start)."""
SLOTS = 50
BOOKINGS = int(os.environ.get("BUTTRESS_PG_SERVE_BOOKINGS", "64"))
CALLERS = 4
"""Concurrent callers per server."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(project: Path, env: dict[str, str]) -> AsyncIterator[str]:
    port = free_port()
    process = await anyio.open_process(
        serve_command(project, "--http", "--port", str(port)),
        env={**os.environ, **source_env(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_servers_on_one_database_never_overbook(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_dsn)
    projects = [init(tmp_path / f"host{n}", engine="postgres", url_env=URL_ENV).root for n in range(SERVERS)]
    tokens = [with_agents(project)["dev-agent"] for project in projects]
    capacity = max(1, BOOKINGS // (2 * SLOTS))  # half the attempts find a seat
    outcomes: Counter[str] = Counter()
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(p, {URL_ENV: pg_dsn})) for p in projects]
        clients = []
        for url, token in zip(urls, tokens, strict=True):
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
            )
            clients.append(await stack.enter_async_context(client_for(url, http)))
        assert await ship(clients[0], BOOKING) == 1
        for slot in range(SLOTS):
            await call(clients[1], "app_add_slot", id=slot, capacity=capacity)
        with anyio.fail_after(60):  # every server hears of the version
            for client in clients:
                while "app_book" not in {t.name for t in (await client.list_tools()).tools}:
                    await anyio.sleep(0.2)
        per_caller = BOOKINGS // (SERVERS * CALLERS)

        async def caller(client: object, n: int) -> None:
            for k in range(per_caller):
                result = await client.call_tool(  # type: ignore[attr-defined]
                    "app_book", {"slot_id": (n * 7 + k) % SLOTS, "who": f"c{n}-{k}"}
                )
                outcomes["ok" if not result.is_error else result.structured_content["error"]["code"]] += 1

        with anyio.fail_after(1800):
            async with anyio.create_task_group() as group:
                for s, client in enumerate(clients):
                    for c in range(CALLERS):
                        group.start_soon(caller, client, s * CALLERS + c)
        counts = (
            await call(
                clients[-1], "query", sql="select slot_id, count(*) as n from booking group by slot_id"
            )
        )["rows"]
        await one_key_on_every_server(clients)
        await money_moved_through_every_server(clients)
        await messages_published_on_every_server(clients)
    attempted = per_caller * SERVERS * CALLERS
    assert sum(outcomes.values()) == attempted
    assert set(outcomes) <= {"ok", "invariant.violated"}, outcomes
    assert max(n for _, n in counts) <= capacity
    assert sum(n for _, n in counts) == outcomes["ok"]  # every acknowledged booking, and only those
    runtime = Project.load(projects[-1]).open()
    try:
        assert runtime.verify_audit().ok
    finally:
        runtime.close()


async def tools_everywhere(clients: list[Any], tool: str) -> None:
    """Until every server has heard of the version that adds ``tool``."""
    with anyio.fail_after(60):
        for client in clients:
            while tool not in {t.name for t in (await client.list_tools()).tools}:
                await anyio.sleep(0.2)


async def one_key_on_every_server(clients: list[Any]) -> None:
    """The same booking with one idempotency key, sent to every server at once: one effect, the rest
    replays of it."""
    await call(clients[0], "app_add_slot", id=SLOTS, capacity=SERVERS)
    answers: list[dict[str, Any]] = []

    async def book(client: Any) -> None:
        answers.append(await call(client, "app_book", slot_id=SLOTS, who="once", idempotency_key="k-once"))

    async with anyio.create_task_group() as group:
        for client in clients:
            group.start_soon(book, client)
    assert sorted(a["replayed"] for a in answers) == [False] + [True] * (len(clients) - 1), answers
    counted = await call(
        clients[-1], "query", sql=f"select count(*) as n from booking where slot_id = {SLOTS}"
    )
    assert counted["rows"] == [[1]]


async def money_moved_through_every_server(clients: list[Any]) -> None:
    """Transfers through every server at once, many of which would overdraw: the total never changes
    and no balance goes below zero (each commits whole or not at all, write skew included)."""
    await ship(clients[0], MONEY)
    await tools_everywhere(clients, "app_transfer")
    for account in range(6):
        await call(clients[0], "app_open_account", id=account, balance=100)
    outcomes: Counter[str] = Counter()

    async def move(n: int, client: Any) -> None:
        rng = random.Random(n)
        for _ in range(20):
            source, target = rng.sample(range(6), 2)
            result = await client.call_tool(
                "app_transfer", {"source": source, "target": target, "amount": rng.randint(1, 80)}
            )
            outcomes["ok" if not result.is_error else result.structured_content["error"]["code"]] += 1

    async with anyio.create_task_group() as group:
        for n, client in enumerate(clients):
            group.start_soon(move, n, client)
    balances = (await call(clients[-1], "query", sql="select balance from account"))["rows"]
    assert sum(b for (b,) in balances) == 600 and min(b for (b,) in balances) >= 0
    assert set(outcomes) <= {"ok", "invariant.violated"} and outcomes["ok"], outcomes


async def messages_published_on_every_server(clients: list[Any]) -> None:
    """Every server publishes at once; the servers' schedulers, sharing the work through their leases,
    deliver each message to the subscribed action exactly once and skip none."""
    await ship(clients[0], NOTED)
    await tools_everywhere(clients, "app_note")
    per = 10

    async def produce(n: int, client: Any) -> None:
        for k in range(per):
            await call(client, "publish", topic="tags", payload={"tag": f"p{n}-{k}"})

    async with anyio.create_task_group() as group:
        for n, client in enumerate(clients):
            group.start_soon(produce, n, client)
    expected = per * len(clients)
    with anyio.fail_after(60):
        while (await call(clients[-1], "query", sql="select count(*) as n from seen"))["rows"] != [
            [expected]
        ]:
            await anyio.sleep(0.2)
    distinct = await call(clients[-1], "query", sql="select count(distinct tag) as n from seen")
    assert distinct["rows"] == [[expected]]
