"""DuckDB against PostgreSQL on one booking-style mutation (read a balance, insert a ledger row, update
the balance, then the invariant check), each engine against its own floor: raw DuckDB in its own
BEGIN/COMMIT, ``Engine``; raw psycopg in SERIALIZABLE, ``PgEngine`` in one server, ``PgEngine`` in
four server processes sharing one database (their writers take turns on the lane). Calls,
throughput, p50/p99 latencies, ratios, and a line on when to choose which. Same run, same machine.

PostgreSQL is a private throwaway cluster (``tests/pg.py``: socket only, fsync on as in production,
like DuckDB's WAL on every COMMIT), or without the server binaries the cluster named in
``BUTTRESS_POSTGRES_DSN``, with a fresh database per row. Without either, only the DuckDB rows are
printed.

Run: python benchmarks/engines.py [--calls N]
Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.runtime import Runtime
from runtime.store.engine import Engine
from runtime.store.postgres import PgEngine

ACCOUNTS = 100
OPENING = 1000
WARMUP = 50
SERVERS = 4
DDL = [
    "CREATE TABLE account (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)",
    "CREATE SEQUENCE ledger_seq",
    "CREATE TABLE ledger (id BIGINT PRIMARY KEY DEFAULT nextval('ledger_seq'), account INTEGER NOT NULL, "
    "amount BIGINT NOT NULL)",
    "CREATE INDEX ledger_account ON ledger (account)",
    f"INSERT INTO account SELECT i, {OPENING} FROM generate_series(0, {ACCOUNTS - 1}) AS t(i)",
]
READ = "select balance from account where id = ?"
INSERT = "insert into ledger (account, amount) values (?, ?)"
UPDATE = "update account set balance = balance + ? where id = ?"
CHECK = "select id from account where id = ? and balance < 0"
CREDITED = f"select sum(balance) - {OPENING} * count(*), (select count(*) from ledger) from account"
ACTION: list[dict[str, Any]] = [  # the same mutation as an application action, its check an invariant
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
            "indexes": [{"name": "ledger_account", "columns": ["account"]}],
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
            "statements": [
                "select balance from account where id = $account",
                "insert into ledger (account, amount) values ($account, $amount)",
                "update account set balance = balance + $amount where id = $account",
            ],
        },
    },
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


@dataclass
class Row:
    path: str
    calls: int
    wall_s: float
    samples: list[float]
    credited: tuple[int, int]
    """What the database holds afterwards: credits summed over the balances, ledger rows."""

    @property
    def throughput(self) -> float:
        return self.calls / self.wall_s

    @property
    def p50(self) -> float:
        return percentiles(self.samples)[0]

    @property
    def p99(self) -> float:
        return percentiles(self.samples)[1]


def timed(path: str, call: Callable[[int], object], calls: int, credited: Callable[[], Any]) -> Row:
    """Warm up, then ``calls`` sequential calls; the wall time covers the timed calls only."""
    for i in range(WARMUP):
        call(i)
    started = time.perf_counter()
    samples = measure(call, calls)
    wall = time.perf_counter() - started
    total, entries = credited()
    return Row(path, calls, wall, samples, (int(total), int(entries)))


# ------------------------------------------------------------------------------------------ DuckDB


def raw_duckdb(path: Path, calls: int) -> Row:
    db = duckdb.connect(str(path))
    for sql in DDL:
        db.execute(sql)

    def call(i: int) -> None:
        account = i % ACCOUNTS
        db.execute("BEGIN")
        db.execute(READ, [account]).fetchall()
        db.execute(INSERT, [account, 1])
        db.execute(UPDATE, [1, account])
        if db.execute(CHECK, [account]).fetchall():
            db.execute("ROLLBACK")
            return
        db.execute("COMMIT")

    try:
        return timed("raw DuckDB", call, calls, lambda: db.execute(CREDITED).fetchone())
    finally:
        db.close()


def engine_call(engine: Engine | PgEngine, i: int) -> None:
    account = i % ACCOUNTS
    with engine.transaction(wait=60) as tx:
        tx.scalar(READ, [account])
        tx.execute(INSERT, [account, 1])
        tx.execute(UPDATE, [1, account])
        if tx.fetchall(CHECK, [account]):
            raise RuntimeError(f"account {account} overdrawn")


def setup(engine: Engine | PgEngine) -> None:
    with engine.transaction(wait=60) as tx:
        for sql in DDL:
            tx.execute(sql)


def credited(engine: Engine | PgEngine) -> Any:
    with engine.transaction(wait=60) as tx:
        return tx.fetchall(CREDITED)[0]


def engine_duckdb(path: Path, calls: int) -> Row:
    engine = Engine(path)
    try:
        setup(engine)
        return timed("DuckDB Engine", lambda i: engine_call(engine, i), calls, lambda: credited(engine))
    finally:
        engine.close()


# ------------------------------------------------------------------- the runtime: run_action on both


def open_runtime(where: str, scratch: Path) -> Runtime:
    """``where``: a DuckDB file's path, or a PostgreSQL connection string (``host=`` / ``postgresql:``)."""
    if "=" in where or where.startswith("postgres"):
        return Runtime.open_postgres(where, scratch / "app.postgres", audit_reads=False)
    return Runtime.open(where, audit_reads=False)


