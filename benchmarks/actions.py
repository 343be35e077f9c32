"""A three-statement mutation (read, insert, update): the runtime against raw DuckDB running the same
statements in its own transaction, and through an in-memory MCP client; p50/p99 latencies; throughput
with 8 concurrent callers. Same run, same machine.

Run: python benchmarks/actions.py [--calls N]
Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.runtime import Runtime

STATEMENTS = [
    "select balance from account where id = $account",
    "insert into ledger (account, amount) values ($account, $amount)",
    "update account set balance = balance + $amount where id = $account",
]
OPS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "account",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "balance", "type": "bigint"}],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "ledger",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "bigint", "default": {"expr": "autoincrement"}},
                {"name": "account", "type": "integer"},
                {"name": "amount", "type": "bigint"},
            ],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_overdraft",
            "description": "balances stay >= 0",
            "sql": "select id from account where balance < 0",
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "credit",
            "kind": "mutation",
            "params": [{"name": "account", "type": "integer"}, {"name": "amount", "type": "bigint"}],
            "statements": STATEMENTS,
        },
    },
]
ACCOUNTS = 100


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure(call: Callable[[int], object], calls: int) -> list[float]:
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def raw_setup(path: Path) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect(str(path))
    db.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)")
    db.execute("CREATE SEQUENCE ledger_seq")
    db.execute(
        "CREATE TABLE ledger (id BIGINT PRIMARY KEY DEFAULT nextval('ledger_seq'), account INTEGER NOT NULL, "
        "amount BIGINT NOT NULL)"
    )
    db.execute(f"INSERT INTO account SELECT range, 1000 FROM range({ACCOUNTS})")
    return db


def raw_call(db: duckdb.DuckDBPyConnection, i: int) -> None:
    params = {"account": i % ACCOUNTS, "amount": 1}
    db.execute("BEGIN")
    db.execute(STATEMENTS[0], {"account": params["account"]}).fetchall()
    db.execute(STATEMENTS[1], params).fetchall()
    db.execute(STATEMENTS[2], params).fetchall()
    db.execute("SELECT id FROM account WHERE balance < 0 LIMIT 5").fetchall()
    db.execute("COMMIT")


def runtime_setup(path: Path) -> Runtime:
    rt = Runtime.open(path, audit_reads=False)
    proposal = rt.propose(OPS)
    rt.dry_run(proposal.proposal_id)
    rt.deploy(proposal.proposal_id)
    with rt.engine.transaction() as tx:
        tx.execute(f"INSERT INTO account SELECT range, 1000 FROM range({ACCOUNTS})")
    return rt


def concurrent_throughput(rt: Runtime, callers: int, per_caller: int) -> float:
    def work(n: int) -> None:
        for i in range(per_caller):
            rt.run_action("credit", {"account": (n * per_caller + i) % ACCOUNTS, "amount": 1})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return callers * per_caller / (time.perf_counter() - started)


def mcp_samples(rt: Runtime, calls: int) -> list[float] | None:
    try:
        import anyio
        from mcp import Client

        from mcp_server.server import build_server
    except ImportError:
        return None
    server = build_server(rt, agent="bench")
    samples: list[float] = []

    async def run() -> None:
        async with Client(server) as client:
            for i in range(calls):
                started = time.perf_counter()
                result = await client.call_tool("app_credit", {"account": i % ACCOUNTS, "amount": 1})
                assert not result.is_error, result
                samples.append((time.perf_counter() - started) * 1000)

    anyio.run(run)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = raw_setup(Path(tmp) / "raw.duckdb")
        raw = measure(lambda i: raw_call(db, i), args.calls)
        db.close()
        rt = runtime_setup(Path(tmp) / "app.duckdb")
        runtime = measure(
            lambda i: rt.run_action("credit", {"account": i % ACCOUNTS, "amount": 1}), args.calls
        )
        via_mcp = mcp_samples(rt, args.calls // 2)
        throughput = concurrent_throughput(rt, 8, args.calls // 8)
        total = rt.query("select sum(balance) - 1000 * count(*) from account").rows[0][0]
        rt.close()
    r50, r99 = percentiles(raw)
    b50, b99 = percentiles(runtime)
    print(f"three-statement mutation + invariant check, {args.calls} sequential calls (ms)")
    print(f"{'path':<22}{'p50':>8}{'p99':>8}{'ratio p50':>11}")
    print(f"{'raw DuckDB':<22}{r50:>8.3f}{r99:>8.3f}{1:>11.2f}")
    print(f"{'runtime.run_action':<22}{b50:>8.3f}{b99:>8.3f}{b50 / r50:>11.2f}")
    if via_mcp is not None:
        m50, m99 = percentiles(via_mcp)
        print(f"{'in-memory MCP client':<22}{m50:>8.3f}{m99:>8.3f}{m50 / r50:>11.2f}")
    print(f"8 concurrent callers: {throughput:,.0f} mutations/s (credits applied: {total})")


if __name__ == "__main__":
    main()
