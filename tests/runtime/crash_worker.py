"""A process that deploys and rolls back a multi-table change in a loop, to be killed with SIGKILL.

Run as ``python crash_worker.py DB [--ops N]`` on a copy of a template built by ``build_template``.
The database alternates between two specs: BASE (odd versions) and CHANGED (even versions). Each
loop step is one operation: at BASE it proposes, dry-runs and deploys CHANGE; at CHANGED it rolls
back. The worker prints, flushed, one line per event::

    READY <version>                  setup done (the parent may start its clock)
    BEGIN <op> <n> <version>         operation number n starts; <version> is what it would create
    DONE <op> <n> <version>          its transaction committed and the call returned
    STATEMENTS <phase> <count>       statements a phase (propose, dry_run, deploy, rollback) executed
    OP_MS <op> <milliseconds>        its duration

``BUTTRESS_CRASH=<op>:<point>[:<k>]`` with ``BUTTRESS_CRASH_AT=<n>`` makes the worker kill itself
with SIGKILL inside operation ``n``: ``before_commit`` / ``after_commit`` of the operation's
COMMIT, or ``statement`` right before its k-th statement. ``<op>`` is ``propose``, ``dry_run``,
``deploy`` or ``rollback``. The hooks wrap ``Engine._commit`` and ``Tx.execute`` in this process only.

The expected content of both specs is computed here in Python, independently of the runtime.
"""

from __future__ import annotations

import decimal
import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.runtime import Runtime
from runtime.store.engine import Engine, Tx

CUSTOMERS, ORDERS, ITEMS = 300, 3000, 5000

BASE = [
    {
        "op": "add_entity",
        "entity": {
            "name": "customer",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "name", "type": "text"},
                {"name": "tier", "type": "integer"},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "orders",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "customer_id", "type": "integer", "references": "customer.id"},
                {"name": "amount", "type": "decimal(10,2)"},
                {"name": "note", "type": "text", "nullable": True},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "item",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "qty", "type": "integer"},
                {"name": "note", "type": "text", "nullable": True},
                {"name": "price", "type": "double"},
            ],
        },
    },
]

# Touches all three tables: an ALTER on an FK parent, a rebuild of the parent (and its child), a
# rename on the child, a retained drop, a type change, an index and a view.
CHANGE = [
    {"op": "add_field", "entity": "customer", "field": {"name": "segment", "type": "text", "default": "std"}},
    {"op": "alter_field", "entity": "customer", "field": "tier", "check": "tier >= 0"},
    {"op": "rename_field", "entity": "orders", "field": "note", "new_name": "remark"},
    {"op": "drop_field", "entity": "item", "field": "note"},
    {"op": "alter_field", "entity": "item", "field": "qty", "type": "bigint"},
    {"op": "add_index", "entity": "item", "index": {"name": "item_price", "columns": ["price"]}},
    {
        "op": "add_view",
        "view": {"name": "remarked", "sql": "SELECT id, customer_id FROM orders WHERE remark IS NOT NULL"},
    },
]

SEED = [
    f"INSERT INTO customer SELECT i, 'c' || i, i % 5 FROM range(1, {CUSTOMERS + 1}) t(i)",
    f"INSERT INTO orders SELECT i, i % {CUSTOMERS} + 1, CAST((i * 37) % 10000 AS DECIMAL(10,2)) / 100, "
    f"CASE WHEN i % 4 = 0 THEN NULL ELSE 'n' || i END FROM range(1, {ORDERS + 1}) t(i)",
    f"INSERT INTO item SELECT i, i % 97, CASE WHEN i % 7 = 0 THEN NULL ELSE 'item ' || i END, i * 0.5 "
    f"FROM range(1, {ITEMS + 1}) t(i)",
]


def _cents(n: int) -> decimal.Decimal:
    return decimal.Decimal(n).scaleb(-2)


def expected_rows(changed: bool) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table's columns and rows (sorted by id) in the BASE or CHANGED spec, computed in Python."""
    customers = [(i, f"c{i}", i % 5) + (("std",) if changed else ()) for i in range(1, CUSTOMERS + 1)]
    orders = [
        (i, i % CUSTOMERS + 1, _cents((i * 37) % 10000), None if i % 4 == 0 else f"n{i}")
        for i in range(1, ORDERS + 1)
    ]
    items = [
        (i, i % 97) + (() if changed else (None if i % 7 == 0 else f"item {i}",)) + (i * 0.5,)
        for i in range(1, ITEMS + 1)
    ]
    return {
        "customer": (["id", "name", "tier", *(["segment"] if changed else [])], customers),
        "orders": (["id", "customer_id", "amount", "remark" if changed else "note"], orders),
        "item": (["id", "qty", *([] if changed else ["note"]), "price"], items),
    }


