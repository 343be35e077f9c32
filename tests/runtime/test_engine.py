"""The engine owns transactions: failures never commit, nesting joins, agent SQL is sandboxed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import ButtressError
from runtime.store.engine import Engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(tmp_path / "e.duckdb")
    with eng.transaction() as tx:
        tx.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    yield eng
    eng.close()


def count(engine: Engine) -> int:
    with engine.snapshot() as cursor:
        row = cursor.execute("SELECT count(*) FROM t").fetchone()
        assert row is not None
        return int(row[0])


def test_a_failed_statement_means_nothing_commits_even_if_the_caller_swallows_it(engine: Engine) -> None:
    with pytest.raises(ButtressError) as caught, engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
        with contextlib.suppress(ButtressError):  # a careless caller; the transaction must still not commit
            tx.execute("INSERT INTO t VALUES (1)")  # duplicate key
    assert caught.value.code == "engine.constraint"
    assert count(engine) == 0


def test_nothing_runs_after_a_failure_in_the_same_transaction(engine: Engine) -> None:
    with pytest.raises(ButtressError), engine.transaction() as tx:
        with pytest.raises(ButtressError):
            tx.execute("SELECT * FROM missing")
        tx.execute("INSERT INTO t VALUES (2)")
    assert count(engine) == 0


def test_a_nested_transaction_joins_the_outer_one(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.transaction() as outer:
        outer.execute("INSERT INTO t VALUES (1)")
        with engine.transaction() as inner:
            assert inner is outer
            inner.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("abort the outer transaction")
    assert count(engine) == 0


def test_commit_callbacks_run_only_after_commit(engine: Engine) -> None:
    seen: list[str] = []
    with engine.transaction() as tx:
        tx.on_commit(lambda: seen.append("committed"))
        tx.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ButtressError), engine.transaction() as tx:
        tx.on_commit(lambda: seen.append("never"))
        tx.execute("INSERT INTO t VALUES (1)")
    assert seen == ["committed"]


def test_snapshots_are_read_only(engine: Engine) -> None:
    with pytest.raises(ButtressError), engine.snapshot() as cursor:
        cursor.execute("INSERT INTO t VALUES (5)")
    assert count(engine) == 0


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY t TO '/tmp/buttress-escape.csv'",
        "ATTACH '/tmp/buttress-other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
    ],
)
def test_the_engine_is_a_second_wall_behind_the_parser(engine: Engine, sql: str) -> None:
    with pytest.raises(ButtressError) as caught, engine.transaction() as tx:
        tx.execute(sql)
    assert caught.value.code in {"sql.forbidden", "engine.error"}
    assert not Path("/tmp/buttress-escape.csv").exists()
    assert not Path("/tmp/buttress-other.duckdb").exists()


def test_a_query_past_its_time_limit_is_interrupted(engine: Engine) -> None:
    with pytest.raises(ButtressError) as caught, engine.snapshot(timeout=0.2) as cursor:
        cursor.execute("SELECT count(*) FROM range(100000000000) a")
    assert caught.value.code == "limit.timeout"


def test_a_second_process_cannot_open_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = Engine(tmp_path / "locked.duckdb")
    code = (
        "import sys; from runtime.store.engine import Engine\n"
        "try:\n    Engine(sys.argv[1])\nexcept Exception as e:\n    print(e.code)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "locked.duckdb")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
        timeout=60,
    )
    assert out.stdout.strip() == "engine.locked"
    holder.close()
