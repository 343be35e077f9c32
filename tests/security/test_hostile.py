"""Hostile input, grouped by attack. Every case must be refused with the right code, leave the schema
and data unchanged, and leave an audit row recording the refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.boundary.policy import Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import ENGINE
from tests.runtime.conftest import BASE_OPERATIONS, deploy, seed, state

FORBIDDEN = {"sql.forbidden"}
PARSE_OR_FORBIDDEN = {"sql.forbidden", "sql.parse"}
UNKNOWN = {"sql.forbidden", "sql.unknown_table"}

SYSTEM_SCHEMA = [
    "select * from _buttress.audit",
    'select * from "_buttress"."audit"',
    "select * from _BUTTRESS.AUDIT",
    'select * from "_Buttress".audit',
    "select * from main._buttress",
    "with a as (select * from _buttress.versions) select * from a",
    "select (select count(*) from _buttress.audit)",
    "select * from memo where id in (select seq from _buttress.audit)",
    "select id from memo union select seq from _buttress.audit",
    "select * from memo, lateral (select * from _buttress.proposals) p",
    "select * from (select * from _buttress.idempotency) t",
    "select * from information_schema.tables",
    'select * from "information_schema"."columns"',
    "select * from pg_catalog.pg_tables",
    "select * from pg_tables",
    "select * from sqlite_master",
    "select * from duckdb_tables()",
    "select * from duckdb_settings()",
    "select * from duckdb_functions()",
    "select * from duckdb_secrets()",
    "select * from duckdb_databases()",
    "select * from system.main.duckdb_tables",
    "select * from temp.main.anything",
    "select * from app._buttress.audit",
    "select current_setting('enable_external_access')",
    "select * from pragma_table_info('memo')",
    "select * from pragma_database_list()",
    "select * from query('select * from _buttress.audit')",
    "select * from query_table('_buttress.audit')",
    "select getvariable('x')",
    "select * from memo m join _buttress.retained r on true",
    "select * from _buttress.approvals",
]

FILES = [
    "select * from read_csv('/etc/passwd')",
    "select * from read_csv_auto('/etc/passwd')",
    "select * from read_parquet('/tmp/x.parquet')",
    "select * from read_json('/tmp/x.json')",
    "select * from read_ndjson('/tmp/x.json')",
    "select * from read_text('/etc/passwd')",
    "select * from read_blob('/etc/passwd')",
    "select * from glob('/etc/*')",
    "select * from '/etc/passwd'",
    "select * from 'data.csv'",
    "select * from parquet_scan('/tmp/x.parquet')",
    "select * from sniff_csv('/etc/passwd')",
    "select * from delta_scan('/tmp/x')",
    "select * from iceberg_scan('/tmp/x')",
    "select * from read_xlsx('/tmp/x.xlsx')",
    "select read_text('/etc/passwd')",
    "copy memo to '/tmp/buttress-leak.csv'",
    "copy (select 1) to '/tmp/buttress-leak.csv'",
    "export database '/tmp/buttress-export'",
    "import database '/tmp/buttress-export'",
    "select * from memo where body = (select content from read_text('/etc/passwd'))",
]

EXTENSIONS = [
    "install httpfs",
    "load httpfs",
    "force install httpfs",
    "install 'x' from 'http://127.0.0.1/x'",
    "select load_extension('httpfs')",
    "attach '/tmp/buttress-other.duckdb' as other",
    "attach ':memory:' as m",
    "detach memo",
    "select * from read_csv('https://127.0.0.1/x.csv')",
    "create secret s (type s3, key_id 'x')",
]

CONFIGURATION = [
    "set enable_external_access = true",
    "set lock_configuration = false",
    "set threads = 1",
    "set global memory_limit = '1GB'",
    "reset lock_configuration",
    "pragma enable_profiling",
    "pragma version",
    "call pragma_version()",
    "checkpoint",
    "force checkpoint",
    "vacuum",
    "use memory",
    "begin",
    "begin transaction",
    "commit",
    "rollback",
    "abort",
    "start transaction",
    "create table x (a integer)",
    "drop table memo",
    "alter table memo add column x integer",
    "truncate memo",
    "create macro m(a) as a + 1",
    "create view v as select 1",
    "create sequence s",
    "describe memo",
    "show tables",
    "summarize memo",
    "explain select 1",
    "comment on table memo is 'x'",
    "delete from memo",
    "update memo set body = 'x'",
    "insert into memo (id, body) values (99, 'x')",
]

SMUGGLING = [
    "select 1; drop table memo",
    "select 1;drop table memo",
    "select 1 -- comment\n; drop table memo",
    "select 1 /* ; */ ; delete from memo",
    "select ';' ; delete from memo",
    "select 1;;",
    "select 1; select 2",
    "select 'a'; attach '/tmp/x.db' as x",
    "/* hi */ select 1; checkpoint",
    "select 1\n;\nupdate memo set body = 'x'",
    "select $$;$$; delete from memo",
]

UNICODE = [
    "select * from m\u0435mo",  # Cyrillic e
    'select * from "m\u0435mo"',
    "select * from \uff4d\uff45\uff4d\uff4f",  # fullwidth
    "select * from _butt\u0433ess.audit",
    "select b\u043edy from memo",
    'select "\u0456d" from memo',
]

SIZE_BUILDING = [
    # a size argument past the bound: DuckDB builds the value outside its memory limit
    "select bitstring('1', 2000000000)",
    "select bitstring('1'::bit, 2000000000)",
    "select bitstring(body, id) from memo",
    "select repeat('x', 2000000000)",
    "select lpad('x', 2000000000, 'y')",
    "select list_resize([1], 2000000000)",
    "select printf('%2000000000d', 1)",
    # a value copied once per unit of size, match or element
    "select repeat(body, 1000) from memo",
    "select repeat(repeat('x', 100000), 100000)",
    "select list_resize([1], 100000, body) from memo",
    "select replace(body, 'a', body) from memo",
    "select replace(repeat('x', 100000), 'x', repeat('y', 100000))",
    "select regexp_replace(body, '.', body, 'g') from memo",
    "select concat_ws(repeat('x', 100000), range(100000))",
    "select concat_ws(body, range(100000)) from memo",
    # the body of a lambda runs once per list element
    "select list_transform(range(100000), lambda x: repeat('x', 100000))",
    "select [repeat('x', 100000) for x in range(100000)]",
    "select list_transform(range(100000), lambda x: printf('%100000d', x))",
    # a regular expression large enough to make matching cost time the deadline cannot stop
    "select regexp_extract_all(body, '1{1000}1{1000}1{1000}') from memo",
    "select regexp_matches(body, body) from memo",
    "select body ~ repeat('(1|2)?', 250) from memo",
    "select body similar to body from memo",
    # a time zone name DuckDB looks up at a cost that grows with its length
    "select timezone(body, timestamp '2000-01-01') from memo",
    "select timestamp '2000-01-01' at time zone body from memo",
    "select time_bucket(interval 1 day, timestamptz '2000-01-01', body) from memo",
    "select make_timestamptz(2000, 1, 1, 0, 0, 0, repeat('x', 100000))",
    # memory that grows with the product of the arguments' lengths
    "select damerau_levenshtein(body, body) from memo",
]

OVERSIZED = [
    "select " + " + ".join(["1"] * 60_000),
    "select " + "(" * 400 + "1" + ")" * 400,
    "select * from " + "(select * from " * 100 + "memo" + ") t" * 100,
    "select " + "coalesce(" * 200 + "1" + ")" * 200,
]

POSTGRES = [
    "select query_to_xml('select * from _buttress.audit', true, true, '')",
    "select table_to_xml('memo', true, true, '')",
    "select database_to_xml(true, true, '')",
    "select ts_stat('select body::tsvector from memo')",
    "select set_config('role', 'postgres', false)",
    "select current_setting('data_directory')",
    "select dblink('dbname=postgres', 'select 1')",
    "select lo_import('/etc/passwd')",
    "select lo_export(1, '/tmp/buttress-leak.csv')",
    "select pg_read_file('/etc/passwd')",
    "select pg_ls_dir('.')",
    "select pg_advisory_lock(1114985556)",
    "select pg_try_advisory_lock(1)",
    "select pg_notify('buttress_versions', '99')",
    "select pg_sleep(30)",
    "select pg_terminate_backend(pg_backend_pid())",
    "select pg_cancel_backend(1)",
    "select * from pg_stat_activity",
    "select * from pg_catalog.pg_authid",
    "select * from pg_shadow",
    "select txid_current()",
    "copy memo to program 'touch /tmp/buttress-leak.csv'",
    "copy (select 1) to '/tmp/buttress-leak.csv'",
    "select * from memo for update",
    "lock table memo in access exclusive mode",
    "set role postgres",
    "set session authorization postgres",
    "listen buttress_versions",
    "notify buttress_versions",
    "do $$ begin perform pg_sleep(30); end $$",
    "create extension dblink",
    "select inet_server_addr()",
]
"""PostgreSQL's ways out: its XML and text-search functions that run SQL given as text, settings and
roles, another database, large objects and files, the runtime's own advisory locks and channel, sleeps,
other sessions, COPY to a program, row locks. Refused by the guard on both engines; on PostgreSQL the
agent role would refuse what got through."""

SQL_CASES = (
    [("system_schema", s, UNKNOWN) for s in SYSTEM_SCHEMA]
    + [("files", s, PARSE_OR_FORBIDDEN | {"sql.unknown_table"}) for s in FILES]
    + [("extensions", s, PARSE_OR_FORBIDDEN) for s in EXTENSIONS]
    + [("configuration", s, PARSE_OR_FORBIDDEN) for s in CONFIGURATION]
    + [("smuggling", s, PARSE_OR_FORBIDDEN) for s in SMUGGLING]
    + [("unicode", s, PARSE_OR_FORBIDDEN | {"sql.unknown_table", "sql.unknown_column"}) for s in UNICODE]
    + [("oversized", s, {"limit.exceeded"}) for s in OVERSIZED]
    + [("size_building", s, FORBIDDEN) for s in SIZE_BUILDING]
    + [("postgres", s, PARSE_OR_FORBIDDEN | UNKNOWN) for s in POSTGRES]
)

BAD_NAMES = [
    "_buttress",
    "duckdb_tables",
    "pg_class",
    "information_schema",
    "main",
    "select",
    "sqlite_master",
    "Memo",
    "m\u0435mo",
    "a" * 64,
    "1abc",
    "memo;drop",
    "rowid",
    "",
]

MALFORMED_OPERATIONS: list[Any] = [
    [{}],
    [{"op": "explode"}],
    [{"op": "add_entity"}],
    [{"op": "add_entity", "entity": {"name": "x", "fields": [], "primary_key": ["id"]}}],
    [
        {
            "op": "add_entity",
            "entity": {"name": "x", "fields": [{"name": "id", "type": "integer"}], "primary_key": []},
        }
    ],
    [
        {
            "op": "add_entity",
            "entity": {"name": "x", "fields": [{"name": "id", "type": "varchar(10)"}], "primary_key": ["id"]},
        }
    ],
    [
        {
            "op": "add_entity",
            "entity": {"name": "x", "fields": [{"name": "id", "type": "integer"}], "primary_key": ["nope"]},
        }
    ],
    [
        {
            "op": "add_entity",
            "entity": {
                "name": "x",
                "fields": [{"name": "id", "type": "integer", "surprise": 1}],
                "primary_key": ["id"],
            },
        }
    ],
    [
        {
            "op": "add_field",
            "entity": "memo",
            "field": {"name": "x", "type": "integer", "default": "not a number"},
        }
    ],
    [
        {
            "op": "add_field",
            "entity": "memo",
            "field": {"name": "x", "type": "integer", "default": {"expr": "random()"}},
        }
    ],
    [
        {
            "op": "add_field",
            "entity": "memo",
            "field": {"name": "x", "type": "text", "nullable": True, "check": "x in (select body from memo)"},
        }
    ],
    [
        {
            "op": "add_field",
            "entity": "memo",
            "field": {"name": "x", "type": "text", "nullable": True, "references": "nowhere.id"},
        }
    ],
    [{"op": "drop_field", "entity": "memo", "field": "id"}],
    [{"op": "drop_entity", "entity": "customer"}],
    [{"op": "rename_field", "entity": "memo", "field": "body", "new_name": "author"}],
    [{"op": "alter_field", "entity": "memo", "field": "body"}],
    [{"op": "add_view", "view": {"name": "v", "sql": "select * from memo; drop table memo"}}],
    [{"op": "add_invariant", "invariant": {"name": "i", "sql": "delete from memo"}}],
    [{"op": "add_action", "action": {"name": "a", "kind": "query", "statements": ["delete from memo"]}}],
    [{"op": "add_action", "action": {"name": "a", "kind": "mutation", "statements": ["drop table memo"]}}],
    [
        {
            "op": "add_action",
            "action": {"name": "a", "kind": "mutation", "statements": ["update memo set body = $b"]},
        }
    ],
    "not a list",
    [None],
    [[1, 2, 3]],
]


@pytest.fixture(scope="module")
def hostile_app(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Runtime]:
    """One application for every refusal here: each test checks that its attack changed nothing
    (``refused``), so none of them leaves anything behind for the next. On the engine the suite runs
    on (``BUTTRESS_TEST_ENGINE``: CI runs this file on PostgreSQL too)."""
    yield from _hostile_app(tmp_path_factory.mktemp("hostile"), request)


@pytest.fixture
def writable_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """The same application, of the test's own: for a test whose call is meant to write."""
    yield from _hostile_app(tmp_path, request)


