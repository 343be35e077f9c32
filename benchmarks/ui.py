"""How long does each page of the control room take on a project with a long history? Builds a project
with 1,000 versions (and proposals), 100,000 audit entries, a 100,000-row table referring to another,
and 10,000 workflow runs, then renders every page through the real application (the guard, the
session, the runtime read, the template) and prints per-page times.

The history is written straight into the system schema for speed: the first versions are real
deploys; the rest repeat the last one's spec, plan and dry-run under new numbers; audit entries are
generated over the past 30 days by a few agents (about one in ten refused, with the message a refusal
keeps) with a valid hash chain, then anchored. 300 runs are real (started, advanced, a third
cancelled); the other 9,700 are written as rows in every state (waiting, completed, failed the same
way, blocked). ``event`` gets its 100,000 rows from one INSERT ... SELECT over ``range()``. A
hazardous proposal waits for approval at the end, with rows it would drop.

Two ways in are measured: the control room owning the database ("owner"), and attached to another
process that owns it through the project's socket ("attached", as when a `buttress serve` runs).

Run: python benchmarks/ui.py [--versions 1000] [--audit 100000] [--runs 10000] [--rows 100000] [--repeat 20]
Not a test: it prints figures (p50, p90 and the slowest, in ms) and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault(
    "BUTTRESS_OPERATOR_KEY", str(Path(tempfile.mkdtemp(prefix="buttress-bench-")) / "operator.key")
)

from mcp_server.channel import ChannelServer, RemoteRuntime, socket_path
from mcp_server.project import Project, init
from mcp_server.ui.app import ControlRoom
from runtime.api import RuntimeAPI
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.schema.spec import canonical_json
from runtime.store.audit import GENESIS, row_hash

AGENTS = ("claude", "ci-bot", "reviewer", "builder")
OPERATIONS = ("query", "describe_app", "run_action", "propose_change", "dry_run", "deploy", "read_audit")
CODES = ("policy.denied", "sql.forbidden", "invariant.violated", "deploy.needs_approval", "limit.timeout")
BATCH = 1000
RUNS = 300
KINDS = 7
HOLD = {
    "name": "hold",
    "params": [{"name": "id", "type": "bigint"}, {"name": "label", "type": "text"}],
    "steps": [
        {
            "name": "record",
            "kind": "action",
            "action": "add_0",
            "args": {"id": {"from": "input.id"}, "label": {"from": "input.label"}},
        },
        {"name": "confirm", "kind": "wait", "signal": "confirmed"},
    ],
}


def entity(name: str, extra: int) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [{"name": "id", "type": "bigint"}, {"name": "label", "type": "text"}]
    fields += [{"name": f"f{i}", "type": "integer", "nullable": True} for i in range(extra)]
    fields.append({"name": "note", "type": "text", "nullable": True})
    return {"name": name, "primary_key": ["id"], "fields": fields, "description": f"The {name} records."}


def real_history(rt: Runtime) -> None:
    """A few real deploys: entities, a view, an invariant and actions."""
    steps: list[list[dict[str, Any]]] = [
        [{"op": "add_entity", "entity": entity(f"e{i}", i % 5)} for i in range(8)],
        [{"op": "add_view", "view": {"name": "labels", "sql": "select id, label from e0"}}],
        [
            {
                "op": "add_invariant",
                "invariant": {"name": "labelled", "sql": "select id from e1 where label = ''"},
            }
        ],
        [
            {
                "op": "add_action",
                "action": {
                    "name": f"add_{i}",
                    "kind": "mutation",
                    "params": [{"name": "id", "type": "bigint"}, {"name": "label", "type": "text"}],
                    "statements": [f"insert into e{i} (id, label) values ($id, $label)"],
                },
            }
            for i in range(4)
        ],
    ]
    steps.append([{"op": "add_workflow", "workflow": HOLD}])
    steps.append(
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "customer",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "integer"}, {"name": "name", "type": "text"}],
                },
            },
            {
                "op": "add_entity",
                "entity": {
                    "name": "event",
                    "primary_key": ["id"],
                    "fields": [
                        {"name": "id", "type": "bigint"},
                        {"name": "kind", "type": "text"},
                        {"name": "level", "type": "integer"},
                        {"name": "customer", "type": "integer", "references": "customer.id"},
                        {"name": "happened", "type": "timestamp"},
                        {"name": "amount", "type": "decimal(12,2)"},
                        {"name": "flagged", "type": "boolean", "nullable": True},
                    ],
                },
            },
        ]
    )
    for ops in steps:
        proposal = rt.propose(ops, actor="claude")
        assert rt.dry_run(proposal.proposal_id, actor="claude").passed
        rt.deploy(proposal.proposal_id, actor="claude")
    with rt.engine.transaction() as tx:
        tx.execute(
            "INSERT INTO e0 (id, label, note) SELECT range, 'row ' || range, "
            "CASE WHEN range % 3 = 0 THEN NULL ELSE 'note ' || range END FROM range(20000)"
        )


def events(rt: Runtime, rows: int) -> None:
    """``rows`` events over 10 customers, with low-cardinality kind, level and flag: one INSERT ... SELECT."""
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO customer SELECT range, 'customer ' || range FROM range(10)")
        tx.execute(
            f"INSERT INTO event SELECT range, 'kind_' || (range % {KINDS}), range % 5, range % 10, "
            "TIMESTAMP '2025-01-01' + to_seconds(range * 30), (range % 1000) / 10.0, "
            "CASE WHEN range % 3 = 0 THEN NULL ELSE range % 2 = 0 END FROM range(?)",
            [rows],
        )


def bulk_runs(rt: Runtime, count: int) -> None:
    """``count`` more runs of ``hold`` written as rows, in every state: most waiting for their signal,
    a quarter completed, one in twenty failed at its first step with the same error, one in twenty
    blocked."""
    version = rt.current[0]
    with rt.engine.transaction() as tx:
        tx.execute(
            "INSERT INTO _buttress.runs (run_id, workflow, version, args, args_hash, status, step, calls, wake_at, "
            "attempts, step_started_at, message_cursor, error, outputs, created_by, created_at, updated_at, origin, "
            "waiting_on, acting_for, grant_json, depth) "
            "SELECT 'bulk-' || range, 'hold', ?, json_object('id', 2000000 + range, 'label', 'bulk ' || range), "
            "'h' || range, s.status, CASE s.status WHEN 'failed' THEN 0 WHEN 'completed' THEN 2 ELSE 1 END, "
            "['add_0'], NULL, CASE s.status WHEN 'blocked' THEN 3 ELSE 0 END, NULL, 0, "
            "CASE s.status WHEN 'failed' THEN json_object('code', 'engine.error', 'message', "
            "'the database refused the statement') WHEN 'blocked' THEN json_object('code', "
            "'effect.unavailable', 'message', 'connector payments did not answer') END, '{}', "
            "CASE WHEN range % 3 = 0 THEN 'ci-bot' ELSE 'claude' END, s.at, s.at, 'agent:claude', "
            "CASE s.status WHEN 'waiting' THEN 'signal:confirmed' END, 'claude', NULL, 0 "
            "FROM (SELECT range, CASE WHEN range % 20 = 0 THEN 'failed' WHEN range % 20 = 1 THEN 'blocked' "
            "WHEN range % 4 = 0 THEN 'completed' ELSE 'waiting' END AS status, "
            "strftime(TIMESTAMP '2026-01-01' + to_seconds(range * 60), '%Y-%m-%dT%H:%M:%S.000000+00:00') AS at "
            "FROM range(?)) AS s",
            [version, count],
        )


def bulk_versions(rt: Runtime, total: int) -> None:
    """Versions up to ``total``, each a deploy of its own proposal repeating the last real one."""
    with rt.engine.transaction() as tx:
        number, spec_hash, spec, plan, proposal_id = tx.fetchone(
            "SELECT number, hash, spec, plan, proposal_id FROM _buttress.versions ORDER BY number DESC LIMIT 1"
        ) or (0, "", "", "", "")
        prop = tx.fetchone(
            "SELECT operations, target_spec, target_hash, plan_hash FROM _buttress.proposals WHERE id = ?",
            [proposal_id],
        )
        report = tx.scalar(
            "SELECT report FROM _buttress.dry_runs WHERE proposal_id = ? LIMIT 1", [proposal_id]
        )
        assert prop is not None
        seq = int(tx.scalar("SELECT max(seq) FROM _buttress.proposals"))
        run = int(tx.scalar("SELECT max(id) FROM _buttress.dry_runs"))
        start = time.time() - 10 * 24 * 3600
        for n in range(number + 1, total):
            seq, run = seq + 1, run + 1
            at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + n * 600))
            pid = f"p{seq}"
            tx.execute(
                "INSERT INTO _buttress.proposals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [pid, seq, n - 1, prop[0], prop[1], prop[2], plan, prop[3], f"change {n}", at, AGENTS[n % 4]],
            )
            tx.execute(
                "INSERT INTO _buttress.dry_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run, pid, n - 1, prop[3], True, report, at],
            )
            tx.execute(
                "INSERT INTO _buttress.versions VALUES (?, ?, ?, 'deploy', ?, NULL, ?, ?, ?, ?, ?)",
                [n, spec_hash, spec, n - 1, pid, plan, f"change {n}", at, AGENTS[n % 4]],
            )


def bulk_audit(rt: Runtime, count: int) -> None:
    """``count`` audit entries over the past 30 days, chained from the genesis hash, then anchored."""
    rng = random.Random(7)
    start = time.time() - 30 * 24 * 3600
    prev, rows = GENESIS, []
    for seq in range(1, count + 1):
        refused = rng.random() < 0.1
        fields: dict[str, Any] = {
            "seq": seq,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime(start + seq * 25.0)),
            "actor": rng.choice(AGENTS),
            "operation": rng.choice(OPERATIONS),
            "arguments": {"sql": f"select * from e0 where id = {seq}"}
            | ({"_refused": "'_buttress.audit' is a system object"} if refused else {}),
            "outcome": "refused" if refused else "ok",
            "error_code": rng.choice(CODES) if refused else None,
            "version_before": 0,
            "version_after": 0,
            "proposal_id": None,
            "prev_hash": prev,
        }
        fields["hash"] = prev = row_hash(fields)
        rows.append(fields)
    columns = list(rows[0])
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    with rt.engine.transaction() as tx:
        for first in range(0, count, BATCH):
            batch = rows[first : first + BATCH]
            values = [
                canonical_json(row[c]) if c == "arguments" else row[c] for row in batch for c in columns
            ]
            tx.execute(
                f"INSERT INTO _buttress.audit ({', '.join(columns)}) VALUES {', '.join(marks for _ in batch)}",
                values,
            )
    rt.audit.forget()
    with rt.engine.snapshot() as reader:
        rt.audit.reanchor(reader)


def runs(rt: Runtime, count: int) -> None:
    """``count`` runs of the ``hold`` workflow, each waiting for a signal after its first step; a
    third of them cancelled."""
    for n in range(count):
        rt.start_workflow(
            "hold", {"id": 1_000_000 + n, "label": f"run {n}"}, run_id=f"run-{n}", actor="claude"
        )
    rt.scheduler.drain()
    for n in range(0, count, 3):
        rt.cancel_run(f"run-{n}", reason="benchmark", actor="claude")
    rt.scheduler.drain()


def waiting_approval(rt: Runtime) -> None:
    """An agent's hazardous deploy waiting for the operator, and a refused retry of another."""
    proposal = rt.propose([{"op": "drop_field", "entity": "e0", "field": "note"}], actor="claude")
    assert rt.dry_run(proposal.proposal_id, actor="claude").passed
    try:
        rt.deploy(proposal.proposal_id, actor="claude")
    except ButtressError as error:
        assert error.code == "deploy.needs_approval"
    rt.flush_reads()


