"""``buttress demo``: a scripted agent drives a real ``buttress serve`` over stdio with the SDK's
``Client``, in a throwaway project, and prints what happens.

It builds a small booking app (slot, booking), loads sample rows, makes a destructive change
(drop ``slot.note``, rename ``booking.who`` to ``guest``), deploys it, rolls it back, shows the data
intact, and verifies the audit chain after the project's owner (the daemon its ``buttress serve``
started) stops.

Rows are written the way an application writes them: through actions (``app_add_slot``,
``app_book``) deployed with an invariant that no slot is overbooked. The ``demo_seed_rows`` tool
below is registered only by the hidden ``serve --demo-seed`` flag, for tests that need rows
without deploying actions first.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from runtime.workflows.status import RunStatus
from tools.base import ToolContext, ToolSpec, call_runtime, changing

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult

    from runtime.api import RuntimeAPI

AGENT = "demo-agent"

SLOT: dict[str, Any] = {
    "name": "slot",
    "primary_key": ["id"],
    "fields": [
        {"name": "id", "type": "integer"},
        {"name": "starts_at", "type": "timestamp"},
        {"name": "capacity", "type": "integer", "check": "capacity > 0"},
        {"name": "note", "type": "text", "nullable": True},
    ],
}
BOOKING: dict[str, Any] = {
    "name": "booking",
    "primary_key": ["id"],
    "fields": [
        {"name": "id", "type": "integer"},
        {"name": "slot_id", "type": "integer", "references": "slot.id"},
        {"name": "who", "type": "text"},
    ],
}
LOGIC: list[dict[str, Any]] = [
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_overbooking",
            "description": "no slot holds more bookings than seats",
            "sql": "select s.id from slot s join booking b on b.slot_id = s.id group by s.id, s.capacity having count(*) > s.capacity",
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "add_slot",
            "kind": "mutation",
            "description": "Open a slot.",
            "params": [
                {"name": "id", "type": "integer"},
                {"name": "starts_at", "type": "timestamp"},
                {"name": "capacity", "type": "integer"},
                {"name": "note", "type": "text", "nullable": True},
            ],
            "statements": [
                "insert into slot (id, starts_at, capacity, note) values ($id, $starts_at, $capacity, $note)"
            ],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "book",
            "kind": "mutation",
            "description": "Book a seat on a slot.",
            "params": [
                {"name": "id", "type": "integer"},
                {"name": "slot_id", "type": "integer"},
                {"name": "who", "type": "text"},
            ],
            "statements": [
                "insert into booking (id, slot_id, who) values ($id, $slot_id, $who) returning id"
            ],
        },
    },
]
DESTRUCTIVE_CHANGE: list[dict[str, Any]] = [
    {"op": "drop_field", "entity": "slot", "field": "note"},
    {"op": "rename_field", "entity": "booking", "field": "who", "new_name": "guest"},
    {
        "op": "replace_action",
        "action": {
            "name": "add_slot",
            "kind": "mutation",
            "description": "Open a slot.",
            "params": [
                {"name": "id", "type": "integer"},
                {"name": "starts_at", "type": "timestamp"},
                {"name": "capacity", "type": "integer"},
            ],
            "statements": ["insert into slot (id, starts_at, capacity) values ($id, $starts_at, $capacity)"],
        },
    },
    {
        "op": "replace_action",
        "action": {
            "name": "book",
            "kind": "mutation",
            "description": "Book a seat on a slot.",
            "params": [
                {"name": "id", "type": "integer"},
                {"name": "slot_id", "type": "integer"},
                {"name": "guest", "type": "text"},
            ],
            "statements": [
                "insert into booking (id, slot_id, guest) values ($id, $slot_id, $guest) returning id"
            ],
        },
    },
]

LATE_BOOKING: dict[str, Any] = {
    "op": "add_workflow",
    "workflow": {
        "name": "late_booking",
        "description": "Hold a booking request for two seconds, then book it.",
        "params": [
            {"name": "id", "type": "integer"},
            {"name": "slot_id", "type": "integer"},
            {"name": "who", "type": "text"},
        ],
        "steps": [
            {"name": "hold", "kind": "sleep", "seconds": 2},
            {
                "name": "book",
                "kind": "action",
                "action": "book",
                "args": {
                    "id": {"from": "input.id"},
                    "slot_id": {"from": "input.slot_id"},
                    "who": {"from": "input.who"},
                },
            },
        ],
    },
}

SAMPLE_SLOTS = [
    (1, "2025-06-02 09:00:00", 12, "morning yoga"),
    (2, "2025-06-02 18:30:00", 4, None),
    (3, "2025-06-03 12:00:00", 20, "lunch talk"),
]
SAMPLE_BOOKINGS = [(1, 1, "ada"), (2, 1, "grace"), (3, 3, "linus"), (4, 2, "barbara")]


# ------------------------------------------------------------------------------ the demo-only tool


class SeedOutput(BaseModel):
    """How many sample rows were inserted."""

    slots: int
    bookings: int


def seed(api: RuntimeAPI, actor: str) -> SeedOutput:
    """Insert the sample rows through the writer lane, audited in the same transaction."""
    from runtime.runtime import Runtime

    if not isinstance(api, Runtime):
        raise RuntimeError("demo_seed_rows needs the process that owns the database")
    runtime = api
    version, _ = runtime.current
    with runtime.engine.transaction() as tx:
        for slot in SAMPLE_SLOTS:
            tx.execute("INSERT INTO slot (id, starts_at, capacity, note) VALUES (?, ?, ?, ?)", list(slot))
        for booking in SAMPLE_BOOKINGS:
            tx.execute("INSERT INTO booking (id, slot_id, who) VALUES (?, ?, ?)", list(booking))
        runtime.audit.append(
            tx,
            actor=actor,
            operation="demo_seed_rows",
            arguments={},
            outcome="ok",
            version_before=version,
            version_after=version,
        )
    return SeedOutput(slots=len(SAMPLE_SLOTS), bookings=len(SAMPLE_BOOKINGS))


async def demo_seed_rows(ctx: ToolContext) -> SeedOutput:
    """DEMO ONLY (registered only by `buttress serve --demo-seed`): insert sample rows into the demo's
    `slot` and `booking` entities. Real applications write rows through actions."""
    return await call_runtime(ctx, seed)


DEMO_TOOLS: tuple[ToolSpec, ...] = (
    changing(demo_seed_rows, "Seed demo rows (demo only)", destructive=False, idempotent=False),
)


# ------------------------------------------------------------------------------------ the scripted agent


class DemoFailed(Exception):
    """A step of the demo did not go as scripted."""


def say(text: str = "") -> None:
    """Print one transcript line."""
    print(text, flush=True)


def step(title: str) -> None:
    """Print a step header."""
    say(f"\n== {title}")


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    """Print an MCP progress notification."""
    say(f"     [{progress:g}/{total or 0:g}] {message or ''}")


async def call(
    client: Client, tool: str, arguments: dict[str, Any] | None = None, *, progress: bool = False
) -> dict[str, Any]:
    """Call a tool; a tool error stops the demo with its code and message."""
    result: CallToolResult = await client.call_tool(
        tool, arguments or {}, progress_callback=show_progress if progress else None
    )
    content = result.structured_content or {}
    if result.is_error:
        error = content.get("error", {})
        raise DemoFailed(f"{tool} failed: [{error.get('code')}] {error.get('message')}")
    return content


def show_rows(result: dict[str, Any]) -> None:
    """Print a query result as a small table."""
    say("   " + " | ".join(result["columns"]))
    for row in result["rows"]:
        say("   " + " | ".join("NULL" if v is None else str(v) for v in row))


def operator_approves(project: Path, request: str) -> None:
    """The operator, in another terminal: ``buttress approve REQUEST --project DIR --yes``."""
    import subprocess

    command = [sys.executable, "-m", "mcp_server", "approve", request, "--project", str(project), "--yes"]
    say(f"   operator (another process): buttress approve {request} --project {project.name} --yes")
    done = subprocess.run(
        command, capture_output=True, text=True, env=_source_env(), timeout=60, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise DemoFailed(f"buttress approve failed: {done.stderr.strip()}")
    for line in done.stdout.strip().splitlines():
        say(f"     {line}")


async def deploy_change(
    client: Client, proposal: dict[str, Any], *, progress: bool = False, project: Path | None = None
) -> int:
    """Print a proposal's hazards, dry-run it, print the report, deploy it (with the operator's approval
    when its hazards need one); returns the new version."""
    pid = proposal["proposal_id"]
    say(f"   proposal {pid}: " + "; ".join(s["summary"] for s in proposal["steps"]))
    for hazard in proposal["hazards"]:
        say(f"   hazard {hazard['code']} [{hazard['severity']}]: {hazard['message']}")
    dry = await call(client, "dry_run", {"proposal_id": pid}, progress=progress)
    for report in dry["report"]["steps"]:
        for loss in report["losses"]:
            say(f"   dry-run loss {loss['code']}: {loss['count']} {loss['message']} (retained for rollback)")
    if not dry["passed"]:
        raise DemoFailed(f"dry-run of {pid} failed: {dry['report']['error']}")
    say("   dry-run passed: " + ", ".join(f"{c['name']} ok" for c in dry["report"]["checks"]))
    first = await client.call_tool("deploy", {"proposal_id": pid})
    if first.is_error:
        error = (first.structured_content or {}).get("error", {})
        if error.get("code") != "deploy.needs_approval" or project is None:
            raise DemoFailed(f"deploy failed: [{error.get('code')}] {error.get('message')}")
        say(f"   deploy refused: {error['code']} (request {error['details']['approval_request']})")
        operator_approves(project, error["details"]["approval_request"])
    deployed = (
        await call(client, "deploy", {"proposal_id": pid}, progress=progress)
        if first.is_error
        else (first.structured_content or {})
    )
    say(f"   deployed: version {deployed['previous_version']} -> {deployed['version']}")
    return int(deployed["version"])


async def script(client: Client, project: Path) -> None:
    """The scripted agent's session, start to finish."""
    step("1. describe_app")
    app = await call(client, "describe_app")
    say(f"   version {app['version']}, {len(app['entities'])} entities")

    step("2. define the booking app (define_entity slot, then booking)")
    for entity in (SLOT, BOOKING):
        await deploy_change(client, await call(client, "define_entity", {"entity": entity, "note": "demo"}))

    step("3. add logic: an invariant (no overbooking) and two actions (add_slot, book)")
    await deploy_change(client, await call(client, "propose_change", {"operations": LOGIC}))
    tools = sorted(t.name for t in (await client.list_tools()).tools if t.name.startswith("app_"))
    say(f"   new tools: {', '.join(tools)}")

    step("4. load sample rows through the actions")
    for slot_id, starts_at, capacity, note in SAMPLE_SLOTS:
        await call(
            client,
            "app_add_slot",
            {"id": slot_id, "starts_at": starts_at, "capacity": capacity, "note": note},
        )
    for booking_id, slot_id, who in SAMPLE_BOOKINGS:
        await call(client, "app_book", {"id": booking_id, "slot_id": slot_id, "who": who})
    say(f"   {len(SAMPLE_SLOTS)} slots, {len(SAMPLE_BOOKINGS)} bookings")
    for n in range(5, 9):  # slot 2 has 4 seats and one booking: three more fit, the fourth does not
        result = await client.call_tool("app_book", {"id": n, "slot_id": 2, "who": f"walk-in {n}"})
        if result.is_error:
            error = (result.structured_content or {}).get("error", {})
            say(f"   booking {n} on slot 2 refused: {error.get('code')} ({error.get('message')})")
            if error.get("code") != "invariant.violated":
                raise DemoFailed(f"expected invariant.violated, got {error}")
    show_rows(await call(client, "query", {"sql": "select id, capacity, note from slot order by id"}))

    step("5. propose a destructive change: drop slot.note, rename booking.who -> guest")
    proposal = await call(
        client,
        "propose_change",
        {"operations": DESTRUCTIVE_CHANGE, "note": "notes are unused; 'guest' reads better"},
    )
    await deploy_change(client, proposal, progress=True, project=project)

    step("6. query the new shape")
    show_rows(await call(client, "query", {"sql": "select * from slot order by id"}))
    show_rows(await call(client, "query", {"sql": "select id, guest from booking order by id"}))

    step("7. roll back")
    rolled = await call(client, "rollback", progress=True)
    say(
        f"   version {rolled['previous_version']} -> {rolled['version']} (spec of version {rolled['restored_version']})"
    )

    step("8. query: the notes and the old field name are back")
    notes = await call(client, "query", {"sql": "select id, note from slot order by id"})
    show_rows(notes)
    if [row[1] for row in notes["rows"]] != [s[3] for s in SAMPLE_SLOTS]:
        raise DemoFailed("the notes did not come back intact")
    show_rows(await call(client, "query", {"sql": "select id, who from booking order by id"}))

    step("9. a durable workflow: wait two seconds, then book (the project's owner stops while it waits)")
    await deploy_change(client, await call(client, "propose_change", {"operations": [LATE_BOOKING]}))
    run = await call(
        client,
        "start_workflow",
        {
            "workflow": "late_booking",
            "args": {"id": 42, "slot_id": 3, "who": "margaret"},
            "run_id": "late-42",
        },
    )
    waiting = await call(client, "get_run", {"run_id": run["run_id"]})
    for _ in range(100):  # the server's scheduler takes the run to its sleep step in the background
        if waiting["status"] != RunStatus.RUNNING:
            break
        await _sleep(0.05)
        waiting = await call(client, "get_run", {"run_id": run["run_id"]})
    say(f"   run {run['run_id']}: {waiting['status']} ({waiting['waiting_on'] or waiting['step']})")


