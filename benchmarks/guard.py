"""What the SQL guard and the MCP read path add to a query, against raw DuckDB running the same
SELECT on a file of its own, same run.

Run: python benchmarks/guard.py [--rows N] [--iterations K]
Prints, per query, medians for raw DuckDB, the guard's analysis alone, ``Runtime.query`` without
read auditing, and with every read audited (the server default), with ratios. Then the ``query``
tool through an in-memory MCP client (the SDK's ``Client``: JSON-RPC, validation and both
content forms, no network) on results of 1, 100 and 2,000 rows: median and p90 latency, the time
added over raw DuckDB, and the ratio. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.boundary.policy import Limits
from runtime.results import QueryResult
from runtime.runtime import Runtime
from runtime.sql import sqlcheck

OPS = [
    {
        "op": "add_entity",
        "entity": {
            "name": "customer",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "name", "type": "text"},
                {"name": "region", "type": "text"},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "purchase",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "customer_id", "type": "integer", "references": "customer.id"},
                {"name": "total", "type": "double"},
            ],
        },
    },
]
FILL = [
    "INSERT INTO customer SELECT range, 'c' || range, CASE WHEN range % 2 = 0 THEN 'eu' ELSE 'us' END FROM range({n})",
    "INSERT INTO purchase SELECT range, range % {n}, range / 3.0 FROM range({n} * 5)",
]
QUERIES = {
    "point lookup": ("SELECT name FROM customer WHERE id = $id", {"id": 42}),
    "join + group": (
        "WITH spent AS (SELECT customer_id, sum(total) AS total FROM purchase GROUP BY customer_id) "
        "SELECT c.region, count(*) AS n, sum(s.total) AS total FROM customer c "
        "JOIN spent s ON s.customer_id = c.id WHERE c.region = $region GROUP BY c.region",
        {"region": "eu"},
    ),
}


def median_ms(fn: Callable[[], object], iterations: int) -> float:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime.open(Path(tmp) / "app.duckdb", audit_reads=False, limits=Limits(max_rows=5000))
        proposal = rt.propose(OPS)
        rt.dry_run(proposal.proposal_id)
        rt.deploy(proposal.proposal_id)
        with rt.engine.transaction() as tx:
            for statement in FILL:
                tx.execute(statement.format(n=args.rows))
        raw = duckdb.connect(str(Path(tmp) / "raw.duckdb"))
        raw.execute(
            "CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, region VARCHAR NOT NULL)"
        )
        raw.execute(
            "CREATE TABLE purchase (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customer (id), "
            "total DOUBLE NOT NULL)"
        )
        for statement in FILL:
            raw.execute(statement.format(n=args.rows))
        relations = rt.current[1].relations()
        print(f"{args.rows:,} customers, {args.rows * 5:,} purchases; median of {args.iterations} calls (ms)")
        print(f"{'query':<14}{'raw':>8}{'guard':>8}{'runtime':>9}{'ratio':>7}{'+audit':>9}{'ratio':>7}")
        for name, (sql, params) in QUERIES.items():
            raw_ms = median_ms(
                lambda sql=sql, params=params: raw.execute(sql, params).fetchmany(1001), args.iterations
            )
            guard_ms = median_ms(lambda sql=sql: sqlcheck.analyze_query(sql, relations), args.iterations)
            rt.audit_reads = False
            plain_ms = median_ms(lambda sql=sql, params=params: rt.query(sql, params), args.iterations)
            rt.audit_reads = True
            audited_ms = median_ms(lambda sql=sql, params=params: rt.query(sql, params), args.iterations)
            print(
                f"{name:<14}{raw_ms:>8.3f}{guard_ms:>8.3f}{plain_ms:>9.3f}{plain_ms / raw_ms:>7.2f}"
                f"{audited_ms:>9.3f}{audited_ms / raw_ms:>7.2f}"
            )
        print()
        mcp_read_path(rt, raw, args.iterations)
        raw.close()
        rt.close()


RESULT_SIZES = {
    "1 row": ("SELECT id, name, region FROM customer WHERE id = $id", {"id": 42}),
    "100 rows": ("SELECT id, customer_id, total FROM purchase WHERE id < $n ORDER BY id", {"n": 100}),
    "2,000 rows": ("SELECT id, customer_id, total FROM purchase WHERE id < $n ORDER BY id", {"n": 2000}),
}


def sdk_floor(rows: list[list[object]]) -> object:
    """A bare MCPServer whose one tool returns ``rows`` already converted and dumped: what the SDK
    alone costs to carry the result (its validation and serialisation passes), with no runtime."""
    from mcp.server.mcpserver import MCPServer
    from mcp.types import CallToolResult, TextContent
    from pydantic_core import to_json

    data = QueryResult(
        columns=["id", "customer_id", "total"], rows=rows, row_count=len(rows), truncated=False
    )
    dumped = data.model_dump(mode="json")
    text = to_json(dumped).decode()
    server = MCPServer("floor")

    @server.tool(structured_output=True)
    def rows_tool() -> QueryResult:
        """The rows."""
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=dumped)  # type: ignore[return-value]

    return server


def mcp_read_path(rt: Runtime, raw: duckdb.DuckDBPyConnection, iterations: int) -> None:
    """The query tool through an in-memory MCP client against raw DuckDB, by result size."""
    import anyio
    from mcp import Client

    from mcp_server.server import build_server

    rt.audit_reads = True  # what a server does
    server = build_server(rt, agent="bench")
    gc.freeze()  # as ``buttress serve`` does once loaded
    print(f"query tool through an in-memory MCP client, {iterations} calls (ms)")
    print("  floor: a bare MCPServer tool returning the same rows, already converted (the SDK's own cost)")
    print(f"{'result':<12}{'raw':>8}{'floor':>8}{'mcp p50':>9}{'mcp p90':>9}{'added':>8}{'ratio':>7}")

    async def timed(client: Any, name: str, arguments: dict[str, Any]) -> list[float]:
        samples: list[float] = []
        for i in range(iterations + 20):
            started = time.perf_counter()
            result = await client.call_tool(name, arguments)
            elapsed = (time.perf_counter() - started) * 1000
            assert not result.is_error, result
            if i >= 20:
                samples.append(elapsed)
        return sorted(samples)

    async def run() -> None:
        async with Client(server) as client:
            for name, (sql, params) in RESULT_SIZES.items():
                samples = await timed(client, "query", {"sql": sql, "params": params, "limit": 5000})
                expected = raw.execute(sql, params).fetchall()
                result = await client.call_tool("query", {"sql": sql, "params": params, "limit": 5000})
                assert result.structured_content is not None
                rows = result.structured_content["rows"]
                assert len(rows) == len(expected)
                async with Client(sdk_floor(rows)) as bare:
                    floor = statistics.median(await timed(bare, "rows_tool", {}))
                raw_ms = median_ms(
                    lambda sql=sql, params=params: raw.execute(sql, params).fetchall(), iterations
                )
                p50, p90 = statistics.median(samples), samples[int(len(samples) * 0.9)]
                print(
                    f"{name:<12}{raw_ms:>8.3f}{floor:>8.3f}{p50:>9.3f}{p90:>9.3f}{p50 - raw_ms:>8.3f}"
                    f"{p50 / raw_ms:>7.2f}"
                )

    anyio.run(run)


if __name__ == "__main__":
    main()