def _hostile_app(directory: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    policy = Policy.model_validate({"limits": {"max_operations": 50}})
    if ENGINE != "postgres":
        yield from _deployed(Runtime.open(directory / "app.duckdb", policy=policy))
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    try:
        yield from _deployed(
            Runtime.open_postgres(cluster.dsn(name), directory / "app.postgres", policy=policy)
        )
    finally:
        cluster.drop_database(name)


def _deployed(rt: Runtime) -> Iterator[Runtime]:
    deploy(
        rt,
        [
            *BASE_OPERATIONS,
            {
                "op": "add_action",
                "action": {
                    "name": "add_memo",
                    "kind": "mutation",
                    "params": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text"}],
                    "statements": ["insert into memo (id, body) values ($id, $body)"],
                },
            },
        ],
    )
    seed(rt)
    yield rt
    rt.close()


def refused(rt: Runtime, call: Any, codes: set[str], operation: str) -> None:
    before = state(rt)
    seq = rt.read_audit(limit=1)[-1].seq
    with pytest.raises(ButtressError) as caught:
        call()
    assert str(caught.value.code) in codes, caught.value.to_dict()
    assert state(rt) == before
    rows = rt.read_audit(after_seq=seq, limit=10)
    assert [(r.operation, r.outcome, r.error_code) for r in rows] == [
        (operation, "refused", str(caught.value.code))
    ]
    for leaked in ("/tmp/buttress-leak.csv", "/tmp/buttress-other.duckdb", "/tmp/buttress-export"):
        assert not Path(leaked).exists()


@pytest.mark.parametrize(
    ("attack", "sql", "codes"), SQL_CASES, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(SQL_CASES)]
)
def test_hostile_sql_is_refused_by_query(
    hostile_app: Runtime, attack: str, sql: str, codes: set[str]
) -> None:
    refused(hostile_app, lambda: hostile_app.query(sql, actor="agent"), codes, "query")


