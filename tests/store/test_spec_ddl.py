"""A spec builds the same schema on both engines (engine-specific: both): every logical type, the
logical defaults, literal defaults, sequences, keys, unique sets, indexes, CHECKs and views, spelled by
``runtime.migrate.ddl`` for each engine's dialect and run there."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ButtressError, Code
from runtime.migrate import ddl
from runtime.schema import changes
from runtime.schema.spec import AppSpec
from runtime.sql.dialect import POSTGRES
from runtime.store.engine import Engine

OPS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "item",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "bigint", "default": {"expr": "autoincrement"}},
                {"name": "token", "type": "uuid", "default": {"expr": "uuid()"}},
                {"name": "made", "type": "timestamptz", "default": {"expr": "now()"}},
                {"name": "day", "type": "date", "default": {"expr": "current_date"}},
                {"name": "label", "type": "text", "default": "it's new", "check": "length(label) < 40"},
                {"name": "count", "type": "integer", "default": 3, "check": "count >= 0"},
                {"name": "ratio", "type": "double", "default": 0.5},
                {"name": "price", "type": "decimal(10,2)", "default": "12.30"},
                {"name": "active", "type": "boolean", "default": True},
                {"name": "seen", "type": "timestamp", "nullable": True},
                {"name": "extra", "type": "json", "default": {"tags": ["a", "b"], "n": 1}},
                {"name": "code", "type": "text", "nullable": True},
            ],
            "unique": [["code"]],
            "indexes": [{"name": "item_by_day", "columns": ["day", "label"]}],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "part",
            "primary_key": ["item", "n"],
            "fields": [
                {"name": "item", "type": "bigint", "references": "item.id"},
                {"name": "n", "type": "integer"},
            ],
        },
    },
    {
        "op": "add_view",
        "view": {
            "name": "item_parts",
            "sql": "select i.id, i.label, count(p.n) as parts from item i left join part p on p.item = i.id "
            "group by i.id, i.label",
        },
    },
]


def spec() -> AppSpec:
    return changes.apply(AppSpec(checked_by="buttress"), changes.parse_operations(OPS))


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "duckdb":
        eng: Any = Engine(tmp_path / "d.duckdb")
    else:
        from runtime.store.postgres import PgEngine

        eng = PgEngine(request.getfixturevalue("pg_dsn"))
    with eng.transaction() as tx:
        for statement in ddl.spec_ddl(spec(), tx.dialect):
            tx.execute(statement)
    yield eng
    eng.close()


def test_defaults_fill_a_row_given_only_its_required_fields(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO item (code) VALUES (?)", ["A"])
        tx.execute("INSERT INTO item (code) VALUES (?)", ["B"])
    with engine.snapshot() as reader:
        rows = reader.fetchall(
            "SELECT id, token, made, day, label, count, ratio, price, active, seen, extra FROM item ORDER BY id"
        )
    (first, second) = rows
    assert (first[0], second[0]) == (1, 2)  # the sequence
    assert isinstance(first[1], uuid.UUID) and first[1] != second[1]
    assert isinstance(first[2], datetime.datetime) and first[2].tzinfo is not None
    assert isinstance(first[3], datetime.date) and abs((first[3] - datetime.date.today()).days) <= 1
    assert first[4:10] == ("it's new", 3, 0.5, decimal.Decimal("12.30"), True, None)
    extra = first[10] if isinstance(first[10], dict) else __import__("json").loads(first[10])
    assert extra == {"tags": ["a", "b"], "n": 1}


def test_keys_unique_sets_and_checks_hold(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO item (code) VALUES ('A')")
    for bad in (
        "INSERT INTO item (code) VALUES ('A')",  # unique
        "INSERT INTO item (id, code) VALUES (1, 'Z')",  # primary key
        "INSERT INTO item (code, label) VALUES ('D', NULL)",  # not null
    ):
        with pytest.raises(ButtressError) as caught, engine.transaction() as tx:
            tx.execute(bad)
        assert caught.value.code == Code.ENGINE_CONSTRAINT, (bad, caught.value.to_dict())


def test_a_check_the_engine_enforces_is_spelled_for_it(engine: Any) -> None:
    """Field checks are the runtime's under ``checked_by = buttress``; where the engine enforces one,
    its expression is regenerated in the engine's dialect."""
    item = spec().entity("item")
    assert item is not None
    with engine.transaction() as tx:
        tx.execute(ddl.create_table(item, "checked", duckdb_checks=True, dialect=tx.dialect))
        tx.execute("INSERT INTO checked (id, token, code, count) VALUES (1, ?, 'A', 2)", [str(uuid.uuid4())])
    with pytest.raises(ButtressError) as caught, engine.transaction() as tx:
        tx.execute("INSERT INTO checked (id, token, code, count) VALUES (2, ?, 'B', -1)", [str(uuid.uuid4())])
    assert caught.value.code == Code.ENGINE_CONSTRAINT


