"""The system schema installs and upgrades the same way on both engines; on PostgreSQL, servers that
open one database at the same moment install it once, one after another on the writer lane."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from runtime.store.engine import Engine
from runtime.store.migrations import LATEST, MIGRATIONS, schema_version, upgrade


@pytest.fixture(params=["duckdb", "postgres"])
def open_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "duckdb":
        return lambda: Engine(tmp_path / "s.duckdb")
    from runtime.store.postgres import PgEngine

    dsn = request.getfixturevalue("pg_dsn")
    return lambda: PgEngine(dsn)


def test_the_system_schema_installs_once_and_then_runs_nothing(open_engine: Any) -> None:
    engine = open_engine()
    with engine.transaction() as tx:
        assert upgrade(tx) == [m.number for m in MIGRATIONS]
    with engine.transaction() as tx:
        before = tx.statements
        assert upgrade(tx) == []
        assert tx.statements - before == 2  # the check that it is there and its number: no DDL
    with engine.snapshot() as reader:
        assert schema_version(reader) == LATEST
        assert reader.scalar("SELECT count(*) FROM _buttress.runs WHERE depth = 0") == 0
    engine.close()


def test_servers_opening_one_postgresql_database_at_once_install_it_once(pg_dsn: str) -> None:
    from runtime.store.postgres import PgEngine

    engines = [PgEngine(pg_dsn) for _ in range(4)]
    start = threading.Barrier(len(engines))
    applied: list[list[int]] = []
    failures: list[BaseException] = []

    def open_one(engine: PgEngine) -> None:
        start.wait()
        try:
            with engine.transaction(wait=30) as tx:
                applied.append(upgrade(tx))
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=open_one, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(applied) == [[], [], [], [m.number for m in MIGRATIONS]]
    for engine in engines:
        engine.close()
