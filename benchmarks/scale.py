"""Does a mutation's cost stay flat as the data grows? The booking mutation (insert one booking, the
"no slot holds more bookings than seats" invariant, the reference from booking to slot) at 10^3,
10^5, 10^6 and 10^7 existing bookings, p50 and p99.

In the same run, raw DuckDB on a file of its own does the same work by hand: in one transaction the
same insert, the reference lookup, and the invariant restricted by hand to the booked slot. The
ratio "runtime / raw" is what the runtime's bookkeeping (idempotency, audit, checks on the delta)
adds; the ratio "p50 / p50 at the smallest size" is how the cost grows with the data.

Run: python benchmarks/scale.py [--sizes 1000,100000,1000000,10000000] [--calls N]
Not a test: it prints figures and asserts nothing. The 10^7 step fills two files of about 10^7 rows
each and needs a few minutes and ~2 GB of disk in the temporary directory.
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

SEATS = 20
PER_SLOT = 10  # existing bookings per slot: every slot keeps room for the measured calls
INVARIANT = (
    "select b.slot_id from booking b join slot s on s.id = b.slot_id "
    "group by b.slot_id, s.seats having count(*) > s.seats"
)
INSERT = "insert into booking (slot_id, customer) values ($slot, $customer)"
OPS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "slot",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "bigint"}, {"name": "seats", "type": "integer"}],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "booking",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "bigint", "default": {"expr": "autoincrement"}},
                {"name": "slot_id", "type": "bigint", "references": "slot.id"},
                {"name": "customer", "type": "text"},
            ],
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_overbooking",
            "description": "a slot never holds more bookings than seats",
            "sql": INVARIANT,
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "book",
            "kind": "mutation",
            "params": [{"name": "slot", "type": "bigint"}, {"name": "customer", "type": "text"}],
            "statements": [INSERT],
        },
    },
]
RAW_SCHEMA = [
    "CREATE TABLE slot (id BIGINT PRIMARY KEY, seats INTEGER NOT NULL)",
    "CREATE SEQUENCE booking_seq",
    "CREATE TABLE booking (id BIGINT PRIMARY KEY DEFAULT nextval('booking_seq'), slot_id BIGINT NOT NULL, "
    "customer VARCHAR NOT NULL)",
    "CREATE INDEX booking_slot ON booking (slot_id)",
]
RAW_CHECKS = [
    "SELECT 1 FROM slot WHERE id = $slot",
    "SELECT b.slot_id FROM booking b JOIN slot s ON s.id = b.slot_id WHERE b.slot_id = $slot "
    "GROUP BY b.slot_id, s.seats HAVING count(*) > s.seats LIMIT 5",
]


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


def fill_sql(start: int, stop: int) -> list[str]:
    """Grow the data from ``start`` to ``stop`` bookings, PER_SLOT bookings per slot."""
    first, last = start // PER_SLOT, stop // PER_SLOT
    return [
        f"INSERT INTO slot SELECT range, {SEATS} FROM range({first}, {last})",
        f"INSERT INTO booking (slot_id, customer) SELECT range // {PER_SLOT}, 'c' || range "
        f"FROM range({start}, {stop})",
    ]


def raw_call(db: duckdb.DuckDBPyConnection, slot: int, customer: str) -> None:
    db.execute("BEGIN")
    db.execute(INSERT, {"slot": slot, "customer": customer}).fetchall()
    assert db.execute(RAW_CHECKS[0], {"slot": slot}).fetchall(), "dangling reference"
    assert not db.execute(RAW_CHECKS[1], {"slot": slot}).fetchall(), "overbooked"
    db.execute("COMMIT")


def slot_for(i: int, size: int) -> int:
    """Spread the calls over the existing slots; each slot gets at most SEATS - PER_SLOT of them."""
    slots = size // PER_SLOT
    return (i * 7919) % slots


def sample(
    rt: Runtime, raw: duckdb.DuckDBPyConnection, size: int, calls: int
) -> tuple[list[float], list[float]]:
    """``calls`` bookings each way at ``size``, alternating blocks so neither gets a quieter machine."""

    def book(i: int) -> object:
        return rt.run_action("book", {"slot": slot_for(i, size), "customer": f"x{i}"})

    def book_raw(i: int) -> None:
        raw_call(raw, slot_for(i, size), f"x{i}")

    measure(book, 20)  # warm caches, prepared checks and the buffer pool
    measure(book_raw, 20)
    runtime_ms: list[float] = []
    raw_ms: list[float] = []
    for block in range(20, calls + 20, 50):
        runtime_ms += measure(lambda i, block=block: book(block + i), 50)
        raw_ms += measure(lambda i, block=block: book_raw(block + i), 50)
    return runtime_ms, raw_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,100000,1000000,10000000")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument(
        "--dir", default=None, help="where to put the two database files (default: a temp dir)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[int, float, float, float, float]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rt = Runtime.open(Path(tmp) / "app.duckdb", audit_reads=False)
        proposal = rt.propose(OPS)
        rt.dry_run(proposal.proposal_id)
        rt.deploy(proposal.proposal_id)
        check = next(c for c in rt.describe().invariant_checks if c.name == "no_overbooking")
        how = "on the delta" if check.incremental else "in full"
        print(f"no_overbooking is checked {how}: {check.reason}")
        raw = duckdb.connect(str(Path(tmp) / "raw.duckdb"))
        for statement in RAW_SCHEMA:
            raw.execute(statement)
        have = 0
        for size in sizes:
            started = time.perf_counter()
            with rt.engine.transaction(timeout=3600) as tx:
                for statement in fill_sql(have, size):
                    tx.execute(statement)
            for statement in fill_sql(have, size):
                raw.execute(statement)
            raw.execute("CHECKPOINT")
            rt.engine.checkpoint()
            have = size
            filled = time.perf_counter() - started
            runtime_ms, raw_ms = sample(rt, raw, size, args.calls)
            b50, b99 = percentiles(runtime_ms)
            r50, r99 = percentiles(raw_ms)
            rows.append((size, b50, b99, r50, r99))
            print(f"  filled to {size:,} bookings in {filled:.1f}s", flush=True)
        overbooked = rt.query(INVARIANT).rows
        rt.close()
        raw.close()
    base = rows[0][1]
    print(
        f"\nbooking mutation (insert + overbooking invariant + reference), {args.calls} calls per size (ms)"
    )
    print(f"{'bookings':>12}{'p50':>9}{'p99':>9}{'raw p50':>9}{'raw p99':>9}{'vs raw':>8}{'vs 10^3':>9}")
    for size, b50, b99, r50, r99 in rows:
        print(f"{size:>12,}{b50:>9.3f}{b99:>9.3f}{r50:>9.3f}{r99:>9.3f}{b50 / r50:>8.2f}{b50 / base:>9.2f}")
    print(f"overbooked slots at the end: {len(overbooked)}")


if __name__ == "__main__":
    main()