def test_the_view_answers_the_same(engine: Any) -> None:
    with engine.transaction() as tx:
        tx.execute("INSERT INTO item (code, label) VALUES ('A', 'first'), ('B', 'second')")
        tx.execute("INSERT INTO part VALUES (1, 1), (1, 2)")
    with engine.snapshot() as reader:
        assert [tuple(r) for r in reader.fetchall("SELECT id, label, parts FROM item_parts ORDER BY id")] == [
            (1, "first", 2),
            (2, "second", 0),
        ]


def test_the_spec_stores_logical_defaults_and_each_engine_spells_its_own() -> None:
    text = spec().model_dump_json()
    assert "gen_random_uuid" not in text
    postgres = "\n".join(ddl.spec_ddl(spec(), POSTGRES))
    assert "gen_random_uuid()" in postgres and "uuid()" in "\n".join(ddl.spec_ddl(spec()))
    assert "JSONB" in postgres and "DOUBLE PRECISION" in postgres


def test_a_spec_duckdb_still_checks_is_refused_on_postgresql_with_a_hint() -> None:
    legacy = changes.apply(AppSpec(checked_by="duckdb"), changes.parse_operations(OPS[:1]))
    with pytest.raises(ButtressError) as caught:
        ddl.spec_ddl(legacy, POSTGRES)
    assert caught.value.code == Code.SPEC_INVALID
    assert "set_checked_by" in (caught.value.hint or "")


def test_postgresql_reads_its_catalog_and_finds_drift(pg_dsn: str) -> None:
    """The expected catalog is derived in a scratch schema that rolls back; the live one agrees with it
    after the spec's DDL, and a change made behind the runtime's back is named."""
    from runtime.store import fingerprint
    from runtime.store.postgres import PgEngine

    engine = PgEngine(pg_dsn)
    with engine.scratch_schema() as (tx, schema):
        for statement in ddl.spec_ddl(spec(), tx.dialect):
            tx.execute(statement)
        wanted = fingerprint.read(tx, schema)
    with engine.snapshot() as reader:
        assert fingerprint.read(reader)["tables"] == {}  # the scratch schema left nothing behind
    with engine.transaction() as tx:
        for statement in ddl.spec_ddl(spec(), tx.dialect):
            tx.execute(statement)
    with engine.snapshot() as reader:
        live = fingerprint.read(reader)
    assert set(live["tables"]) == {"item", "part"} and set(live["views"]) == {"item_parts"}
    assert live["tables"]["item"]["indexes"] and live["tables"]["item"]["constraints"]
    assert fingerprint.diff(wanted, live) == []
    with engine.transaction() as tx:
        tx.execute("ALTER TABLE item ADD COLUMN sneaky INTEGER")
        tx.execute("DROP INDEX item_by_day")
    with engine.snapshot() as reader:
        problems = fingerprint.diff(wanted, fingerprint.read(reader))
    assert any("sneaky" in p for p in problems) and any("item_by_day" in p for p in problems), problems
    engine.close()


ACTIONS: list[dict[str, Any]] = [
    {
        "op": "add_action",
        "action": {
            "name": "add_item",
            "kind": "mutation",
            "params": [{"name": "code", "type": "text"}, {"name": "label", "type": "text"}],
            "statements": ["insert into item (code, label) values ($code, $label)"],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "by_code",
            "kind": "query",
            "params": [{"name": "code", "type": "text"}],
            "statements": ["select id, label from item where code = $code and count >= 0"],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "ids",
            "kind": "query",
            "params": [],
            "statements": ["select list(id) as ids from item"],
        },
    },
    {
        "op": "add_action",
        "action": {
            "name": "loose",
            "kind": "query",
            "params": [{"name": "n", "type": "integer"}],
            "statements": ["select id from item where label = $n + 1"],
        },
    },
]


def test_the_dry_run_binds_every_action_statement_on_postgresql_too(pg_dsn: str, tmp_path: Path) -> None:
    """DuckDB binds the four; PostgreSQL finds a DuckDB-only function and a comparison of text with a
    number that DuckDB's binder lets through, and names each action."""
    from runtime.migrate import bind
    from runtime.store.postgres import PgEngine

    target = changes.apply(spec(), changes.parse_operations(ACTIONS))
    duck = Engine(tmp_path / "unused.duckdb")
    scratch = duck.scratch()
    try:
        for statement in ddl.spec_ddl(target):
            scratch.execute(statement)
        on_duckdb = bind.bind_in(target, scratch)
    finally:
        scratch.close()
        duck.close()
    assert on_duckdb.problems == () and on_duckdb.statements >= 4
    engine = PgEngine(pg_dsn)
    on_postgres = bind.bind_on_postgres(target, engine)
    named = {p["action"]: p["problem"] for p in on_postgres.problems}
    assert set(named) == {"ids", "loose"}, on_postgres.problems
    assert "PostgreSQL" in named["ids"] and "operator does not exist" in named["loose"]
    with engine.snapshot() as reader:  # the scratch schema rolled back
        assert reader.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '_scratch_%'") == 0
    engine.close()