@pytest.mark.parametrize("sql", SYSTEM_SCHEMA[:10] + FILES[:6] + CONFIGURATION[-3:])
def test_hostile_sql_is_refused_inside_views(hostile_app: Runtime, sql: str) -> None:
    op = [{"op": "add_view", "view": {"name": "sneaky", "sql": sql}}]
    refused(
        hostile_app, lambda: hostile_app.propose(op, actor="agent"), UNKNOWN | PARSE_OR_FORBIDDEN, "propose"
    )


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_colliding_with_system_names_are_refused(hostile_app: Runtime, name: str) -> None:
    op = [
        {
            "op": "add_entity",
            "entity": {"name": name, "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
        }
    ]
    refused(hostile_app, lambda: hostile_app.propose(op, actor="agent"), {"spec.invalid"}, "propose")


@pytest.mark.parametrize("ops", MALFORMED_OPERATIONS, ids=[str(i) for i in range(len(MALFORMED_OPERATIONS))])
def test_malformed_operations_are_refused(hostile_app: Runtime, ops: Any) -> None:
    codes = {
        "spec.invalid",
        "sql.forbidden",
        "sql.parse",
        "sql.param",
        "sql.unknown_table",
        "sql.unknown_column",
    }
    refused(hostile_app, lambda: hostile_app.propose(ops, actor="agent"), codes, "propose")


def test_an_oversized_proposal_is_refused(hostile_app: Runtime) -> None:
    ops = [{"op": "add_view", "view": {"name": f"v{i}", "sql": "select 1"}} for i in range(51)]
    refused(hostile_app, lambda: hostile_app.propose(ops, actor="agent"), {"limit.exceeded"}, "propose")


ACTION_ARGS: list[tuple[Any, str]] = [
    ({"id": "1; drop table memo", "body": "x"}, "action.invalid_args"),
    ({"id": 1.5, "body": "x"}, "action.invalid_args"),
    ({"id": 1, "body": "x", "extra": "drop table memo"}, "action.invalid_args"),
    ({"id": 1}, "action.invalid_args"),
    ({"id": {"$ne": 1}, "body": "x"}, "action.invalid_args"),
    ({"id": [1, 2], "body": "x"}, "action.invalid_args"),
    ({"id": 1, "body": ["x"]}, "action.invalid_args"),
    ({"id": 1, "body": None}, "action.invalid_args"),
    ({"id": 2**40, "body": "x"}, "action.constraint_violated"),
    ({"id": 1, "body": "duplicate key"}, "action.constraint_violated"),
]


@pytest.mark.parametrize(("args", "code"), ACTION_ARGS, ids=[str(i) for i in range(len(ACTION_ARGS))])
def test_injection_through_action_arguments_is_refused(hostile_app: Runtime, args: Any, code: str) -> None:
    refused(
        hostile_app,
        lambda: hostile_app.run_action("add_memo", args, actor="agent"),
        {code, "engine.error"},
        "run_action",
    )


def test_sql_in_a_text_argument_is_stored_as_text_never_run(writable_app: Runtime) -> None:
    payload = "x'); drop table memo; --"
    writable_app.run_action("add_memo", {"id": 77, "body": payload}, actor="agent")
    assert writable_app.query("select body from memo where id = 77").rows == [[payload]]


def test_unknown_actions_are_refused(hostile_app: Runtime) -> None:
    refused(
        hostile_app,
        lambda: hostile_app.run_action("_buttress", {}, actor="agent"),
        {"not_found"},
        "run_action",
    )