async def after_restart(client: Client) -> None:
    """A new owner: the run resumes where it stopped and books exactly once."""
    run: dict[str, Any] = {}
    for _ in range(200):
        run = await call(client, "get_run", {"run_id": "late-42"})
        if run["status"] not in {RunStatus.RUNNING, RunStatus.WAITING}:
            break
        await _sleep(0.1)
    say(
        f"   after the restart: run late-42 {run['status']}, steps "
        + ", ".join(s["name"] for s in run["steps"])
    )
    booked = await call(client, "query", {"sql": "select id, slot_id, who from booking where id = 42"})
    if run["status"] != RunStatus.COMPLETED or len(booked["rows"]) != 1:
        raise DemoFailed(f"the workflow did not resume once after the restart: {run['status']}")
    show_rows(booked)

    step("10. read_audit")
    audit = await call(client, "read_audit", {"limit": 200})
    counts: dict[str, int] = {}
    for entry in audit["entries"]:
        counts[entry["operation"]] = counts.get(entry["operation"], 0) + 1
    say(f"   {len(audit['entries'])} entries: " + ", ".join(f"{op} x{n}" for op, n in counts.items()))


def _source_env() -> dict[str, str]:
    """The environment of a child process: this checkout importable, whatever is installed."""
    source = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def server_parameters(project: Path) -> Any:
    """``buttress serve`` for ``project`` over stdio, importable from this checkout."""
    from mcp import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "serve", "--project", str(project), "--agent", AGENT],
        env=_source_env(),
    )


