"""One server of the cross-server tests: a ``PgEngine`` of its own on the shared database.

``python -m tests.store.pg_worker book DSN ATTEMPTS SEED``: check-then-insert bookings on random slots
(a millisecond between the check and the insert), each in one writer-lane transaction; prints how many it booked.
``python -m tests.store.pg_worker hold DSN``: takes the lane, inserts a row, prints ``held`` and
sleeps inside the transaction until it is killed.
"""

from __future__ import annotations

import random
import sys
import time

from runtime.store.postgres import PgEngine


def book(dsn: str, attempts: int, seed: int) -> None:
    engine = PgEngine(dsn)
    rng = random.Random(seed)
    booked = 0
    for _ in range(attempts):
        slot = rng.randrange(50)
        with engine.transaction(wait=60) as tx:
            taken = tx.scalar("SELECT count(*) FROM bookings WHERE slot = ?", [slot])
            capacity = tx.scalar("SELECT capacity FROM slots WHERE id = ?", [slot])
            time.sleep(0.001)  # between the check and the insert: where an unserialised race lands
            if taken < capacity:
                tx.execute("INSERT INTO bookings (slot, server) VALUES (?, ?)", [slot, seed])
                booked += 1
    engine.close()
    print(booked, flush=True)


def hold(dsn: str) -> None:
    engine = PgEngine(dsn)
    with engine.transaction() as tx:
        tx.execute("INSERT INTO bookings (slot, server) VALUES (0, -1)")
        print("held", flush=True)
        time.sleep(600)


if __name__ == "__main__":
    verb = sys.argv[1]
    if verb == "book":
        book(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif verb == "hold":
        hold(sys.argv[2])
    else:
        raise SystemExit(f"unknown verb {verb!r}")
