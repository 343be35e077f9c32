"""Several servers on one PostgreSQL database (engine-specific: PostgreSQL). The writer lane spans
servers: a session advisory lock taken before ``BEGIN ISOLATION LEVEL SERIALIZABLE``.

``BUTTRESS_PG_BOOKINGS`` sets how many bookings the four servers attempt (CI's long trial: 10,000).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime.errors import ButtressError, Code
from runtime.store.pg_errors import translate_pg
from runtime.store.postgres import PgEngine

ROOT = Path(__file__).resolve().parents[2]
BOOKINGS = int(os.environ.get("BUTTRESS_PG_BOOKINGS", "1000"))
SERVERS = 4


def schema(dsn: str, capacity: int) -> None:
    engine = PgEngine(dsn)
    with engine.transaction() as tx:
        tx.execute("CREATE TABLE slots (id INTEGER PRIMARY KEY, capacity INTEGER NOT NULL)")
        tx.execute("CREATE TABLE bookings (id BIGSERIAL PRIMARY KEY, slot INTEGER NOT NULL, server INTEGER)")
        tx.execute("CREATE INDEX bookings_slot ON bookings (slot)")
        for slot in range(50):
            tx.execute("INSERT INTO slots VALUES (?, ?)", [slot, capacity])
    engine.close()


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.pg_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_servers_never_overbook(pg_dsn: str) -> None:
    """Check-then-insert bookings from four processes, each its own engine: no slot goes over."""
    capacity = max(1, BOOKINGS // 100)  # half the attempts find room
    schema(pg_dsn, capacity)
    servers = [worker("book", pg_dsn, str(BOOKINGS // SERVERS), str(seed)) for seed in range(SERVERS)]
    booked = 0
    for server in servers:
        out, err = server.communicate(timeout=600)
        assert server.returncode == 0, err
        booked += int(out)
    with psycopg.connect(pg_dsn) as connection:
        counts = dict(connection.execute("SELECT slot, count(*) FROM bookings GROUP BY slot").fetchall())
        servers_seen = connection.execute("SELECT count(DISTINCT server) FROM bookings").fetchone()
    assert max(counts.values()) <= capacity, counts
    assert sum(counts.values()) == booked  # every reported booking is there, and only those
    assert servers_seen == (SERVERS,)  # the servers really ran side by side


def test_a_server_waiting_for_the_lane_reads_what_the_holder_committed(pg_dsn: str) -> None:
    """The lane lock is taken before BEGIN: the waiter's snapshot starts after the holder's commit."""
    schema(pg_dsn, 1)
    first, second = PgEngine(pg_dsn), PgEngine(pg_dsn)
    inside = threading.Event()
    seen: list[int] = []

    def later() -> None:
        assert inside.wait(10)
        with second.transaction(wait=10) as tx:
            seen.append(tx.scalar("SELECT count(*) FROM bookings"))

    waiter = threading.Thread(target=later)
    waiter.start()
    with first.transaction() as tx:
        tx.execute("INSERT INTO bookings (slot) VALUES (1)")
        inside.set()
        time.sleep(0.3)  # the other server is waiting for the lane meanwhile
    waiter.join()
    assert seen == [1]
    first.close()
    second.close()


def test_a_killed_server_frees_the_lane_and_commits_nothing(pg_dsn: str) -> None:
    schema(pg_dsn, 1)
    holder = worker("hold", pg_dsn)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        engine = PgEngine(pg_dsn)
        with pytest.raises(ButtressError) as caught, engine.transaction(wait=0.3):
            pass
        assert caught.value.code == Code.ENGINE_BUSY
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with engine.transaction(wait=10) as tx:
            assert tx.scalar("SELECT count(*) FROM bookings") == 0  # its insert died with it
        assert time.monotonic() - started < 5
        engine.close()
    finally:
        holder.kill()
        holder.communicate()


def test_a_serialization_failure_is_a_retryable_conflict(pg_dsn: str) -> None:
    """Two SERIALIZABLE transactions outside the lane write-skew: PostgreSQL aborts one (40001)."""
    schema(pg_dsn, 1)
    a, b = (psycopg.connect(pg_dsn) for _ in range(2))
    for connection in (a, b):
        connection.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        connection.execute("SELECT count(*) FROM bookings WHERE slot = 1")
    a.execute("INSERT INTO bookings (slot) VALUES (1)")
    b.execute("INSERT INTO bookings (slot) VALUES (1)")
    a.commit()
    error: Any = None
    try:
        b.commit()
    except psycopg.Error as raised:
        error = raised
    assert error is not None and error.sqlstate == "40001"
    translated = translate_pg(error)
    assert translated.code == Code.ENGINE_CONFLICT and translated.details["retryable"] is True
    a.close()
    b.close()