async def drive(project: Path) -> None:
    """Connect the SDK client to a spawned server and run the script."""
    import anyio
    from mcp import Client

    async with Client(server_parameters(project)) as client:
        say(f"connected to buttress serve (protocol {client.protocol_version})")
        await script(client, project)
    # The session has ended; the project daemon it started goes on owning the project. Stop it too,
    # as a reboot would: the next session starts a new one, which finds the run where it stopped.
    await anyio.to_thread.run_sync(stop_owner, project)
    say("   session ended and the project's owner stopped; a new session starts a new one")
    async with Client(server_parameters(project)) as client:
        await after_restart(client)


def stop_owner(project: Path) -> None:
    """Stop the project daemon of ``project`` (it checkpoints the database and lets go of it)."""
    from mcp_server import owner
    from mcp_server.project import Project

    owner.stop_owner(Project.load(project))


def verify_audit(project: Path) -> None:
    """After the owner stopped: reopen the database and recompute the audit chain."""
    from mcp_server.project import Project

    step("11. verify the audit chain (owner stopped, database reopened)")
    stop_owner(project)
    runtime = Project.load(project).open()
    try:
        result = runtime.verify_audit()
    finally:
        runtime.close()
    if not result.ok:
        raise DemoFailed(f"audit chain broken at seq {result.first_bad_seq}: {result.problem}")
    say(f"   audit chain ok: {result.entries} entries")


def run_demo() -> int:
    """Run the whole demo in a temporary project; 0 on success, 1 with a message otherwise."""
    import anyio

    from mcp_server.project import init
    from runtime.errors import ButtressError

    with tempfile.TemporaryDirectory(prefix="buttress-demo-") as tmp:
        project = init(Path(tmp) / "bookings", agent=AGENT).root
        say(f"demo project: {project}")
        try:
            anyio.run(drive, project)
            verify_audit(project)
        except (DemoFailed, ButtressError) as error:
            print(f"demo failed: {error}", file=sys.stderr)
            return 1
        except Exception as error:  # e.g. the server could not start: say so, without a traceback
            print(f"demo failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        finally:
            stop_owner(project)  # the throwaway project goes: so does its daemon
    say(
        "\ndemo finished: every change went propose -> dry-run -> deploy, rollback restored the data, "
        "and a workflow resumed after a restart."
    )
    return 0


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)
