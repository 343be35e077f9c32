"""One contract, two engines: the writer lane, snapshots, statements, errors and the dialect behave the
same on DuckDB and on PostgreSQL. Engine-specific text is declared per engine (``SLOW``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ButtressError, Code
from runtime.sql.dialect import support_functions
from runtime.store.engine import Engine

SLOW = {
    "duckdb": "SELECT count(*) FROM range(100000000000) a",
    "postgres": "SELECT pg_sleep(20)",
}
"""A statement that runs far past any test's deadline, per engine."""


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "duckdb":
        eng: Any = Engine(tmp_path / "e.duckdb")
    else:
        from runtime.store.postgres import PgEngine

        eng = PgEngine(request.getfixturevalue("pg_dsn"))
    with eng.transaction() as tx:
        tx.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR)")
        tx.execute("CREATE SCHEMA IF NOT EXISTS _buttress")
        tx.execute("CREATE TABLE _buttress.meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        tx.execute("CREATE SEQUENCE _buttress.s")
        for ddl in support_functions(tx.dialect):
            tx.execute(ddl)
    try:
        yield eng
    finally:
        eng.close()


def rows(engine: Any, sql: str = "SELECT id, note FROM t ORDER BY id") -> list[tuple[Any, ...]]:
    with engine.snapshot() as reader:
        return [tuple(r) for r in reader.fetchall(sql)]


def test_a_commit_is_seen_and_a_failure_commits_nothing(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", [1, "one"])
    with pytest.raises(RuntimeError), engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", [2, "two"])
        raise RuntimeError("the caller failed")
    with pytest.raises(ButtressError) as caught, engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", [3, "three"])
        with pytest.raises(ButtressError):
            tx.execute("INSERT INTO t VALUES (?, ?)", [1, "again"])  # the key exists
    assert caught.value.code == Code.ENGINE_CONSTRAINT
    assert rows(engine) == [(1, "one")]


def test_a_swallowed_failure_still_commits_nothing(engine: Any) -> None:
    """The caller catches the statement's error and goes on: the transaction must not commit."""
    with pytest.raises(ButtressError), engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", [5, "five"])
        with contextlib.suppress(ButtressError):
            tx.execute("INSERT INTO t VALUES (?, ?)", [5, "dup"])
    assert rows(engine) == []


def test_rollback_only_and_nesting(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", [1, "dry"])
        with engine.transaction() as inner:
            assert inner is tx  # the same thread joins its outer transaction
        tx.rollback_only = True
    assert rows(engine) == []


def test_parameters_named_positional_and_literals(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES ($id, $note)", {"id": 7, "note": "it's ? and $x and 'a%'"})
        tx.execute("INSERT INTO t VALUES (?, '?')", [8])
    assert rows(engine) == [(7, "it's ? and $x and 'a%'"), (8, "?")]
    with engine.snapshot() as reader:
        assert reader.scalar("SELECT count(*) FROM t WHERE id = $a OR id = $a", {"a": 7}) == 1


@pytest.mark.parametrize("text", ["SELECT 1; SELECT 2", "INSERT INTO t VALUES (9, 'x'); DROP TABLE t"])
def test_a_text_of_several_statements_never_runs(engine: Any, text: str) -> None:
    with pytest.raises(ButtressError) as caught, engine.transaction() as tx:
        tx.execute(text)
    assert caught.value.code == Code.SQL_FORBIDDEN
    assert rows(engine) == []


def test_a_statement_past_its_deadline_is_stopped(engine: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ButtressError) as caught, engine.transaction(timeout=0.5) as tx:
        tx.execute("INSERT INTO t VALUES (1, 'kept?')")
        tx.execute(SLOW[tx.dialect.name])
    assert caught.value.code == Code.QUERY_TIMEOUT
    assert time.monotonic() - started < 10
    assert rows(engine) == []
    with engine.snapshot(timeout=0.5) as reader, pytest.raises(ButtressError) as caught:
        reader.execute(SLOW[reader.dialect.name]).fetchall()
    assert caught.value.code == Code.QUERY_TIMEOUT
    with engine.transaction() as tx:  # the engine is usable afterwards
        tx.execute("INSERT INTO t VALUES (2, 'after')")
    assert rows(engine) == [(2, "after")]


def test_a_busy_lane_answers_engine_busy(engine: Any) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (1, 'held')")
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(ButtressError) as caught, engine.transaction(wait=0.2):
            pass
        assert caught.value.code == Code.ENGINE_BUSY
    finally:
        release.set()
        holder.join()
    assert rows(engine) == [(1, "held")]


def test_a_snapshot_does_not_see_what_commits_after_it_began(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1, 'before')")
    with engine.snapshot() as reader:
        assert reader.scalar("SELECT count(*) FROM t") == 1
        with engine.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (2, 'after')")
        assert reader.scalar("SELECT count(*) FROM t") == 1
    assert len(rows(engine)) == 2


def test_on_commit_runs_after_a_commit_only(engine: Any) -> None:
    seen: list[str] = []
    with engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1, 'x')")
        tx.on_commit(lambda: seen.append("committed"))
        tx.on_commit(lambda: seen.append("in lane"), in_lane=True)
    with pytest.raises(RuntimeError), engine.transaction() as tx:
        tx.on_commit(lambda: seen.append("never"))
        raise RuntimeError
    assert seen == ["in lane", "committed"]


def test_the_dialect_spells_what_each_engine_runs(engine: Any) -> None:
    """Each of the dialect's shapes runs on its engine and answers the same."""
    with engine.transaction() as tx:
        d = tx.dialect
        upsert = d.upsert("_buttress.meta", ("key", "value"), ("key",))
        tx.execute(upsert, ["anchored", "no"])
        tx.execute(upsert, ["anchored", "yes"])
        tx.execute("SELECT nextval('_buttress.s')")
        tx.execute("SELECT nextval('_buttress.s')")
    with engine.snapshot() as reader:
        assert reader.fetchall("SELECT key, value FROM _buttress.meta") == [("anchored", "yes")]
        assert reader.scalar(d.sequence_last_value("_buttress", "s")) == 2
        assert reader.scalar(f"SELECT {d.try_cast('?', 'integer')}", ["12"]) == 12
        assert reader.scalar(f"SELECT {d.try_cast('?', 'integer')}", ["twelve"]) is None
        assert reader.scalar(f"SELECT {d.try_cast('?', 'decimal(5,2)')} IS NULL", ["1234.5"]) is True
        assert reader.scalar(f"SELECT {d.json_text('?', 'code')}", ['{"code": "x.y", "n": 1}']) == "x.y"
        assert reader.scalar(f"SELECT {d.json_text('?', 'missing')}", ['{"code": 1}']) is None
        assert reader.scalar(f"SELECT CAST(? AS {d.column_type('double')})", [1.5]) == 1.5
        assert reader.scalar(f"SELECT {d.default('uuid()')} IS NOT NULL") is True
