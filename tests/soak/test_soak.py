"""The soak: several agents transfer money between accounts over streamable HTTP and over stdio, each call
with an idempotency key it retries until it has an answer, while the project's owner is SIGKILLed again
and again (the daemon, or the HTTP server when it owns the project: it is restarted, as a supervisor
would). An idempotency-key ledger checks the end: no transfer lost, none applied twice, the money
conserved, the audit chain verified — and the owner was never an agent's stdio session.

A long trial, not in the default run: ``BUTTRESS_SOAK_S=180 pytest tests/soak -s`` (seconds of load;
``BUTTRESS_SOAK_CLIENTS`` clients of each kind, default 4).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_server.channel import owner_status, socket_path
from mcp_server.project import Project, init
from runtime.boundary.policy import Limits
from runtime.errors import ButtressError
from tests.daemons import alive, daemons_under
from tests.mcp_server.helpers import call, configure, ship, source_env
from tests.mcp_server.test_http import free_port

SECONDS = float(os.environ.get("BUTTRESS_SOAK_S") or 0)
CLIENTS = int(os.environ.get("BUTTRESS_SOAK_CLIENTS") or 4)
ACCOUNTS = 20
OPENING = 1000

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not SECONDS, reason="the soak is a long trial: set BUTTRESS_SOAK_S"),
    pytest.mark.timeout(int(SECONDS) + 900),
]

BANK: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "account",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "balance", "type": "integer"}],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "ledger",
            "primary_key": ["key"],
            "fields": [
                {"name": "key", "type": "text"},
                {"name": "src", "type": "integer"},
                {"name": "dst", "type": "integer"},
                {"name": "amount", "type": "integer"},
            ],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {"name": "no_overdraft", "sql": "select id from account where balance < 0"},
    },
    {
        "op": "add_action",
        "action": {
            "name": "open_account",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "balance", "type": "integer"}],
            "statements": ["insert into account (id, balance) values ($id, $balance)"],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "transfer",
            "kind": "mutation",
            "params": [
                {"name": "key", "type": "text"},
                {"name": "src", "type": "integer"},
                {"name": "dst", "type": "integer"},
                {"name": "amount", "type": "integer"},
            ],
            "statements": [
                "update account set balance = balance - $amount where id = $src",
                "update account set balance = balance + $amount where id = $dst",
                "insert into ledger (key, src, dst, amount) values ($key, $src, $dst, $amount)",
            ],
        },
    },
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Tally:
    """What the clients saw: each key's definitive answer, and how hard it was to get."""

    applied: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # key -> (src, dst, amount)
    refused: dict[str, str] = field(default_factory=dict)  # key -> code (an overdraft, say)
    calls: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    owners: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    stdio_pids: set[tuple[int, int]] = field(default_factory=set)
    owner_pids: set[tuple[int, int]] = field(default_factory=set)
    """Processes as (pid, start time): a pid the system reuses later is another process."""


DEFINITIVE = {"invariant.violated", "action.constraint_violated"}
"""Answers that settle a transfer without applying it; every other error is retried with the same key."""


async def transfer(client: Client, tally: Tally, key: str, src: int, dst: int, amount: int) -> bool:
    """One attempt; True once the key has a definitive answer."""
    tally.calls += 1
    result = await client.call_tool(
        "app_transfer", {"key": key, "src": src, "dst": dst, "amount": amount, "idempotency_key": key}
    )
    content = result.structured_content or {}
    if not result.is_error:
        tally.applied[key] = (src, dst, amount)
        tally.replayed += bool(content.get("replayed"))
        return True
    text = result.content[0].text if result.content and hasattr(result.content[0], "text") else ""
    code = str(content.get("error", {}).get("code") or f"unstructured: {text[:100]}")
    if code in DEFINITIVE:
        tally.refused[key] = code
        return True
    tally.retries[code] += 1
    return False


async def work(name: str, connect: Any, tally: Tally, deadline: float) -> None:
    """One agent: transfers with fresh keys until the deadline, each retried with its key until it has a
    definitive answer (over the same session while it lives; a new one when its server went away)."""
    rng = random.Random(name)
    count = 0

    def fresh() -> tuple[str, int, int, int] | None:
        nonlocal count
        if time.monotonic() >= deadline:
            return None
        count += 1
        src, dst = rng.sample(range(ACCOUNTS), 2)
        return f"{name}-{count}", src, dst, rng.randint(1, 60)

    pending = fresh()
    while pending is not None:
        try:
            async with connect() as client:
                while pending is not None:
                    if await transfer(client, tally, *pending):
                        pending = fresh()
                    else:
                        await anyio.sleep(0.1)
        except Exception as error:  # the session's server went away (the HTTP server killed): reconnect
            tally.retries[type(error).__name__] += 1
            await anyio.sleep(0.3)


@dataclass
class Http:
    """``buttress serve --http``: the operator's long-lived server, restarted when killed."""

    project: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        serve_http = [sys.executable, "-m", "mcp_server", "serve", "--project", str(self.project), "--http"]
        log = (self.project / ".buttress" / "http.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [*serve_http, "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **source_env()},
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


async def watch_and_kill(project: Path, http: Http, tally: Tally, deadline: float) -> None:
    """Every few seconds: note who owns the project, then SIGKILL it (restart the HTTP server if it was)."""
    rng = random.Random(7)
    while time.monotonic() < deadline:
        await anyio.sleep(rng.uniform(2.0, 6.0))
        try:
            owner = (
                await anyio.to_thread.run_sync(lambda: owner_status(socket_path(project / "app.duckdb")))
            )["owner"]
        except ButtressError:
            continue  # between owners
        tally.owners[owner["kind"]] += 1
        identity = process_identity(int(owner["pid"]))
        if identity is not None:
            tally.owner_pids.add(identity)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(owner["pid"]), signal.SIGKILL)
        tally.kills[owner["kind"]] += 1
        if http.process is not None and owner["pid"] == http.process.pid:
            http.process.wait(20)
            http.start()


