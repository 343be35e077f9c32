"""The same agent SQL on DuckDB and on PostgreSQL gives the same answers (engine-specific: both).

Every statement here is one the SQL guard accepts. DuckDB runs the text as written; PostgreSQL runs the
text ``runtime.sql.render`` generates from the analysed tree. Queries run with several generated
parameter sets over the same generated rows; the actions write the same generated rows on both, then
the tables are compared whole. Every function in the PostgreSQL allow-list (``PORTABLE_FUNCTIONS``,
``PORTABLE_ANONYMOUS``) is used by some query here: that is what admits it to the list.
"""

from __future__ import annotations

import datetime
import decimal
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlglot import exp

from runtime.errors import ButtressError, Code
from runtime.sql.dialect import Dialect, support_functions
from runtime.sql.parsing import MAX_DEPTH, parse, tokenize
from runtime.sql.render import PORTABLE_ANONYMOUS, PORTABLE_FUNCTIONS, render
from runtime.sql.sqlcheck import analyze_statement
from runtime.store import values
from runtime.store.engine import Engine

TABLES = {
    "slot": [
        ("id", "integer"),
        ("label", "text"),
        ("capacity", "integer"),
        ("opens", "timestamp"),
        ("price", "decimal(10,2)"),
    ],
    "booking": [
        ("id", "integer"),
        ("slot", "integer"),
        ("who", "text"),
        ("amount", "double"),
        ("paid", "boolean"),
        ("note", "text"),
        ("starts", "timestamp"),
    ],
}
SCHEMA = {name: [c for c, _ in columns] for name, columns in TABLES.items()}
NAMES = ["ada", "Grace", "alan", "Barbara", "edsger", "ken", "Margaret", "a", ""]
NOTES = [None, "12", "3.5", "-2.5", "x", "99999", " padded ", "-7", "1e2", "007", ".5", "nan", "2026-03-04"]

QUERIES = [
    "select slot, count(*), sum(amount), avg(amount), min(who), max(starts) from booking group by slot order by slot",
    "select slot, string_agg(who, ',' order by who, id) from booking group by slot order by slot",
    "select id, row_number() over (partition by slot order by id), rank() over (order by slot), "
    "dense_rank() over (order by slot), lag(who) over (order by id), lead(amount, 2) over (order by id) "
    "from booking order by id",
    "select id, coalesce(note, 'none'), nullif(slot, $s), greatest(slot, $s), least(slot, $s), abs(amount), "
    "floor(amount), ceil(amount) from booking order by id",
    "select id, round(price, 1), round(price) from slot order by id",
    "select id, lower(who), upper(who), length(who), substring(who, 2, 3), trim(note), "
    "concat(who, '-', slot), replace(who, 'a', 'A') from booking order by id",
    "select id, date_trunc('day', starts), date_trunc('hour', starts), extract(hour from starts), extract(year from starts) "
    "from booking order by id",
    "select count(*) from booking where starts < current_timestamp and cast(starts as date) <= current_date",
    "select id, if(paid, 'paid', 'due') from booking order by id",
    "select id, strpos(who, 'a') from booking where starts_with(who, $p) order by id",
    "select id, case when amount > $x then 'big' else 'small' end, amount * 2 + 1, slot % 3, slot / 2 "
    "from booking where slot in (1, 2, 3) or who like 'a%' or note is null order by id",
    "with busy as (select slot, count(*) as n from booking group by slot) "
    "select s.id, s.label, coalesce(b.n, 0) from slot s left join busy b on b.slot = s.id order by s.id",
    "select id from slot s where exists (select 1 from booking b where b.slot = s.id and b.paid) order by id",
    "select who from booking where paid union select label from slot order by 1",
    "select slot, count(*) from booking group by slot having count(*) > $n order by slot limit 5 offset 1",
    "select id, try_cast(note as integer), try_cast(note as decimal(5,2)), try_cast(note as bigint), "
    "try_cast(note as date), try_cast(note as timestamp) from booking order by id",
    "select count(distinct who), count(note), count(*) filter (where paid) from booking",
    "select id, note from booking order by note desc, id",
    "select id, note from booking order by note nulls first, id",
    "select b.id, s.label, s.price * 2 from booking b join slot s on s.id = b.slot "
    "where s.capacity >= $n and b.amount between $x and $x + 50 order by b.id",
    "select cast(slot as text) || ':' || who from booking where who <> '' order by id",
]

