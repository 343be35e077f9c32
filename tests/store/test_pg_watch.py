"""Changes reach the other servers (engine-specific: PostgreSQL): a notification when a writer commits,
none when it rolls back, and polling that carries on through a lost connection."""

from __future__ import annotations

import queue
import time

import psycopg

from runtime.store.postgres import PgEngine


def next_payload(seen: queue.Queue[str | None], timeout: float = 5.0) -> str | None:
    """The next notification's payload, skipping poll ticks (None)."""
    deadline = time.monotonic() + timeout
    while True:
        payload = seen.get(timeout=max(0.01, deadline - time.monotonic()))
        if payload is not None:
            return payload


def test_a_commit_notifies_the_other_servers_and_a_rollback_does_not(pg_dsn: str) -> None:
    writer, other = PgEngine(pg_dsn), PgEngine(pg_dsn)
    seen: queue.Queue[str | None] = queue.Queue()
    watch = other.watch("versions", seen.put, poll=0.5)
    try:
        assert watch.listening.wait(5)
        with writer.transaction() as tx:
            tx.rollback_only = True
            writer.notify(tx, "versions", "never")
        with writer.transaction() as tx:
            writer.notify(tx, "versions", "7")
        assert next_payload(seen) == "7"
        ticks = [seen.get(timeout=2) for _ in range(2)]
        assert ticks == [None, None]  # the poll keeps ticking with nothing to say
    finally:
        watch.stop()
        writer.close()
        other.close()


def test_a_watch_reconnects_after_its_connection_is_killed(pg_dsn: str) -> None:
    writer, other = PgEngine(pg_dsn), PgEngine(pg_dsn)
    seen: queue.Queue[str | None] = queue.Queue()
    watch = other.watch("versions", seen.put, poll=0.5)
    try:
        assert watch.listening.wait(5)
        pid = watch.backend_pid()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while (watch.reconnects == 0 or not watch.listening.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.reconnects >= 1 and watch.listening.is_set()
        assert watch.backend_pid() != pid
        with writer.transaction() as tx:
            writer.notify(tx, "versions", "8")
        assert next_payload(seen) == "8"
    finally:
        watch.stop()
        writer.close()
        other.close()
