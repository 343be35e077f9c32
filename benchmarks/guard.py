"""What the SQL guard adds to a query: ``Runtime.query`` against raw DuckDB running the same SELECT, same run.

Run: python benchmarks/guard.py [--rows N] [--iterations K]
Prints per-query medians for raw DuckDB, the runtime without read auditing, and the runtime with
every read audited (the server default), with ratios. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
        rt = Runtime.open(Path(tmp) / "app.duckdb", audit_reads=False)
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
        raw.close()
        rt.close()


if __name__ == "__main__":
    main()