def build(root: Path, versions: int, audit: int, run_count: int, rows: int) -> Project:
    project = init(root, agent="claude")
    started = time.perf_counter()
    rt = project.open()
    try:
        bulk_audit(rt, audit)
        real_history(rt)
        events(rt, rows)
        bulk_versions(rt, versions)
    finally:
        rt.close()
    rt = project.open()
    try:
        runs(rt, RUNS)
        bulk_runs(rt, max(run_count - RUNS, 0))
        waiting_approval(rt)
    finally:
        rt.close()
    print(
        f"built {root}: {versions} versions, {audit:,} + a few audit entries, {rows:,} events, "
        f"{max(run_count, RUNS):,} runs in {time.perf_counter() - started:.1f} s"
    )
    return project


def pages(versions: int, audit: int) -> list[tuple[str, str]]:
    middle = versions // 2
    return [
        ("overview", "/"),
        ("versions", "/versions"),
        ("versions, an older page", f"/versions?before={middle}"),
        ("diff of two versions", "/versions/diff?from=1&to=4"),
        ("proposals", "/proposals"),
        ("proposals, pending", "/proposals?status=pending"),
        ("a proposal", "/proposals/p3"),
        ("approvals", "/approvals"),
        ("audit", "/audit"),
        ("audit, refusals", "/audit?outcome=refused"),
        ("audit, agent+code", "/audit?agent=ci-bot&code=policy.denied"),
        ("audit, deep page", f"/audit?before={audit // 2}"),
        ("audit, find an id", "/audit?q=id+%3D+4242"),
        ("audit, time range", "/audit?since=2026-01-01&until=2099-01-01&reads=1"),
        ("data", "/data"),
        ("data, a table page", "/data?table=e0&page=100"),
        ("data, 100k rows, facets", "/data?table=event"),
        ("data, filtered+sorted", "/data?table=event&f.kind.eq=kind_3&f.level.ge=2&sort=amount&desc=1"),
        ("data, a row + children", "/data/row?table=customer&k.id=3"),
        ("data, a SELECT's page", "/data?sql=select+*+from+event+order+by+id&page=5"),
        ("data, CSV export (1,000)", "/data/export?table=event&f.kind.eq=kind_1&format=csv"),
        ("workflows (10k runs)", "/workflows"),
        ("workflows, waiting", "/workflows?status=waiting"),
        ("workflows, search", "/workflows?q=bulk-77"),
        ("workflows, older page", "/workflows?before=2026-01-04T00:00:00&before_id=a"),
        ("bulk retry, confirm", "/workflows/bulk?do=retry&workflow=hold&status=failed"),
        ("a run's history", "/workflows/runs/run-7"),
        ("messages", "/messages?all=1"),
        ("effects", "/effects?state=any"),
        ("live (polled)", "/live"),
    ]