def runtime_setup(rt: Runtime) -> None:
    proposal = rt.propose(ACTION)
    assert rt.dry_run(proposal.proposal_id).passed
    rt.deploy(proposal.proposal_id)
    with rt.engine.transaction() as tx:
        tx.execute(DDL[-1])


def runtime_call(rt: Runtime, i: int) -> None:
    rt.run_action("credit", {"account": i % ACCOUNTS, "amount": 1})


def runtime_credited(rt: Runtime) -> Any:
    with rt.engine.transaction(wait=60) as tx:
        return tx.fetchall(CREDITED)[0]


def runtime_row(path: str, where: str, calls: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="buttress-bench-") as tmp:
        rt = open_runtime(where, Path(tmp))
        try:
            runtime_setup(rt)
            return timed(path, lambda i: runtime_call(rt, i), calls, lambda: runtime_credited(rt))
        finally:
            rt.close()


# -------------------------------------------------------------------------------------- PostgreSQL


def raw_postgres(dsn: str, calls: int) -> Row:
    import psycopg

    connection = psycopg.connect(dsn, autocommit=True)
    with connection.transaction():
        for sql in DDL:
            connection.execute(sql)

    def call(i: int) -> None:
        account = i % ACCOUNTS
        connection.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        connection.execute(READ.replace("?", "%s"), [account]).fetchall()
        connection.execute(INSERT.replace("?", "%s"), [account, 1])
        connection.execute(UPDATE.replace("?", "%s"), [1, account])
        if connection.execute(CHECK.replace("?", "%s"), [account]).fetchall():
            connection.execute("ROLLBACK")
            return
        connection.execute("COMMIT")

    try:
        return timed("raw PostgreSQL", call, calls, lambda: connection.execute(CREDITED).fetchone() or (0, 0))
    finally:
        connection.close()


def pg_one_server(dsn: str, calls: int) -> Row:
    engine = PgEngine(dsn)
    try:
        setup(engine)
        return timed("PgEngine, 1 server", lambda i: engine_call(engine, i), calls, lambda: credited(engine))
    finally:
        engine.close()


def serve(dsn: str, calls: int, level: str = "engine") -> None:
    """One server process of the shared-database rows (``level``: ``engine`` or ``runtime``): warm up,
    say ``ready``, wait for ``go`` on stdin, run the calls, print the latency samples and the
    wall-clock end as JSON."""
    with tempfile.TemporaryDirectory(prefix="buttress-bench-") as tmp:
        if level == "runtime":
            rt = open_runtime(dsn, Path(tmp))
            call: Callable[[int], object] = lambda i: runtime_call(rt, i)  # noqa: E731
            close: Callable[[], None] = rt.close
        else:
            engine = PgEngine(dsn)
            call, close = (lambda i: engine_call(engine, i)), engine.close
        try:
            for i in range(WARMUP):
                call(i)
            print("ready", flush=True)
            sys.stdin.readline()
            samples = measure(call, calls)
            ended = time.time()
        finally:
            close()
    print(json.dumps({"samples": samples, "ended": ended}), flush=True)


