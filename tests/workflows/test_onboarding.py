"""The onboarding story: enrolling starts a run (emitted by the ``enrol`` action with its insert); the run
mails stage 1, waits for the member's document (the ``upload`` action signals the run with its
update), mails stage 2, activates the member, mails stage 3 — through a connector to a mail sink —
while the server is SIGKILLed at step boundaries, inside effects and at random moments.

What must hold at the end: every member got each stage's mail exactly once, in order; every run
completed with each stage step recorded once; every member is active with their document.

``BUTTRESS_STORY_KILLS`` sets the number of kills (default 200; this story uses a third of it).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import anyio
import pytest

from mcp_server.project import Project
from tests.mcp_server.helpers import call, ship
from tests.workflows.apps import ONBOARDING
from tests.workflows.harness import STEP_AND_EFFECT_POINTS, Trials, attempt, life, project, provider, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1800)]

KILLS = max(10, int(os.environ.get("BUTTRESS_STORY_KILLS", "200")) // 3)
MEMBERS = [f"m{i:02}" for i in range(max(16, KILLS))]  # one joins a life: every life has work


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_onboarding_mails_each_stage_once_in_order_across_kills(tmp_path: Path) -> None:
    with provider(seed=3, fail_rate=0.05, drop_rate=0.05) as fake:
        root = project(tmp_path / "club", fake.url)
        async with life(root) as first:
            await ship(first.client, ONBOARDING)

        joined: set[str] = set()
        uploaded: set[str] = set()
        trials = Trials(seed=5, points=STEP_AND_EFFECT_POINTS)
        while trials.kills < KILLS:
            faults, kill_after = trials.next_faults()
            async with life(root, faults) as current:
                with anyio.move_on_after(kill_after):
                    # each life: one member joins, one who joined earlier uploads their document; the
                    # idempotency key makes a retried call after a crash replay instead of running twice
                    for member in [m for m in MEMBERS if m not in joined][:1]:
                        if await attempt(
                            lambda m=member: call(
                                current.client, "app_enrol", id=m, idempotency_key=f"join-{m}"
                            )
                        ):
                            joined.add(member)
                    for member in sorted(joined - uploaded)[:1]:
                        if await attempt(
                            lambda m=member: call(
                                current.client,
                                "app_upload",
                                id=m,
                                document=f"passport of {m}",
                                idempotency_key=f"upload-{m}",
                            )
                        ):
                            uploaded.add(member)

                    async def dead() -> bool:
                        return not current.alive()

                    await until(dead, kill_after)
            trials.count(faults, fired=current.fired)

        async with life(root) as final:  # no faults: the rest joins and uploads, everything settles
            for member in MEMBERS:
                await call(final.client, "app_enrol", id=member, idempotency_key=f"join-{member}")
                await call(
                    final.client,
                    "app_upload",
                    id=member,
                    document=f"passport of {member}",
                    idempotency_key=f"upload-{member}",
                )

            async def settled() -> bool:
                return not (await call(final.client, "list_runs", status="active", limit=1000))["runs"]

            assert await until(settled, 120), await call(final.client, "list_runs", status="active")
            runs = (await call(final.client, "list_runs", limit=1000))["runs"]
            details = [await call(final.client, "get_run", run_id=r["run_id"]) for r in runs]
            members = await call(
                final.client, "query", sql="select id, document, active from member order by id"
            )
        state = fake.state()
    runtime = Project.load(root).open()
    try:
        verified = runtime.verify_audit()
    finally:
        runtime.close()

    mails: dict[str, list[int]] = defaultdict(list)
    for mail in state["mail"]:  # in the order the sink received them
        mails[mail["to"]].append(mail["stage"])
    assert dict(mails) == {m: [1, 2, 3] for m in MEMBERS}  # exactly once per stage, in order
    assert sorted(r["run_id"] for r in runs) == MEMBERS and {r["status"] for r in runs} == {"completed"}
    for detail in details:
        names = [s["name"] for s in detail["steps"]]
        assert names == ["welcome", "document", "reviewed", "activate", "active"], detail  # none twice
        assert detail["steps"][1]["output"] == {"document": f"passport of {detail['run_id']}"}
    assert members["rows"] == [[m, f"passport of {m}", True] for m in MEMBERS]
    assert verified.ok, verified
    assert trials.kills >= KILLS
    assert set(trials.by_point) == {*STEP_AND_EFFECT_POINTS, "random"}, trials.by_point
    print(
        f"kills: {trials.kills} {dict(sorted(trials.by_point.items()))}; mail sink: {state['requests']} "
        f"requests, {state['replays']} replays, {state['dropped']} dropped answers, {state['failed']} 503s"
    )
