"""The audit chain's order follows the order calls were decided.

Refusals and reads are deferred (group-committed shortly after, so they never wait for the writer
lane) while changes append in their own transaction: a successful ``publish`` took a sequence number
ahead of refusals issued before it. A change now writes the rows deferred before it, in its own
transaction and ahead of its own row; rows taken by a transaction that does not commit go back to
the queue in their order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_server.project import init
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.mcp_server.helpers import source_env
from tests.runtime.conftest import deploy

ROOT = Path(__file__).resolve().parents[2]

APP = [
    {
        "op": "add_entity",
        "entity": {"name": "item", "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
    },
    {"op": "add_topic", "topic": {"name": "news", "payload": [{"name": "id", "type": "integer"}]}},
]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Runtime]]:
    root = init(tmp_path / "shop").root
    runtime = Runtime.open(root / "app.duckdb")
    deploy(runtime, APP)
    yield root, runtime
    runtime.close()


def refuse(runtime: Runtime, n: int) -> None:
    with pytest.raises(ButtressError) as caught:
        runtime.query(f"select * from missing_{n}", actor="agent")
    assert caught.value.code == "sql.unknown_table"


def order(runtime: Runtime) -> list[tuple[str, str]]:
    return [(e.operation, e.outcome) for e in runtime.read_audit(limit=1000) if e.actor == "agent"]


def test_refusals_decided_before_a_publish_come_before_it_in_the_chain(project: tuple[Path, Runtime]) -> None:
    root, runtime = project
    # Hold the background writer off (its lock, not the writer lane: a refusal must still not wait
    # for anything), so that the publish is the first to reach the lane after the refusals.
    with runtime.audit._flushing:
        for n in range(3):
            refuse(runtime, n)
        runtime.publish_message("news", {"id": 1}, actor="agent")
        refuse(runtime, 3)
    assert order(runtime) == [
        ("query", "refused"),
        ("query", "refused"),
        ("query", "refused"),
        ("publish", "ok"),
        ("query", "refused"),
    ]
    entries = runtime.read_audit(limit=1000)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert runtime.verify_audit().ok
    runtime.close()
    verified = subprocess.run(
        [sys.executable, "-m", "mcp_server", "audit", "verify", "--project", str(root)],
        capture_output=True,
        text=True,
        env={
            **source_env(),
            "PATH": "/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/"),
            "BUTTRESS_OPERATOR_KEY": os.environ["BUTTRESS_OPERATOR_KEY"],
        },
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert verified.returncode == 0 and "audit chain ok" in verified.stdout, verified


def test_rows_taken_by_a_change_that_rolls_back_are_written_in_their_order(
    project: tuple[Path, Runtime],
) -> None:
    _, runtime = project
    with runtime.audit._flushing:
        refuse(runtime, 0)
        refuse(runtime, 1)
        with pytest.raises(RuntimeError), runtime.engine.transaction() as tx:
            runtime.audit.append(tx, actor="agent", operation="doomed", arguments={}, outcome="ok")
            raise RuntimeError("the change fails after its audit row")
        refuse(runtime, 2)
        runtime.publish_message("news", {"id": 1}, actor="agent")
    assert order(runtime) == [
        ("query", "refused"),
        ("query", "refused"),
        ("query", "refused"),
        ("publish", "ok"),
    ]
    assert runtime.verify_audit().ok


def test_a_refusal_still_never_waits_for_a_busy_writer_lane(project: tuple[Path, Runtime]) -> None:
    _, runtime = project
    with runtime.engine.transaction():  # another change holds the lane
        refuse(runtime, 0)  # answers at once (pytest's timeout would catch a wait)
        assert runtime.audit._deferred
    runtime.flush_reads()
    assert order(runtime)[-1] == ("query", "refused")