def pg_servers(dsn: str, calls: int, servers: int, level: str = "engine") -> Row:
    """``servers`` processes, each with its own PgEngine (or Runtime) on one database. All connect and
    warm up first; the clock starts when they are all told to go and stops when the last one ends its
    last call, so interpreter start-up is not counted."""
    if level == "runtime":
        with tempfile.TemporaryDirectory(prefix="buttress-bench-") as tmp:
            rt = open_runtime(dsn, Path(tmp))
            try:
                runtime_setup(rt)
            finally:
                rt.close()
    else:
        engine = PgEngine(dsn)
        try:
            setup(engine)
        finally:
            engine.close()
    each = calls // servers
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", dsn, str(each), level],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(servers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a server did not start (it said {line!r})")
        started = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"a server failed (exit {proc.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = max(report["ended"] for report in reports) - started
    samples = [sample for report in reports for sample in report["samples"]]
    engine = PgEngine(dsn)
    try:
        total, entries = credited(engine)
    finally:
        engine.close()
    name = f"PgEngine, {servers} servers" if level == "engine" else f"Runtime PG, {servers} servers"
    return Row(name, each * servers, wall, samples, (int(total), int(entries)))


@contextmanager
def postgres() -> Iterator[tuple[Any, str | None]]:
    """The cluster to measure on, or None and why not: a private one with fsync on, as a production
    server runs (stopped afterwards); else the one BUTTRESS_POSTGRES_DSN names."""
    from tests import pg

    found = pg.binaries()
    if found is None:
        shared = pg.shared()
        if shared is not None:
            yield shared, None
        else:
            yield None, "PostgreSQL's server binaries were not found and BUTTRESS_POSTGRES_DSN is not set"
        return
    with tempfile.TemporaryDirectory(prefix="buttress-bench-pg-") as tmp:
        root = Path(tmp)
        try:
            cluster = pg.start(root, durable=True)
        except Exception as error:  # the DuckDB rows are still worth printing
            with contextlib.suppress(Exception):
                pg.stop(root)
            yield None, f"the private PostgreSQL cluster did not start ({error})"
            return
        try:
            yield cluster, None
        finally:
            pg.stop(root)


def on_fresh_database(cluster: Any, run: Callable[[str], Row]) -> Row:
    name = cluster.create_database()
    try:
        return run(cluster.dsn(name))
    finally:
        cluster.drop_database(name)


# ------------------------------------------------------------------------------------------ report


def durability(cluster: Any) -> str:
    """The cluster's commit settings: the private one does not wait for the disk, DuckDB does."""
    import psycopg

    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as connection:
        values = [connection.execute(f"SHOW {name}").fetchone() for name in ("fsync", "synchronous_commit")]
    fsync, synchronous = (value[0] if value else "?" for value in values)
    return f"fsync={fsync}, synchronous_commit={synchronous}"


