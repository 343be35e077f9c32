"""7. The newest audit rows could be deleted unnoticed: with the server stopped, deleting the last row,
the last five, or every row left ``audit verify`` reporting "ok". The anchor beside the database
(signed with the operator secret) now proves which rows were committed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mcp_server.project import init
from runtime.runtime import Runtime
from runtime.store.audit import anchor_path
from tests.mcp_server.helpers import source_env
from tests.runtime.conftest import BASE_OPERATIONS, deploy

ROOT = Path(__file__).resolve().parents[2]


def build(path: Path) -> int:
    """A database with some audit rows; returns the number of rows."""
    runtime = Runtime.open(path)
    try:
        deploy(runtime, BASE_OPERATIONS)
        for _ in range(6):
            runtime.describe(actor="agent")
        result = runtime.verify_audit()
        assert result.ok
        return result.entries
    finally:
        runtime.close()


def delete_rows(path: Path, where: str) -> None:
    """What someone with the database file (and no operator secret) can do with the server stopped."""
    raw = duckdb.connect(str(path))
    raw.execute(f"DELETE FROM _buttress.audit WHERE {where}")
    raw.close()


@pytest.mark.parametrize(
    ("where", "missing_from_end"),
    [
        ("seq = (SELECT max(seq) FROM _buttress.audit)", 1),
        ("seq > (SELECT max(seq) - 5 FROM _buttress.audit)", 5),
        ("true", None),
    ],
    ids=["last row", "last five", "every row"],
)
def test_deleting_the_newest_rows_is_reported_with_the_missing_range(
    tmp_path: Path, where: str, missing_from_end: int | None
) -> None:
    path = tmp_path / "app.duckdb"
    rows = build(path)
    delete_rows(path, where)
    runtime = Runtime.open(path)
    try:
        assert runtime.audit.problem is not None  # found when the runtime opened
        assert runtime.describe().audit_problem == runtime.audit.problem
        result = runtime.verify_audit()
    finally:
        runtime.close()
    assert not result.ok
    first = rows - missing_from_end + 1 if missing_from_end else 1
    assert result.missing == [first, rows], result
    assert "gone" in (result.problem or "")


def test_the_anchor_is_not_moved_past_a_truncation_so_the_evidence_stays(tmp_path: Path) -> None:
    path = tmp_path / "app.duckdb"
    rows = build(path)
    delete_rows(path, "seq > 3")
    runtime = Runtime.open(path)
    try:
        for _ in range(10):  # new rows are written after the truncated ones...
            runtime.describe(actor="agent")
        runtime.flush_reads()
    finally:
        runtime.close()
    anchored = json.loads(anchor_path(path).read_text())
    assert anchored["seq"] == rows  # ...but the anchor still names the deleted head
    runtime = Runtime.open(path)
    try:
        assert not runtime.verify_audit().ok
    finally:
        runtime.close()


def test_a_forged_anchor_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "app.duckdb"
    build(path)
    anchor = anchor_path(path)
    record = json.loads(anchor.read_text())
    record["seq"] -= 3  # hide the three newest rows, then delete them
    anchor.write_text(json.dumps(record))
    delete_rows(path, "seq > (SELECT max(seq) - 3 FROM _buttress.audit)")
    runtime = Runtime.open(path)
    try:
        result = runtime.verify_audit()
    finally:
        runtime.close()
    assert not result.ok and "not signed" in (result.problem or "")


def test_a_chain_that_only_grows_verifies_and_reanchoring_is_the_operators_call(tmp_path: Path) -> None:
    path = tmp_path / "app.duckdb"
    build(path)
    runtime = Runtime.open(path)
    try:
        runtime.describe(actor="agent")
        assert runtime.verify_audit().ok
    finally:
        runtime.close()
    delete_rows(path, "seq > (SELECT max(seq) - 2 FROM _buttress.audit)")
    runtime = Runtime.open(path)
    try:
        assert not runtime.verify_audit().ok
        after = runtime.reanchor_audit()
        assert after.ok and runtime.audit.problem is None
        kept = runtime.read_audit(operation="reanchor_audit")[-1]
        assert "gone" in kept.arguments["previous_problem"]
    finally:
        runtime.close()


def test_buttress_audit_verify_exits_1_and_names_the_missing_rows(tmp_path: Path) -> None:
    project = init(tmp_path / "shop").root
    database = project / "app.duckdb"
    runtime = Runtime.open(database)
    try:
        deploy(runtime, BASE_OPERATIONS)
    finally:
        runtime.close()
    delete_rows(database, "seq = (SELECT max(seq) FROM _buttress.audit)")
    result = subprocess.run(
        [sys.executable, "-m", "mcp_server", "audit", "verify", "--project", str(project)],
        capture_output=True,
        text=True,
        env={**source_env(), "PATH": "/usr/bin:/bin", **_operator_key_env()},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result
    assert "BROKEN" in result.stderr and "gone" in result.stderr


def _operator_key_env() -> dict[str, str]:
    import os

    return {"BUTTRESS_OPERATOR_KEY": os.environ["BUTTRESS_OPERATOR_KEY"], "HOME": os.environ.get("HOME", "/")}