def digest(columns: list[str], rows: list[tuple[Any, ...]]) -> tuple[int, str]:
    """Row count and a checksum over column names and typed values."""
    h = hashlib.sha256(repr(columns).encode())
    for row in rows:
        h.update(repr([(type(v).__name__, v) for v in row]).encode())
    return len(rows), h.hexdigest()


def expected_digests(changed: bool) -> dict[str, tuple[int, str]]:
    return {name: digest(columns, rows) for name, (columns, rows) in expected_rows(changed).items()}


def table_digests(rt: Runtime) -> dict[str, tuple[int, str]]:
    """The same digests read from the database (application tables of the active spec)."""
    _, spec = rt.current
    out = {}
    with rt.engine.snapshot() as cursor:
        for entity in spec.entities:
            result = cursor.execute(f'SELECT * FROM "{entity.name}" ORDER BY id')
            columns = [d[0] for d in result.description or []]
            out[entity.name] = digest(columns, result.fetchall())
    return out


def build_template(path: Path) -> None:
    """Version 1 = BASE with its rows; closed cleanly (checkpointed)."""
    rt = Runtime.open(path, audit_reads=False)
    try:
        step(rt, "deploy", BASE)
        with rt.engine.transaction() as tx:
            for statement in SEED:
                tx.execute(statement)
    finally:
        rt.close()


def step(rt: Runtime, op: str, operations: list[dict[str, Any]] = CHANGE) -> int:
    """Propose, dry-run and deploy ``operations``, or roll back one version. Returns the new version."""
    if op == "rollback":
        return rt.rollback().version
    proposal = rt.propose(operations)
    report = rt.dry_run(proposal.proposal_id)
    if not report.passed:
        raise AssertionError(f"dry-run failed: {report.error}")
    return rt.deploy(proposal.proposal_id).version


# ---------------------------------------------------------------------------------------- the worker


class Crash:
    """Where to die: ``phase`` (propose/dry_run/deploy/rollback) of operation ``at``, at ``point``."""

    def __init__(self, spec: str, at: int) -> None:
        parts = spec.split(":")
        self.op, self.point = parts[0], parts[1]
        self.k = int(parts[2]) if len(parts) > 2 else 0
        self.at = at
        self.phase = ""
        self.n = 0
        self.statements = 0

    def enter(self, phase: str) -> None:
        if self.phase:
            say("STATEMENTS", self.phase, self.statements)
        self.phase, self.statements = phase, 0

    def armed(self, point: str) -> bool:
        return self.phase == self.op and self.n == self.at and self.point == point

    @staticmethod
    def die() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def install_hooks(crash: Crash) -> None:
    commit, execute = Engine._commit, Tx.execute

    def hooked_commit(self: Engine) -> None:
        if crash.armed("before_commit"):
            crash.die()
        commit(self)
        if crash.armed("after_commit"):
            crash.die()

    def hooked_execute(self: Tx, sql: str, params: Any = None) -> Any:
        crash.statements += 1
        if crash.armed("statement") and crash.statements == crash.k:
            crash.die()
        return execute(self, sql, params)

    Engine._commit = hooked_commit  # type: ignore[method-assign]
    Tx.execute = hooked_execute  # type: ignore[method-assign]


def say(*words: object) -> None:
    print(*words, flush=True)


def main(argv: list[str]) -> int:
    path, limit = Path(argv[0]), int(argv[argv.index("--ops") + 1]) if "--ops" in argv else 1000
    crash = Crash(
        os.environ.get("BUTTRESS_CRASH", "none:none"), int(os.environ.get("BUTTRESS_CRASH_AT", "1"))
    )
    install_hooks(crash)
    rt = Runtime.open(path, audit_reads=False)
    version, _ = rt.current
    say("READY", version)
    for n in range(1, limit + 1):
        version, _ = rt.current
        op = "deploy" if version % 2 == 1 else "rollback"
        crash.n = n
        say("BEGIN", op, n, version + 1)
        started = time.perf_counter()
        if op == "rollback":
            crash.enter("rollback")
            new = rt.rollback().version
        else:
            crash.enter("propose")
            proposal = rt.propose(CHANGE)
            crash.enter("dry_run")
            report = rt.dry_run(proposal.proposal_id)
            if not report.passed:
                say("FAILED", report.error)
                return 1
            crash.enter("deploy")
            new = rt.deploy(proposal.proposal_id).version
        crash.enter("")
        say("DONE", op, n, new)
        say("OP_MS", op, round((time.perf_counter() - started) * 1000, 1))
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
