"""The system schema evolves by numbered migrations: a database the previous release wrote is upgraded
when it is opened, and its application, its waiting run, its messages and its audit chain carry on."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.store import migrations
from runtime.store.engine import Engine

FIXTURE = Path(__file__).parent.parent / "fixtures" / "previous_release" / "app.duckdb.gz"


def previous_release(directory: Path) -> Path:
    """The database written by the release before numbered migrations (``make.py`` says how)."""
    directory.mkdir()
    database = directory / "app.duckdb"
    with gzip.open(FIXTURE) as packed, database.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return database


def columns(database: Path) -> dict[str, list[tuple[str, str]]]:
    """The system tables' columns, in order (the retained data's tables aside)."""
    engine = Engine(database)
    try:
        with engine.snapshot() as reader:
            rows = reader.fetchall(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = '_buttress' AND NOT starts_with(table_name, 'retained_') "
                "ORDER BY table_name, column_index"
            )
    finally:
        engine.close()
    found: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        found.setdefault(str(table), []).append((str(column), str(kind)))
    return found


def meta(database: Path, key: str) -> str | None:
    engine = Engine(database)
    try:
        with engine.snapshot() as reader:
            row = reader.fetchone("SELECT value FROM _buttress.meta WHERE key = ?", [key])
    finally:
        engine.close()
    return None if row is None else str(row[0])


def test_the_previous_releases_database_is_upgraded_and_its_waiting_run_completes(tmp_path: Path) -> None:
    database = previous_release(tmp_path / "old")
    assert meta(database, "schema_version") == "1"
    before = columns(database)
    assert "acting_for" not in {c for c, _ in before["runs"]}

    runtime = Runtime.open(database)
    try:
        # moved without its anchor (signed on the machine that wrote it): the chain itself is intact,
        # and the operator anchors it here
        verified = runtime.verify_audit()
        assert not verified.ok and verified.first_bad_seq is None and "anchor" in str(verified.problem)
        assert runtime.reanchor_audit().ok

        assert runtime.get_run("r-old").status == "waiting"
        runtime.signal_run("r-old", "go", {"name": "second"})
        for _ in range(200):
            runtime.scheduler.drain()
            if runtime.get_run("r-old").status == "completed":
                break
        assert runtime.get_run("r-old").status == "completed"
        assert runtime.query("select id, name from item order by id").rows == [[1, "first"], [2, "second"]]
        made = runtime.claim_messages("made", consumer="mailer", limit=10)
        assert sorted(m.payload["id"] for m in made.messages) == [1, 2]
        assert runtime.verify_audit().ok
    finally:
        runtime.close()

    assert meta(database, "schema_version") == str(migrations.LATEST)
    after = columns(database)
    for table, old in before.items():
        assert after[table][: len(old)] == old, table  # every column kept, in place; new ones appended
    assert after["runs"][len(before["runs"]) :] == [
        ("acting_for", "VARCHAR"),
        ("grant_json", "JSON"),
        ("depth", "INTEGER"),
        ("lease_owner", "VARCHAR"),
        ("lease_until", "TIMESTAMP"),
        ("lease_epoch", "BIGINT"),
    ]

    fresh = tmp_path / "fresh" / "app.duckdb"
    fresh.parent.mkdir()
    Runtime.open(fresh).close()
    assert columns(fresh) == {table: cols for table, cols in after.items() if table in columns(fresh)}
    assert set(columns(fresh)) <= set(after)


def test_a_database_at_the_latest_migration_is_opened_without_running_any(tmp_path: Path) -> None:
    database = tmp_path / "app.duckdb"
    Runtime.open(database).close()
    engine = Engine(database)
    try:
        with engine.transaction() as tx:
            assert migrations.upgrade(tx) == []
    finally:
        engine.close()


def test_each_migration_applies_once_in_order_from_any_earlier_number(tmp_path: Path) -> None:
    assert [m.number for m in migrations.MIGRATIONS] == list(range(1, migrations.LATEST + 1))
    engine = Engine(tmp_path / "app.duckdb")
    try:
        with engine.transaction() as tx:
            assert migrations.schema_version(tx) == 0
            assert migrations.upgrade(tx) == list(range(1, migrations.LATEST + 1))
            assert migrations.schema_version(tx) == migrations.LATEST
    finally:
        engine.close()


def test_a_database_from_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    database = tmp_path / "app.duckdb"
    Runtime.open(database).close()
    engine = Engine(database)
    try:
        with engine.transaction() as tx:
            tx.execute("UPDATE _buttress.meta SET value = '999' WHERE key = 'schema_version'")
    finally:
        engine.close()
    before = columns(database)
    with pytest.raises(ButtressError) as refused:
        Runtime.open(database)
    assert refused.value.code == "engine.newer_schema"
    assert "999" in refused.value.message and refused.value.details == {
        "schema_version": 999,
        "latest": migrations.LATEST,
    }
    assert columns(database) == before and meta(database, "schema_version") == "999"
