"""A project with a history, for the control room's tests, its screenshots and its benchmark.

``build(folder)`` makes it with ``buttress init``'s layout and the project's own runtime, acting as
an agent (``claude``) and as the operator, against a fake payment provider on 127.0.0.1 that
answers as told (``Showcase.provider``):

* **versions** with a rollback (a version with the same spec as an earlier one);
* **proposals** deployed, pending, stale, one whose dry-run failed, one never dry-run, one refused;
* **approval requests** in every state: pending (with rows it would drop), approved and not yet
  used, used, refused, expired, stale because the version moved on, stale because the last
  dry-run of its plan failed;
* **runs in every state** (running with a retry due in an hour, waiting, compensating, blocked on
  an unknown effect, blocked after a completed effect, completed, compensated, failed in the same
  way several times, cancelled), an unknown effect, undelivered messages;
* a **reference chain** customer ← orders ← order_line, and ``event``: ``big_rows`` rows with
  low-cardinality columns, written by the operator's ``fill_events`` action as one INSERT ... SELECT
  from ``range()``;
* agent calls refused with their messages;
* hostile strings wherever agents and data put text: a run id, a proposal's note, a cancel reason,
  a signal's payload, a customer's name (``HOSTILE``), and a cell a spreadsheet would run (``=1+2``).

Nothing runs in the background: the scheduler is drained by hand, so every state stays as built
until a test acts on it.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mcp_server.project import Project, init
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.fakes.provider import State, serve
from tests.mcp_server.helpers import configure

AGENT = "claude"
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
HOSTILE_RUN = '<img src=x onerror="window.pwned=3">'


def _entity(name: str, fields: list[dict[str, Any]], key: tuple[str, ...] = ("id",)) -> dict[str, Any]:
    return {"op": "add_entity", "entity": {"name": name, "primary_key": list(key), "fields": fields}}


def _action(name: str, params: dict[str, str], *statements: str) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": t} for p, t in params.items()],
            "statements": list(statements),
        },
    }


SCHEMA: list[dict[str, Any]] = [
    _entity(
        "customer",
        [
            {"name": "id", "type": "integer"},
            {"name": "name", "type": "text"},
            {"name": "tier", "type": "text"},
            {"name": "note", "type": "text", "nullable": True},
            {"name": "fax", "type": "text", "nullable": True},
        ],
    ),
    _entity(
        "orders",
        [
            {"name": "id", "type": "integer"},
            {"name": "customer", "type": "integer", "references": "customer.id"},
            {"name": "status", "type": "text"},
            {"name": "memo", "type": "text", "nullable": True},
            {"name": "legacy_ref", "type": "text", "nullable": True},
        ],
    ),
    _entity(
        "order_line",
        [
            {"name": "id", "type": "integer"},
            {"name": "order_id", "type": "integer", "references": "orders.id"},
            {"name": "sku", "type": "text"},
            {"name": "qty", "type": "integer"},
        ],
    ),
    _entity(
        "event",
        [
            {"name": "id", "type": "bigint"},
            {"name": "kind", "type": "text"},
            {"name": "level", "type": "integer"},
            {"name": "customer", "type": "integer", "references": "customer.id"},
            {"name": "happened", "type": "timestamp"},
            {"name": "amount", "type": "decimal(12,2)"},
            {"name": "flagged", "type": "boolean", "nullable": True},
        ],
    ),
    _entity(
        "stock",
        [{"name": "sku", "type": "text"}, {"name": "qty", "type": "integer", "check": "qty >= 0"}],
        ("sku",),
    ),
    _entity(
        "sale",
        [
            {"name": "id", "type": "text"},
            {"name": "sku", "type": "text"},
            {"name": "charge", "type": "text", "nullable": True},
        ],
    ),
    _action("reserve", {"sku": "text"}, "update stock set qty = qty - 1 where sku = $sku returning qty"),
    _action("release", {"sku": "text"}, "update stock set qty = qty + 1 where sku = $sku"),
    _action(
        "record_sale",
        {"id": "text", "sku": "text", "charge": "text"},
        "insert into sale values ($id, $sku, $charge)",
    ),
    _action("count_stock", {"sku": "text"}, "update stock set qty = cast($sku as integer) where sku = $sku"),
    _action(
        "fill_events",
        {"rows": "bigint"},
        "insert into event select range, 'kind_' || (range % 7), range % 5, range % 10, "
        "timestamp '2025-01-01' + to_seconds(range * 30), (range % 1000) / 10.0, "
        "case when range % 3 = 0 then null else range % 2 = 0 end from range($rows)",
    ),
    {
        "op": "add_topic",
        "topic": {
            "name": "sales",
            "payload": [{"name": "sale", "type": "text"}, {"name": "sku", "type": "text"}],
            "key": "sku",
            "external": True,
        },
    },
]

WORKFLOWS: list[dict[str, Any]] = [
    {
        "op": "add_workflow",
        "workflow": {
            "name": "hold",
            "params": [{"name": "sku", "type": "text"}],
            "steps": [
                {
                    "name": "reserve",
                    "kind": "action",
                    "action": "reserve",
                    "args": {"sku": {"from": "input.sku"}},
                    "compensation": {"action": "release", "args": {"sku": {"from": "input.sku"}}},
                },
                {"name": "confirm", "kind": "wait", "signal": "confirmed"},
                {"name": "cool_down", "kind": "sleep", "seconds": 0},
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "checkout",
            "params": [
                {"name": "sale", "type": "text"},
                {"name": "sku", "type": "text"},
                {"name": "amount", "type": "integer"},
            ],
            "steps": [
                {
                    "name": "reserve",
                    "kind": "action",
                    "action": "reserve",
                    "args": {"sku": {"from": "input.sku"}},
                    "compensation": {"action": "release", "args": {"sku": {"from": "input.sku"}}},
                },
                {
                    "name": "charge",
                    "kind": "effect",
                    "connector": "payments",
                    "args": {
                        "customer": "c1",
                        "amount": {"from": "input.amount"},
                        "order": {"from": "input.sale"},
                    },
                    "retry": {"attempts": 2, "backoff_s": 0.01},
                },
                {
                    "name": "record",
                    "kind": "action",
                    "action": "record_sale",
                    "args": {
                        "id": {"from": "input.sale"},
                        "sku": {"from": "input.sku"},
                        "charge": {"from": "steps.charge.id"},
                    },
                },
                {
                    "name": "announce",
                    "kind": "publish",
                    "topic": "sales",
                    "args": {"sale": {"from": "input.sale"}, "sku": {"from": "input.sku"}},
                },
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "patient_charge",
            "params": [{"name": "sale", "type": "text"}],
            "steps": [
                {
                    "name": "charge",
                    "kind": "effect",
                    "connector": "payments",
                    "args": {"customer": "c2", "amount": 5, "order": {"from": "input.sale"}},
                    "retry": {"attempts": 3, "backoff_s": 3600},
                }
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "restock",
            "params": [{"name": "sku", "type": "text"}],
            "steps": [
                {
                    "name": "count",
                    "kind": "action",
                    "action": "count_stock",
                    "args": {"sku": {"from": "input.sku"}},
                }
            ],
        },
    },
    {
        "op": "add_workflow",
        "workflow": {
            "name": "charge_then_count",
            "params": [{"name": "sale", "type": "text"}, {"name": "sku", "type": "text"}],
            "steps": [
                {
                    "name": "charge",
                    "kind": "effect",
                    "connector": "payments",
                    "args": {"customer": "c3", "amount": 7, "order": {"from": "input.sale"}},
                    "retry": {"attempts": 1},
                },
                {
                    "name": "count",
                    "kind": "action",
                    "action": "count_stock",
                    "args": {"sku": {"from": "input.sku"}},
                },
            ],
        },
    },
]


@dataclass
class Showcase:
    """The built project, its open runtime, the provider it pays through, and the names of things."""

    project: Project
    runtime: Runtime
    provider: State
    server: ThreadingHTTPServer
    names: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        self.runtime.close()
        self.server.shutdown()
        self.server.server_close()


def _ship(rt: Runtime, operations: list[dict[str, Any]], note: str | None = None, actor: str = AGENT) -> int:
    proposal = rt.propose(operations, note=note, actor=actor)
    report = rt.dry_run(proposal.proposal_id, actor=actor)
    assert report.passed, report.error
    return rt.deploy(proposal.proposal_id, actor=actor).version


def _waiting(rt: Runtime, operations: list[dict[str, Any]], note: str) -> tuple[str, str]:
    """The agent proposes and dry-runs a hazardous change; its deploy waits: (proposal, request)."""
    proposal = rt.propose(operations, note=note, actor=AGENT)
    assert rt.dry_run(proposal.proposal_id, actor=AGENT).passed
    try:
        rt.deploy(proposal.proposal_id, actor=AGENT)
    except ButtressError as error:
        assert error.code == "deploy.needs_approval", error
        return proposal.proposal_id, str(error.details["approval_request"])
    raise AssertionError("the deploy did not wait for an approval")


def build(folder: Path, *, big_rows: int = 100_000, holds: int = 55) -> Showcase:
    """The project described in the module docstring, in ``folder``."""
    state = State(seed=1, fail_rate=0.0, drop_rate=0.0, decline_over=1000)
    server = serve(0, state)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    project = init(folder, agent=AGENT)
    configure(
        folder,
        connectors={
            "payments": {"url": f"{base}/charges", "timeout_s": 2},
            "refunds": {"url": f"{base}/refunds", "timeout_s": 2},
        },
    )
    rt = project.open()
    show = Showcase(project, rt, state, server)
    names = show.names
    try:
        _history(rt, names, big_rows)
        _approvals(rt, names)
        _runs(rt, state, names, holds)
        _refusals(rt)
        rt.flush_reads()
    except BaseException:
        show.close()
        raise
    return show


def _history(rt: Runtime, names: dict[str, str], big_rows: int) -> None:
    _ship(rt, SCHEMA, "the shop's tables")
    with rt.engine.transaction() as tx:
        tx.execute(
            "INSERT INTO customer SELECT range, 'customer ' || range, CASE WHEN range % 3 = 0 THEN 'gold' "
            "ELSE 'basic' END, CASE WHEN range % 2 = 0 THEN 'likes tea' END, NULL FROM range(10)"
        )
        tx.execute(
            "INSERT INTO orders SELECT range, range % 10, CASE range % 3 WHEN 0 THEN 'open' WHEN 1 THEN 'paid' "
            "ELSE 'shipped' END, NULL, 'old-' || range FROM range(40)"
        )
        tx.execute(
            "INSERT INTO order_line SELECT range, range % 40, 'sku-' || (range % 4), 1 + range % 3 FROM range(120)"
        )
        tx.execute("INSERT INTO stock VALUES ('apple', 500), ('pear', 500)")
        tx.execute(
            "INSERT INTO customer VALUES (11, ?, 'basic', ?, NULL), (12, '=1+2', 'basic', NULL, NULL)",
            [HOSTILE, HOSTILE],
        )
    rt.run_action("fill_events", {"rows": big_rows})  # the operator's one INSERT ... SELECT
    _ship(rt, WORKFLOWS, "holds, checkouts and restocks")
    _ship(
        rt,
        [
            {
                "op": "add_view",
                "view": {
                    "name": "gold_customers",
                    "sql": "select id, name from customer where tier = 'gold'",
                },
            }
        ],
    )
    _ship(
        rt,
        [{"op": "add_index", "entity": "event", "index": {"name": "by_kind", "columns": ["kind"]}}],
        HOSTILE,
    )
    added = _ship(
        rt,
        [
            {
                "op": "add_field",
                "entity": "customer",
                "field": {"name": "phone", "type": "text", "nullable": True},
            }
        ],
        "a phone number",
    )
    rolled = rt.rollback(to_version=added - 1)  # the operator rolls it back: a version with an earlier spec
    names["rollback"] = str(rolled.version)
    names["restored"] = str(rolled.restored_version)
    _ship(
        rt,
        [
            {
                "op": "replace_view",
                "view": {
                    "name": "gold_customers",
                    "sql": "select id, name, tier from customer where tier = 'gold' and id > 0 order by id",
                },
            }
        ],
        "gold customers with their tier",
    )


def _approvals(rt: Runtime, names: dict[str, str]) -> None:
    # Requests that go stale when the version moves on, or are used by the deploy that moves it.
    names["stale_proposal"], names["stale_request"] = _waiting(
        rt, [{"op": "drop_field", "entity": "orders", "field": "memo"}], "memos are never written"
    )
    names["used_proposal"], names["used_request"] = _waiting(
        rt, [{"op": "drop_field", "entity": "order_line", "field": "qty"}], "quantities move to sale"
    )
    rt.approve_request(names["used_request"])
    rt.deploy(names["used_proposal"], actor=AGENT)
    # On the final version: one of each.
    names["pending_proposal"], names["pending_request"] = _waiting(
        rt, [{"op": "drop_field", "entity": "customer", "field": "note"}], "notes are unused"
    )
    names["approved_proposal"], names["approved_request"] = _waiting(
        rt, [{"op": "drop_entity", "entity": "order_line"}], "lines are folded into orders"
    )
    rt.approve_request(names["approved_request"])
    names["refused_proposal"], names["refused_request"] = _waiting(
        rt,
        [{"op": "drop_field", "entity": "orders", "field": "legacy_ref"}],
        "nobody reads the old references",
    )
    rt.refuse_request(names["refused_request"], reason="The accountants read sales every morning.")
    names["expired_proposal"], names["expired_request"] = _waiting(
        rt, [{"op": "drop_field", "entity": "customer", "field": "fax"}], "nobody faxes"
    )
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)).isoformat()
    with rt.engine.transaction() as tx:
        tx.execute(
            "UPDATE _buttress.approvals SET expires_at = ? WHERE id = ?", [past, names["expired_request"]]
        )
    # Stale because the last dry-run of its plan failed: the data changed under it.
    invariant = {
        "op": "add_invariant",
        "invariant": {"name": "named", "sql": "select id from customer where name = ''"},
    }
    names["failing_proposal"], names["failing_request"] = _waiting(
        rt, [{"op": "drop_field", "entity": "orders", "field": "status"}, invariant], "status is derived"
    )
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO customer VALUES (10, '', 'basic', NULL, NULL)")
    assert not rt.dry_run(names["failing_proposal"], actor=AGENT).passed
    # Proposals without a request: a failed dry-run, and one never dry-run.
    broken = rt.propose(
        [
            {
                "op": "add_invariant",
                "invariant": {"name": "stocked", "sql": "select sku from stock where qty > 100"},
            }
        ],
        note="nothing is overstocked",
        actor=AGENT,
    )
    assert not rt.dry_run(broken.proposal_id, actor=AGENT).passed
    names["dry_run_failed"] = broken.proposal_id
    names["never_dry_run"] = rt.propose(
        [
            {
                "op": "add_view",
                "view": {
                    "name": "open_orders",
                    "sql": "select id, customer from orders where status = 'open'",
                },
            }
        ],
        note="open orders at a glance",
        actor=AGENT,
    ).proposal_id


def _runs(rt: Runtime, state: State, names: dict[str, str], holds: int) -> None:
    start = rt.start_workflow
    for n in range(holds):
        start("hold", {"sku": "apple"}, run_id=f"hold-{n:03d}", actor=AGENT)
    start("checkout", {"sale": "s-ok", "sku": "pear", "amount": 12}, run_id="checkout-ok", actor=AGENT)
    start(
        "checkout", {"sale": "s-big", "sku": "pear", "amount": 5000}, run_id="checkout-declined", actor=AGENT
    )
    for n in range(4):
        start("restock", {"sku": "apple"}, run_id=f"restock-{n}", actor=AGENT)
    rt.scheduler.drain()
    state.fail_rate = 1.0  # the provider stops answering
    start("checkout", {"sale": "s-lost", "sku": "pear", "amount": 20}, run_id="checkout-lost", actor=AGENT)
    start("patient_charge", {"sale": "s-later"}, run_id="patient-1", actor=AGENT)
    rt.scheduler.drain()
    state.fail_rate = 0.0
    start("charge_then_count", {"sale": "s-half", "sku": "apple"}, run_id="half-done", actor=AGENT)
    rt.scheduler.drain()
    for n in (0, 1, 2):
        rt.signal_run(f"hold-{n:03d}", "confirmed", {"by": "desk"}, actor=AGENT)
    rt.cancel_run("hold-003", reason="the guest left", actor=AGENT)
    rt.scheduler.drain()
    start("hold", {"sku": HOSTILE}, run_id=HOSTILE_RUN, actor=AGENT)
    rt.scheduler.drain()
    rt.signal_run(HOSTILE_RUN, "confirmed", {"note": HOSTILE}, actor=AGENT)
    rt.scheduler.drain()
    rt.cancel_run("hold-004", reason=HOSTILE)  # the operator's; its compensation has not run yet
    names.update(
        completed="hold-000",
        waiting="hold-010",
        cancelled="hold-003",
        compensating="hold-004",
        compensated="checkout-declined",
        blocked="checkout-lost",
        unsettled="half-done",
        running="patient-1",
        failed="restock-0",
    )
    expected = {
        "hold-000": "completed",
        "hold-010": "waiting",
        "hold-003": "cancelled",
        "hold-004": "compensating",
        "checkout-ok": "completed",
        "checkout-declined": "compensated",
        "checkout-lost": "blocked",
        "half-done": "blocked",
        "patient-1": "running",
        "restock-0": "failed",
    }
    found = {run_id: rt.get_run(run_id).status for run_id in expected}
    assert found == expected, found


def _refusals(rt: Runtime) -> None:
    for sql in ("select * from _buttress.audit", "select * from read_csv('/etc/passwd')"):
        with contextlib.suppress(ButtressError):
            rt.query(sql, actor=AGENT)
