"""A mutation racing a deploy that adds an invariant it violates: never both commit.

Before the fix, a mutation was prepared (with its list of invariants) before it waited for the
writer lane, so a deploy committing meanwhile went unseen: ``put(1, 500)`` committed unchecked
after ``max_ten`` was deployed, and its result claimed the old version.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_server.server import build_server
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.mcp_server.helpers import ok

ITERATIONS = int(os.environ.get("BUTTRESS_RACE_ITERATIONS", "100"))
"""Races run (``BUTTRESS_RACE_ITERATIONS=1000``: the long trial CI runs)."""

APP = [
    {
        "op": "add_entity",
        "entity": {
            "name": "room",
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "put",
            "kind": "mutation",
            "params": [{"name": "id", "type": "integer"}, {"name": "seats", "type": "integer"}],
            "statements": ["insert or replace into room (id, seats) values ($id, $seats)"],
        },
    },
]
MAX_TEN = {
    "op": "add_invariant",
    "invariant": {
        "name": "max_ten",
        "description": "at most ten seats",
        "sql": "select id from room where seats > 10",
    },
}


@pytest.fixture
def raced(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(tmp_path / "app.duckdb", audit_reads=False)
    proposal = runtime.propose(APP)
    assert runtime.dry_run(proposal.proposal_id).passed
    runtime.deploy(proposal.proposal_id)
    runtime.run_action("put", {"id": 1, "seats": 5})
    yield runtime
    runtime.close()


def violations(runtime: Runtime) -> int:
    return int(runtime.query("select count(*) from room where seats > 10").rows[0][0])


def race_once(runtime: Runtime, delay: float) -> dict[str, object]:
    """Deploy max_ten and run put(1, 500) from two threads; a positive ``delay`` holds the mutation
    back that many seconds, a negative one the deploy: spread over a few milliseconds, the mutation
    arrives before the deploy, while it holds the writer lane, and after it."""
    proposal = runtime.propose([MAX_TEN], actor="agent")
    assert runtime.dry_run(proposal.proposal_id, actor="agent").passed
    results: dict[str, object] = {}
    start = threading.Barrier(2)

    def deploy() -> None:
        start.wait()
        time.sleep(max(-delay, 0))
        try:
            results["deploy"] = runtime.deploy(proposal.proposal_id).version  # the operator: no approval step
        except ButtressError as error:
            results["deploy"] = error.code

    def mutate() -> None:
        start.wait()
        time.sleep(max(delay, 0))
        try:
            results["put"] = runtime.run_action("put", {"id": 1, "seats": 500}, actor="agent").version
        except ButtressError as error:
            results["put"] = error.code

    threads = [threading.Thread(target=deploy), threading.Thread(target=mutate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_mutations_racing_the_deploy_of_an_invariant_they_violate_commit_no_violation(
    raced: Runtime,
) -> None:
    runtime = raced
    outcomes = {"deploy_first": 0, "mutation_first": 0}
    delays = random.Random(8)
    for _ in range(ITERATIONS):
        results = race_once(runtime, delays.uniform(-0.003, 0.002))
        deployed, put = isinstance(results["deploy"], int), isinstance(results["put"], int)
        assert deployed != put, results  # exactly one of them commits
        if deployed:
            # The mutation ran after the deploy (refused by max_ten), or before it (then the deploy's
            # own check of max_ten refused the deploy instead).
            assert results["put"] == "invariant.violated", results
            assert violations(runtime) == 0
            outcomes["deploy_first"] += 1
            runtime.rollback()
        else:
            assert results["deploy"] == "invariant.violated", results
            outcomes["mutation_first"] += 1
            runtime.run_action("put", {"id": 1, "seats": 5}, actor="agent")
    assert sum(outcomes.values()) == ITERATIONS
    assert min(outcomes.values()) >= 10, outcomes  # both orders were really exercised
    assert runtime.verify_audit().ok


class SignallingLane:
    """The engine's lane lock, telling the test when a second writer starts waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        self.waiting.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@pytest.mark.anyio
async def test_a_mutation_queued_behind_a_deploy_runs_against_and_reports_the_new_version(
    tmp_path: Path,
) -> None:
    runtime = Runtime.open(tmp_path / "app.duckdb")
    try:
        async with Client(build_server(runtime, agent="agent")) as client:
            proposal = ok(await client.call_tool("propose_change", {"operations": APP}))
            ok(await client.call_tool("dry_run", {"proposal_id": proposal["proposal_id"]}))
            before = ok(await client.call_tool("deploy", {"proposal_id": proposal["proposal_id"]}))["version"]
            added = runtime.propose([MAX_TEN])
            assert runtime.dry_run(added.proposal_id).passed
            lane = SignallingLane()
            runtime.engine._lane = lane  # type: ignore[assignment]

            def deploy_while_the_mutation_waits() -> None:
                # The deploy holds the writer lane; the agent's mutation arrives and waits behind it.
                with runtime.engine.transaction():
                    assert lane.waiting.wait(10), "the mutation never reached the writer lane"
                    runtime.deploy(added.proposal_id)

            worker = threading.Thread(target=deploy_while_the_mutation_waits)
            worker.start()
            result = await client.call_tool("app_put", {"id": 1, "seats": 500})
            worker.join()
        assert runtime.current[0] == before + 1
        assert result.is_error and result.structured_content is not None, result
        error = result.structured_content["error"]
        assert error["code"] == "invariant.violated"
        assert error["details"]["version"] == before + 1
        assert violations(runtime) == 0
    finally:
        runtime.close()