async def measure(room: ControlRoom, paths: list[tuple[str, str]], repeat: int) -> dict[str, list[float]]:
    transport = httpx2.ASGITransport(app=room.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8766") as client:
        signed_in = await client.get(room.login_url("http://127.0.0.1:8766"))
        assert signed_in.status_code == 303, signed_in.text
        times: dict[str, list[float]] = {}
        for name, path in paths:
            first = await client.get(path)
            assert first.status_code == 200, (path, first.status_code, first.text[:500])
            for _ in range(repeat):
                started = time.perf_counter()
                response = await client.get(path)
                times.setdefault(name, []).append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    print(f"\n{label}: ms per page (p50 / p90 / slowest)")
    for name, values in times.items():
        ordered = sorted(values)
        p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
        print(f"  {name:<26} {statistics.median(ordered):7.1f} {p90:7.1f} {ordered[-1]:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--audit", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="buttress-ui-bench-") as folder:
        project = build(Path(folder) / "project", args.versions, args.audit, args.runs, args.rows)
        paths = pages(args.versions, args.audit)

        owner = project.open()
        try:
            room = ControlRoom(project, lambda: owner)
            report(
                "owner (the control room opened the database)", anyio.run(measure, room, paths, args.repeat)
            )
            channel = ChannelServer(owner, socket_path(project.database))
            try:
                attached: RuntimeAPI = RemoteRuntime.attach(socket_path(project.database))
                room = ControlRoom(project, lambda: attached)
                report(
                    "attached (another process owns the database)",
                    anyio.run(measure, room, paths, args.repeat),
                )
            finally:
                channel.close()
            print(
                f"\naudit entries now: {owner.audit_page(limit=1).total:,}; rows of e0: "
                f"{json.dumps(owner.query('select count(*) from e0').rows[0][0])}; of event: "
                f"{json.dumps(owner.query('select count(*) from event').rows[0][0])}; runs: "
                f"{owner.search_runs(limit=1, failures=False).matching:,}"
            )
        finally:
            owner.close()


if __name__ == "__main__":
    main()