def report(rows: list[Row], calls: int, skipped: str | None, settings: str | None) -> None:
    print(f"booking mutation (read, insert, update + invariant check), {calls} calls a row, warm-up {WARMUP}")
    print(f"{'path':<24}{'calls':>7}{'mutations/s':>13}{'p50 ms':>9}{'p99 ms':>9}")
    for row in rows:
        print(f"{row.path:<24}{row.calls:>7}{row.throughput:>13,.0f}{row.p50:>9.3f}{row.p99:>9.3f}")
    for row in rows:
        want = row.calls + WARMUP * (SERVERS if "servers" in row.path else 1)
        if row.credited != (want, want):
            print(f"  note: {row.path} left {row.credited} (credits, ledger rows), expected {want} each")
    if skipped:
        print(f"PostgreSQL rows skipped: {skipped}")
    if settings:
        print(f"PostgreSQL cluster: {settings}; DuckDB writes its WAL file on every COMMIT")
    by = {row.path: row for row in rows}
    raw_duck, engine = by["raw DuckDB"], by["DuckDB Engine"]
    print()
    print(f"Engine / raw DuckDB (p50):                {engine.p50 / raw_duck.p50:.2f}")
    for label, runtime_path, floor in (
        ("Runtime DuckDB / raw DuckDB (p50):        ", "Runtime DuckDB", raw_duck),
        ("Runtime PG 1 server / raw PostgreSQL (p50):", "Runtime PG, 1 server", by.get("raw PostgreSQL")),
    ):
        measured = by.get(runtime_path)
        if measured is not None and floor is not None:
            print(f"{label} {measured.p50 / floor.p50:.2f}")
    runtime_one, runtime_many = by.get("Runtime PG, 1 server"), by.get(f"Runtime PG, {SERVERS} servers")
    if runtime_one and runtime_many:
        print(
            f"Runtime PG {SERVERS} servers / 1 server (throughput): {runtime_many.throughput / runtime_one.throughput:.2f}"
        )
    one = by.get("PgEngine, 1 server")
    many = by.get(f"PgEngine, {SERVERS} servers")
    raw_pg = by.get("raw PostgreSQL")
    if one and raw_pg:
        print(f"PgEngine 1 server / raw PostgreSQL (p50): {one.p50 / raw_pg.p50:.2f}")
    if one and many:
        print(f"{SERVERS} servers / 1 server (throughput):     {many.throughput / one.throughput:.2f}")
    print()
    if one is None:
        print(
            f"When to choose which: one DuckDB process commits {engine.throughput:,.0f} mutations/s at "
            f"{engine.p50:.3f} ms (p50); PostgreSQL was not measured here."
        )
        return
    if engine.p50 <= one.p50:
        speed = f"one DuckDB process is {one.p50 / engine.p50:.1f} x faster per mutation than PostgreSQL"
    else:
        speed = (
            f"PostgreSQL is {engine.p50 / one.p50:.1f} x faster per mutation than DuckDB even from one server"
        )
    speed += (
        f" (Engine {engine.p50:.3f} ms against PgEngine {one.p50:.3f} ms p50, {engine.throughput:,.0f} "
        f"against {one.throughput:,.0f} mutations/s)"
    )
    shared = ""
    if many:
        ratio = many.throughput / one.throughput
        shared = (
            f"; {SERVERS} servers shared one database at {many.throughput:,.0f} mutations/s "
            f"({ratio:.2f} x one server: "
            + (
                "the writer lane takes them in turn and the hand-over costs more than it overlaps)"
                if ratio < 0.9
                else "the writer lane takes them in turn, so more servers add availability, not much "
                "write speed)"
                if ratio < 1.5
                else "their client-side work overlaps while the lane takes their writes in turn)"
            )
        )
    print(
        f"When to choose which: {speed}{shared}. Choose DuckDB when one process can own the file and no "
        "database server is wanted; choose PostgreSQL when several servers must share one database"
        + (" or when write latency matters." if engine.p50 > one.p50 else ".")
    )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per row (split among servers)")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="buttress-bench-") as tmp:
        rows.append(raw_duckdb(Path(tmp) / "raw.duckdb", args.calls))
        rows.append(engine_duckdb(Path(tmp) / "engine.duckdb", args.calls))
        rows.append(runtime_row("Runtime DuckDB", str(Path(tmp) / "runtime.duckdb"), args.calls))
    settings = None
    with postgres() as (cluster, skipped):
        if cluster is not None:
            settings = durability(cluster)
            rows.append(on_fresh_database(cluster, lambda dsn: raw_postgres(dsn, args.calls)))
            rows.append(on_fresh_database(cluster, lambda dsn: pg_one_server(dsn, args.calls)))
            rows.append(on_fresh_database(cluster, lambda dsn: pg_servers(dsn, args.calls, SERVERS)))
            rows.append(
                on_fresh_database(cluster, lambda dsn: runtime_row("Runtime PG, 1 server", dsn, args.calls))
            )
            rows.append(
                on_fresh_database(cluster, lambda dsn: pg_servers(dsn, args.calls, SERVERS, "runtime"))
            )
    report(rows, args.calls, skipped, settings)


if __name__ == "__main__":
    main()