async def test_transfers_over_http_and_stdio_survive_owner_kills_with_nothing_lost_or_doubled(
    tmp_path: Path,
) -> None:
    root = init(tmp_path / "bank", agent="teller").root
    tokens = {f"web{i}": hashlib.sha256(f"soak-{i}".encode()).hexdigest() for i in range(CLIENTS)}
    configure(
        root,
        agents={
            "teller": {"role": "developer"},
            **{a: {"role": "operator", "token_sha256": d} for a, d in tokens.items()},
        },
        approvals={"severity": "none"},
    )
    tally = Tally()
    http = Http(root)
    stdio = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "serve", "--project", str(root), "--agent", "teller"],
        env=source_env(),
    )
    try:
        http.start()  # the operator's server starts first: it owns the project until it is first killed
        with anyio.fail_after(60):
            while await anyio.to_thread.run_sync(lambda: kind_of_owner(root)) != "http":
                await anyio.sleep(0.1)
        async with Client(stdio) as setup:
            await ship(setup, BANK)
            for account in range(ACCOUNTS):
                await call(setup, "app_open_account", id=account, balance=OPENING)
        deadline = time.monotonic() + SECONDS

        def over_http(index: int) -> Any:
            @contextlib.asynccontextmanager
            async def connect() -> AsyncIterator[Client]:
                headers = {"Authorization": f"Bearer soak-{index}"}
                async with (
                    httpx2.AsyncClient(headers=headers, timeout=120) as session,
                    Client(
                        streamable_http_client(f"http://127.0.0.1:{http.port}/mcp", http_client=session)
                    ) as client,
                ):
                    yield client

            return connect

        def over_stdio() -> Any:
            @contextlib.asynccontextmanager
            async def connect() -> AsyncIterator[Client]:
                async with Client(stdio) as client:
                    yield client

            return connect

        async with anyio.create_task_group() as tasks:
            for index in range(CLIENTS):
                tasks.start_soon(work, f"web{index}", over_http(index), tally, deadline)
                tasks.start_soon(work, f"agent{index}", over_stdio(), tally, deadline)
            tasks.start_soon(watch_and_kill, root, http, tally, deadline)
            tasks.start_soon(note_stdio_serves, root, tally, deadline)

        async with Client(stdio) as final:  # a replay of every applied key changes nothing
            for key, (src, dst, amount) in list(tally.applied.items())[:200]:
                again = await call(
                    final, "app_transfer", key=key, src=src, dst=dst, amount=amount, idempotency_key=key
                )
                assert again["replayed"], key
    finally:
        http.stop()
        for pid in daemons_under(root):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while daemons_under(root) and time.monotonic() < deadline:
            time.sleep(0.05)

    project = Project.load(root)
    runtime = project.open(project.policy().model_copy(update={"limits": Limits(max_rows=1_000_000)}))
    try:
        ledger = {
            row[0]: (row[1], row[2], row[3])
            for row in runtime.query("select * from ledger", limit=1_000_000).rows
        }
        balances = dict(runtime.query("select id, balance from account order by id").rows)
        verified = runtime.verify_audit()
    finally:
        runtime.close()

    lost = set(tally.applied) - set(ledger)
    unknown = set(ledger) - set(tally.applied)  # applied, though the client was never told: also wrong
    assert not lost and not unknown, (sorted(lost)[:10], sorted(unknown)[:10])
    assert ledger == tally.applied  # each key applied once, as asked (the key is the ledger's primary key)
    assert not set(tally.refused) & set(ledger)
    expected = {account: OPENING for account in range(ACCOUNTS)}
    for src, dst, amount in ledger.values():
        expected[src] -= amount
        expected[dst] += amount
    assert balances == expected  # each transfer moved its money exactly once
    assert sum(balances.values()) == ACCOUNTS * OPENING  # money conserved
    assert verified.ok, verified
    assert sum(tally.kills.values()) >= 3
    assert set(tally.owners) <= {"daemon", "http"} and not tally.owner_pids & tally.stdio_pids
    print(
        f"\nsoak {SECONDS:g} s, {CLIENTS} HTTP + {CLIENTS} stdio clients: {tally.calls} calls, "
        f"{len(tally.applied)} transfers applied ({tally.replayed} answered by replay), "
        f"{len(tally.refused)} refused as overdrafts; retries {dict(tally.retries)}; owners seen "
        f"{dict(tally.owners)}, killed {dict(tally.kills)}; lost 0, applied twice 0, money conserved, "
        f"audit {verified.entries} entries verified"
    )


def process_identity(pid: int) -> tuple[int, int] | None:
    """``pid`` with its start time (clock ticks since boot, ``/proc/PID/stat`` field 22), which tells a
    process from a later one the system gave the same pid; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            after_name = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return pid, int(after_name[19])


def kind_of_owner(root: Path) -> str | None:
    try:
        return str(owner_status(socket_path(root / "app.duckdb"))["owner"]["kind"])
    except ButtressError:
        return None


async def note_stdio_serves(root: Path, tally: Tally, deadline: float) -> None:
    """The pids of the agents' stdio serves (to show none of them ever owned the project)."""
    marker = f"serve --project {root} --agent teller".encode()
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
                    identity = process_identity(int(entry))
                    if marker in handle.read().replace(b"\0", b" ") and alive(int(entry)) and identity:
                        tally.stdio_pids.add(identity)
        await anyio.sleep(1.0)
