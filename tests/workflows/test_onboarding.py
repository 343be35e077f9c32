"""The onboarding story: enrolling starts a run (emitted by the ``enrol`` action with its insert); the run
mails stage 1, waits for the member's document (the ``upload`` action signals the run with its
update), mails stage 2, activates the member, mails stage 3 — through a connector to a mail sink —
while the project's owner is SIGKILLed at step boundaries, inside effects and at a random moment; and
the agent's session, closed while members wait, is not needed for their runs to go on.

What must hold at the end: every member got each stage's mail exactly once, in order; every run
completed with each stage step recorded once; every member is active with their document.

The default run fires each named crash point once and kills once at random;
``BUTTRESS_STORY_KILLS=N`` runs the long trial (this story makes a third of N kills).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from mcp_server.project import Project
from tests.mcp_server.helpers import call, ship
from tests.workflows.apps import ONBOARDING
from tests.workflows.harness import (
    STEP_AND_EFFECT_POINTS,
    STORY_KILLS,
    Life,
    Owners,
    Trials,
    agent,
    attempt,
    owner_pid,
    project,
    provider,
    until,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1800)]

KILLS = max(10, STORY_KILLS // 3) if STORY_KILLS else None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_onboarding_mails_each_stage_once_in_order_across_owner_kills(tmp_path: Path) -> None:
    trials = Trials(seed=5, points=STEP_AND_EFFECT_POINTS, target=KILLS)
    members = [f"m{i:02}" for i in range(max(16, KILLS or 0))]  # one joins a life: every life has work
    joined: set[str] = set()
    uploaded: set[str] = set()
    with provider(seed=3, fail_rate=0.05, drop_rate=0.05) as fake:
        root = project(tmp_path / "club", fake.url)
        owners = Owners(root)
        try:
            await owners.start()
            async with agent(root, "first") as first:
                await ship(first.client, ONBOARDING)
                while not trials.done():
                    faults, patience = trials.next_faults()
                    current = await owners.start(faults)
                    with anyio.move_on_after(patience):
                        # each life: one member joins, one who joined earlier uploads their document; the
                        # idempotency key makes a retried call after a crash replay instead of running twice
                        for member in [m for m in members if m not in joined][:1]:
                            if await attempt(
                                lambda m=member: call(
                                    first.client, "app_enrol", id=m, idempotency_key=f"join-{m}"
                                )
                            ):
                                joined.add(member)
                        for member in sorted(joined - uploaded)[:1]:
                            if await attempt(
                                lambda m=member: call(
                                    first.client,
                                    "app_upload",
                                    id=m,
                                    document=f"passport of {m}",
                                    idempotency_key=f"upload-{m}",
                                )
                            ):
                                uploaded.add(member)

                        async def dead(current: Life = current) -> bool:
                            return not current.alive()

                        await until(dead, patience)
                    current.kill()
                    trials.count(faults, fired=current.fired)
                await owners.start()  # no faults: the rest joins and uploads, everything settles
                for member in members:
                    await call(first.client, "app_enrol", id=member, idempotency_key=f"join-{member}")
                    await call(
                        first.client,
                        "app_upload",
                        id=member,
                        document=f"passport of {member}",
                        idempotency_key=f"upload-{member}",
                    )
            # the agent's session is closed: the owner takes every run to its end without it
            with anyio.fail_after(120):
                while owner_pid(root) is not None and await anyio.to_thread.run_sync(active_runs, root):
                    await anyio.sleep(0.2)
            async with agent(root, "second") as second:
                runs = (await call(second.client, "list_runs", limit=1000))["runs"]
                details = [await call(second.client, "get_run", run_id=r["run_id"]) for r in runs]
                rows = await call(
                    second.client, "query", sql="select id, document, active from member order by id"
                )
        finally:
            owners.stop()
        state = fake.state()
    runtime = Project.load(root).open()
    try:
        verified = runtime.verify_audit()
    finally:
        runtime.close()

    mails: dict[str, list[int]] = defaultdict(list)
    for mail in state["mail"]:  # in the order the sink received them
        mails[mail["to"]].append(mail["stage"])
    assert dict(mails) == {m: [1, 2, 3] for m in members}  # exactly once per stage, in order
    assert sorted(r["run_id"] for r in runs) == members and {r["status"] for r in runs} == {"completed"}
    for detail in details:
        names = [s["name"] for s in detail["steps"]]
        assert names == ["welcome", "document", "reviewed", "activate", "active"], detail  # none twice
        assert detail["steps"][1]["output"] == {"document": f"passport of {detail['run_id']}"}
    assert rows["rows"] == [[m, f"passport of {m}", True] for m in members]
    assert verified.ok, verified
    assert trials.done()
    assert set(trials.by_point) == {*STEP_AND_EFFECT_POINTS, "random"}, trials.by_point
    print(
        f"kills: {trials.kills} {dict(sorted(trials.by_point.items()))}; mail sink: {state['requests']} "
        f"requests, {state['replays']} replays, {state['dropped']} dropped answers, {state['failed']} 503s"
    )


def active_runs(root: Path) -> int:
    """How many runs are not finished, as ``buttress runs list --status active`` (the CLI) sees it."""
    from mcp_server.channel import RemoteRuntime, socket_path

    return len(RemoteRuntime.attach(socket_path(root / "app.duckdb")).list_runs(status="active", limit=1000))