ACTIONS = [
    "insert into booking (id, slot, who, amount, paid, note, starts) "
    "values ($id, $slot, $who, $amount, $paid, $note, $starts)",
    "update booking set amount = amount + $amount where slot = $slot returning id, amount",
    "delete from booking where id = $gone returning who",
    "insert into slot (id, label, capacity, opens, price) values ($slot, $who, $n, $starts, $price) "
    "on conflict (id) do update set capacity = excluded.capacity",
    "update slot set label = upper(label) where id in (select slot from booking where paid)",
]

REFUSED_ON_POSTGRES = [
    "select slot, count(*) from booking group by all",
    "select id from booking qualify row_number() over (partition by slot order by id) = 1",
    "select list(id) from booking",
    "select id, regexp_matches(who, '^a') from booking",
    "select id, epoch(starts) from booking",
    "insert or replace into slot values (99, 'x', 1, timestamp '2026-03-01 10:00', 1.5)",
    "insert or ignore into slot (id, label, capacity) values (1, 'y', 2)",
]
"""Accepted by the guard, with no equal on PostgreSQL: refused there with ``sql.forbidden``."""


def rows_for(rng: random.Random) -> dict[str, list[tuple[Any, ...]]]:
    base = datetime.datetime(2026, 3, 1, 9, 0)
    slots = [
        (
            i,
            rng.choice(NAMES),
            rng.randint(0, 6),
            base + datetime.timedelta(hours=i * 7),
            decimal.Decimal(rng.randint(-5000, 50000)) / 100,
        )
        for i in range(12)
    ]
    bookings = [
        (
            i,
            rng.randrange(12),
            rng.choice(NAMES),
            round(rng.uniform(-100, 400), 3),
            rng.random() < 0.5,
            rng.choice(NOTES),
            base + datetime.timedelta(minutes=rng.randint(0, 60 * 24 * 20)),
        )
        for i in range(80)
    ]
    return {"slot": slots, "booking": bookings}


def setup(engine: Any, data: dict[str, list[tuple[Any, ...]]]) -> None:
    with engine.transaction() as tx:
        d: Dialect = tx.dialect
        tx.execute("CREATE SCHEMA IF NOT EXISTS _buttress")
        for ddl in support_functions(d):
            tx.execute(ddl)
        for name, columns in TABLES.items():
            spelled = ", ".join(f"{c} {d.column_type(t)}" for c, t in columns)
            tx.execute(f"CREATE TABLE {name} ({spelled}, PRIMARY KEY (id))")
            marks = ", ".join("?" for _ in columns)
            for row in data[name]:
                tx.execute(f"INSERT INTO {name} VALUES ({marks})", list(row))


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Any) -> Iterator[tuple[Any, Any]]:
    from runtime.store.postgres import PgEngine

    name = pg_cluster.create_database()
    duck = Engine(tmp_path_factory.mktemp("differential") / "d.duckdb")
    post = PgEngine(pg_cluster.dsn(name))
    data = rows_for(random.Random(20261206))
    setup(duck, data)
    setup(post, data)
    yield duck, post
    duck.close()
    post.close()
    pg_cluster.drop_database(name)


def shape(value: Any) -> str:
    """What kind of JSON value an agent receives for ``value`` (the runtime's conversion): a number
    and a string holding one are not the same answer."""
    converted = values.plain(value)
    if isinstance(converted, bool) or converted is None:
        return type(converted).__name__
    return "number" if isinstance(converted, int | float) else type(converted).__name__


