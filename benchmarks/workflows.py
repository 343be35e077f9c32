"""What durability costs: workflows, messages and a restart with work pending.

1. A one-action workflow step against the bare action, in the same run: N runs of a workflow whose one
   step inserts a row (start + the step + the finish, each committed and audited), against N calls of
   the same action through ``run_action``, against raw DuckDB inserting the row on a file of its own.
   Aim: a step at most 1.5x the bare action.
2. Messages per second: N publishes, then claims of 100 with their acknowledgements.
3. A restart with 10,000 runs pending: runs asleep past their wake time when the process died; the time
   from opening the database to every run's sleep recorded as done (resumed), and to every run
   completed (its one action step run). Aim: resumed in under 5 s.

Run: python benchmarks/workflows.py [--runs N] [--messages N] [--pending N]
Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.runtime import Runtime

NOTE = {
    "op": "add_entity",
    "entity": {
        "name": "note",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "text"}, {"name": "body", "type": "text"}],
    },
}
WRITE = {
    "op": "add_action",
    "action": {
        "name": "write",
        "kind": "mutation",
        "params": [{"name": "id", "type": "text"}, {"name": "body", "type": "text"}],
        "statements": ["insert into note values ($id, $body)"],
    },
}
ONE_STEP = {
    "op": "add_workflow",
    "workflow": {
        "name": "one",
        "params": [{"name": "id", "type": "text"}],
        "steps": [
            {
                "name": "write",
                "kind": "action",
                "action": "write",
                "args": {"id": {"from": "input.id"}, "body": "hello"},
            }
        ],
    },
}
NAP_THEN_WRITE = {
    "op": "add_workflow",
    "workflow": {
        "name": "later",
        "params": [{"name": "id", "type": "text"}, {"name": "until", "type": "timestamptz"}],
        "steps": [
            {"name": "nap", "kind": "sleep", "until": {"from": "input.until"}},
            {
                "name": "write",
                "kind": "action",
                "action": "write",
                "args": {"id": {"from": "input.id"}, "body": "later"},
            },
        ],
    },
}
EVENTS = {
    "op": "add_topic",
    "topic": {
        "name": "events",
        "payload": [{"name": "n", "type": "integer"}, {"name": "body", "type": "text"}],
        "external": True,
    },
}


def deploy(rt: Runtime, operations: list[dict[str, Any]]) -> None:
    proposal = rt.propose(operations)
    assert rt.dry_run(proposal.proposal_id).passed
    rt.deploy(proposal.proposal_id)


def per_call_ms(total_s: float, n: int) -> float:
    return total_s * 1000 / n


def step_against_action(directory: Path, runs: int) -> None:
    """Per call: the bare action; starting a run; the scheduler running its one step (runs queued, then
    run in one drain, as the background scheduler does); and raw DuckDB inserting the row."""
    rt = Runtime.open(directory / "steps.duckdb", audit_reads=False)
    try:
        deploy(rt, [NOTE, WRITE, ONE_STEP])
        for i in range(50):  # warm up both paths
            rt.run_action("write", {"id": f"w{i}", "body": "x"})
            rt.start_workflow("one", {"id": f"wr{i}"})
        rt.scheduler.drain()
        t0 = time.perf_counter()
        for i in range(runs):
            rt.run_action("write", {"id": f"a{i}", "body": "hello"})
        action = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(runs):
            rt.start_workflow("one", {"id": f"s{i}"}, run_id=f"s{i}")
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        rt.scheduler.drain(timeout=600)
        step = time.perf_counter() - t0
        assert all(r.status == "completed" for r in rt.list_runs(workflow="one", limit=runs))
    finally:
        rt.close()
    raw = duckdb.connect(str(directory / "raw.duckdb"))
    raw.execute("CREATE TABLE note (id VARCHAR PRIMARY KEY, body VARCHAR)")
    t0 = time.perf_counter()
    for i in range(runs):
        raw.execute("BEGIN")
        raw.execute("INSERT INTO note VALUES (?, ?)", [f"r{i}", "hello"])
        raw.execute("COMMIT")
    bare = time.perf_counter() - t0
    raw.close()
    a, s0, s1, r = (per_call_ms(x, runs) for x in (action, start, step, bare))
    print(
        f"1. one-action workflow ({runs} each, mean ms): action {a:.2f}, start a run {s0:.2f}, its step {s1:.2f}, raw insert {r:.2f}"
    )
    print(
        f"   step / action = {s1 / a:.2f}x (aim <= 1.5x); whole run (start + step) / action = {(s0 + s1) / a:.2f}x; "
        f"action / raw = {a / r:.1f}x"
    )


def messages(directory: Path, count: int) -> None:
    rt = Runtime.open(directory / "messages.duckdb", audit_reads=False)
    try:
        deploy(rt, [EVENTS])
        t0 = time.perf_counter()
        for n in range(count):
            rt.publish_message("events", {"n": n, "body": "hello"})
        published = time.perf_counter() - t0
        t0 = time.perf_counter()
        consumed = 0
        while True:
            claimed = rt.claim_messages("events", consumer="bench", limit=100)
            if not claimed.messages:
                break
            rt.ack_messages([m.message_id for m in claimed.messages], consumer="bench")
            consumed += len(claimed.messages)
        taken = time.perf_counter() - t0
        assert consumed == count
    finally:
        rt.close()
    raw = duckdb.connect(str(directory / "raw-messages.duckdb"))
    raw.execute("CREATE TABLE m (seq BIGINT PRIMARY KEY, payload JSON, acked BOOLEAN DEFAULT false)")
    t0 = time.perf_counter()
    for n in range(count):
        raw.execute("BEGIN")
        raw.execute("INSERT INTO m (seq, payload) VALUES (?, ?)", [n, f'{{"n": {n}, "body": "hello"}}'])
        raw.execute("COMMIT")
    raw_published = time.perf_counter() - t0
    raw.close()
    print(
        f"2. messages ({count}): published {count / published:,.0f}/s "
        f"({per_call_ms(published, count):.2f} ms each; raw insert {per_call_ms(raw_published, count):.2f} ms, "
        f"{published / raw_published:.1f}x), claimed and acknowledged in batches of 100 {count / taken:,.0f}/s"
    )


def restart(directory: Path, pending: int) -> None:
    path = directory / "restart.duckdb"
    rt = Runtime.open(path, audit_reads=False)
    deploy(rt, [NOTE, WRITE, NAP_THEN_WRITE])
    t0 = time.perf_counter()
    for i in range(100):  # a pilot: how long starting a run and taking it to its sleep takes
        rt.start_workflow("later", {"id": f"q{i}", "until": "2100-01-01T00:00:00Z"}, run_id=f"q{i}")
    rt.scheduler.drain()
    estimate = (time.perf_counter() - t0) / 100 * pending * 2 + 10  # none may come due before the stop
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=estimate)
    t0 = time.perf_counter()
    for i in range(pending):
        rt.start_workflow("later", {"id": f"p{i}", "until": until.isoformat()}, run_id=f"p{i}")
    started = time.perf_counter() - t0
    rt.scheduler.drain(timeout=3600)  # every run reaches its sleep
    with rt.engine.snapshot() as reader:
        asleep = reader.scalar(
            "SELECT count(*) FROM _buttress.runs WHERE run_id LIKE 'p%' AND waiting_on LIKE 'sleep:%'"
        )
    assert asleep == pending, f"only {asleep} of {pending} runs were asleep at the stop"
    rt.close()
    wait = (until - datetime.datetime.now(datetime.UTC)).total_seconds()
    time.sleep(max(0.0, wait) + 0.2)  # the process is gone while the sleeps come due

    t0 = time.perf_counter()
    rt = Runtime.open(path, audit_reads=False)
    opened = time.perf_counter() - t0
    try:
        rt.start_scheduler()
        resumed = completed = None
        while completed is None:
            with rt.engine.snapshot() as reader:
                asleep, active = reader.fetchall(
                    "SELECT count(*) FILTER (WHERE waiting_on LIKE 'sleep:%'), "
                    "count(*) FILTER (WHERE status NOT IN ('completed', 'compensated', 'failed', 'cancelled')) "
                    "FROM _buttress.runs WHERE run_id LIKE 'p%'"
                )[0]
            now = time.perf_counter() - t0
            if resumed is None and asleep == 0:
                resumed = now
            if active == 0:
                completed = now
            time.sleep(0.01)
    finally:
        rt.close()
    print(
        f"3. restart with {pending:,} runs past their wake time (started in {started:.1f} s): database open "
        f"{opened:.2f} s; all resumed {resumed:.2f} s (aim < 5 s); all completed {completed:.2f} s "
        f"({pending / max(completed - (resumed or 0), 1e-3):,.0f} action steps/s after the wake)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--pending", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        step_against_action(directory, args.runs)
        messages(directory, args.messages)
        restart(directory, args.pending)


if __name__ == "__main__":
    main()
