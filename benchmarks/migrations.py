"""Migration cost on a 1,000,000-row table: Buttress dry-run and deploy against raw DuckDB running the
equivalent SQL in one transaction, in the same run; and rollback of drop_field against the forward step.

Run: python benchmarks/migrations.py [--rows N] [--repeat K]
Prints one line per case with median times and ratios. Not a test: nothing here asserts a threshold.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.runtime import Runtime

ENTITY = {
    "op": "add_entity",
    "entity": {
        "name": "t",
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "a", "type": "integer"},
            {"name": "b", "type": "text"},
            {"name": "c", "type": "double"},
        ],
    },
}
CREATE = (
    'CREATE TABLE "t" ("id" INTEGER NOT NULL, "a" INTEGER NOT NULL, "b" VARCHAR NOT NULL, '
    '"c" DOUBLE NOT NULL, PRIMARY KEY ("id"))'
)
FILL = "INSERT INTO t SELECT range, range, 'row ' || range, range / 7.0 FROM range({rows})"

CASES: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
    "add_field with default": (
        [{"op": "add_field", "entity": "t", "field": {"name": "d", "type": "text", "default": "x"}}],
        ["ALTER TABLE t ADD COLUMN d VARCHAR NOT NULL DEFAULT 'x'"],
    ),
    "drop_field": (
        [{"op": "drop_field", "entity": "t", "field": "b"}],
        ["ALTER TABLE t DROP COLUMN b"],
    ),
    "drop_field vs copy+drop": (
        [{"op": "drop_field", "entity": "t", "field": "b"}],
        ["CREATE TABLE kept AS SELECT id, b FROM t WHERE b IS NOT NULL", "ALTER TABLE t DROP COLUMN b"],
    ),
    "add_unique": (
        [{"op": "add_unique", "entity": "t", "columns": ["a"]}],
        ["ALTER TABLE t ADD UNIQUE (a)"],
    ),
    "type change (rebuild)": (
        [{"op": "alter_field", "entity": "t", "field": "c", "type": "decimal(18,4)"}],
        [
            'CREATE TABLE "t__new" ("id" INTEGER NOT NULL, "a" INTEGER NOT NULL, "b" VARCHAR NOT NULL, '
            '"c" DECIMAL(18,4) NOT NULL, PRIMARY KEY ("id"))',
            "INSERT INTO t__new SELECT id, a, b, CAST(c AS DECIMAL(18,4)) FROM t",
            "DROP TABLE t",
            "ALTER TABLE t__new RENAME TO t",
        ],
    ),
}


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw_case(directory: Path, rows: int, sql: list[str]) -> float:
    db = duckdb.connect(str(directory / "raw.duckdb"))
    db.execute(CREATE)
    db.execute(FILL.format(rows=rows))
    db.execute("CHECKPOINT")

    def run() -> None:
        db.execute("BEGIN")
        for statement in sql:
            db.execute(statement)
        db.execute("COMMIT")

    elapsed = timed(run)
    db.close()
    return elapsed


def runtime_case(directory: Path, rows: int, ops: list[dict[str, Any]]) -> tuple[float, float, float]:
    rt = Runtime.open(directory / "app.duckdb", audit_reads=False)
    proposal = rt.propose([ENTITY])
    rt.dry_run(proposal.proposal_id)
    rt.deploy(proposal.proposal_id)
    with rt.engine.transaction() as tx:
        tx.execute(FILL.format(rows=rows))
    rt.engine.checkpoint()
    proposal = rt.propose(ops)
    dry = timed(lambda: rt.dry_run(proposal.proposal_id))
    deploy = timed(lambda: rt.deploy(proposal.proposal_id))
    rollback = timed(lambda: rt.rollback())
    rt.close()
    return dry, deploy, rollback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.rows:,} rows, median of {args.repeat} runs (seconds)")
    print(
        f"{'case':<24}{'raw':>8}{'dry-run':>9}{'ratio':>7}{'deploy':>8}{'ratio':>7}{'rollback':>10}{'vs fwd':>8}"
    )
    for name, (ops, sql) in CASES.items():
        raw, dry, dep, back = [], [], [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                raw.append(raw_case(Path(tmp), args.rows, sql))
            with tempfile.TemporaryDirectory() as tmp:
                d, p, r = runtime_case(Path(tmp), args.rows, ops)
                dry.append(d)
                dep.append(p)
                back.append(r)
        r0, d0, p0, b0 = (statistics.median(x) for x in (raw, dry, dep, back))
        print(
            f"{name:<24}{r0:>8.3f}{d0:>9.3f}{d0 / r0:>7.2f}{p0:>8.3f}{p0 / r0:>7.2f}{b0:>10.3f}{b0 / p0:>8.2f}"
        )


if __name__ == "__main__":
    main()