def plain(value: Any) -> Any:
    """One engine-neutral form: numbers as floats to 9 digits (an int and a float of the same value are
    the same number to an agent), the rest as is; ``shape`` tells a number from a string holding one."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | decimal.Decimal):
        return round(float(value), 9)
    return value


def run(engine: Any, sql: str, args: dict[str, Any]) -> list[tuple[Any, ...]]:
    rendered = render(sql, engine.dialect)
    with engine.transaction() as tx:
        if engine.dialect.name == "duckdb":
            result = tx.execute(sql, {k: args[k] for k in rendered.params} or None)
        else:
            result = tx.execute(rendered.text, rendered.values(args))
        out = (
            [tuple((plain(v), shape(v)) for v in row) for row in result.fetchall()]
            if result.description
            else []
        )
        tx.rollback_only = True  # queries leave nothing behind; actions commit below
    return out


def arguments(rng: random.Random) -> dict[str, Any]:
    return {
        "s": rng.randrange(12),
        "x": round(rng.uniform(-50, 300), 2),
        "n": rng.randint(0, 8),
        "p": rng.choice(["a", "A", "G", "", "ed"]),
    }


@pytest.mark.parametrize("sql", QUERIES)
def test_a_query_answers_the_same_on_both_engines(engines: tuple[Any, Any], sql: str) -> None:
    analyze_statement(sql, SCHEMA, allow_writes=False)  # an agent could send it
    rng = random.Random(sql)
    for _ in range(3):
        args = arguments(rng)
        duck, post = (run(engine, sql, args) for engine in engines)
        assert post == duck, (sql, args)


def test_actions_write_the_same_rows_on_both_engines(engines: tuple[Any, Any]) -> None:
    rng = random.Random(7)
    for round_ in range(40):
        sql = ACTIONS[round_ % len(ACTIONS)]
        analyze_statement(sql, SCHEMA, allow_writes=True)
        args = {
            "id": 1000 + round_,
            "slot": rng.randrange(14),
            "who": rng.choice(NAMES),
            "amount": round(rng.uniform(-20, 20), 2),
            "paid": rng.random() < 0.5,
            "note": rng.choice(NOTES),
            "starts": datetime.datetime(2026, 4, 1) + datetime.timedelta(minutes=rng.randint(0, 9999)),
            "gone": rng.randrange(90),
            "n": rng.randint(0, 9),
            "price": decimal.Decimal(rng.randint(0, 9999)) / 100,
        }
        answers = []
        for engine in engines:
            rendered = render(sql, engine.dialect)
            with engine.transaction() as tx:
                if engine.dialect.name == "duckdb":
                    result = tx.execute(sql, {k: args[k] for k in rendered.params})
                else:
                    result = tx.execute(rendered.text, rendered.values(args))
                answers.append(
                    sorted(tuple(plain(v) for v in r) for r in result.fetchall())
                    if "returning" in sql
                    else []
                )
        assert answers[0] == answers[1], (sql, args)
    for table in TABLES:
        whole = f"select * from {table} order by id"
        assert run(engines[0], whole, {}) == run(engines[1], whole, {}), table


@pytest.mark.parametrize("sql", REFUSED_ON_POSTGRES)
def test_what_has_no_equal_on_postgresql_is_refused_there(engines: tuple[Any, Any], sql: str) -> None:
    analyze_statement(sql, SCHEMA, allow_writes=sql.startswith("insert"))
    assert run(engines[0], sql, {}) is not None  # DuckDB runs it
    with pytest.raises(ButtressError) as caught:
        render(sql, engines[1].dialect)
    assert caught.value.code == Code.SQL_FORBIDDEN
    assert caught.value.details["engine"] == "postgres" and caught.value.hint


def test_every_function_of_the_postgresql_allow_list_is_proven_here() -> None:
    used_classes: set[type[exp.Expr]] = set()
    used_names: set[str] = set()
    for sql in QUERIES + ACTIONS:
        for node in parse(sql, tokenize(sql), MAX_DEPTH).walk():
            used_classes.add(type(node))
            if isinstance(node, exp.Anonymous):
                used_names.add(node.name.lower())
    assert PORTABLE_FUNCTIONS - used_classes == set()
    assert PORTABLE_ANONYMOUS - used_names == set()


def test_rendering_is_only_for_accepted_text(tmp_path: Path) -> None:
    """The text PostgreSQL runs never holds the agent's parameter spelling or a second statement."""
    from runtime.sql.dialect import POSTGRES

    rendered = render("select id from booking where who = $who and note = $who", POSTGRES)
    assert "$who" not in rendered.text and rendered.params == ("who",)
    assert ";" not in rendered.text
