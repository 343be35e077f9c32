"""The boundary holes an outside attack found, one regression test (or family) per hole.

1. SQL smuggled through the spec: no string an agent sends changes the shape of generated SQL.
2. Every DuckDB connection the runtime opens is hardened, scratch databases included.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from mcp import Client

from mcp_server.server import build_server
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.schema import changes
from runtime.store.engine import connect
from tests.mcp_server.helpers import error_of, ok
from tests.runtime.conftest import BASE_OPERATIONS, deploy, seed

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------- 1. SQL through the spec

SEQUENCE_ATTACK = [
    {
        "op": "add_entity",
        "entity": {
            "name": "ticket",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer", "default": {"expr": "autoincrement", "sequence": "tseq"}},
                {
                    "name": "n",
                    "type": "integer",
                    "default": {
                        "expr": "autoincrement",
                        "sequence": "tseq')); CREATE TABLE stolen AS SELECT * FROM _buttress.audit; --",
                    },
                },
            ],
        },
    }
]


@pytest.mark.anyio
async def test_an_agent_cannot_name_a_sequence_so_the_smuggled_statement_never_runs(tmp_path: Path) -> None:
    runtime = Runtime.open(tmp_path / "app.duckdb")
    try:
        async with Client(build_server(runtime, agent="attacker")) as client:
            result = await client.call_tool("propose_change", {"operations": SEQUENCE_ATTACK})
            error = error_of(result)
            assert error["code"] == "spec.invalid"
            assert "chosen by the runtime" in error["message"]
            # The same entity without the agent-chosen names is accepted: the runtime names the sequences.
            honest = copy.deepcopy(SEQUENCE_ATTACK)
            for field in honest[0]["entity"]["fields"]:
                field["default"].pop("sequence")
            proposal = ok(await client.call_tool("propose_change", {"operations": honest}))
            assert ok(await client.call_tool("dry_run", {"proposal_id": proposal["proposal_id"]}))["passed"]
            ok(await client.call_tool("deploy", {"proposal_id": proposal["proposal_id"]}))
        _, spec = runtime.current
        entity = spec.entity("ticket")
        assert entity is not None
        assert [f.default_expr.sequence for f in entity.fields if f.default_expr] == [
            "ticket_id_seq",
            "ticket_n_seq",
        ]
        assert "stolen" not in every_table(runtime)
    finally:
        runtime.close()


def every_table(runtime: Runtime) -> set[str]:
    """Every table in the database file, system schema included (a test may look behind the boundary)."""
    with runtime.engine.snapshot() as reader:
        return {
            row[0] for row in reader.fetchall("SELECT table_name FROM duckdb_tables() WHERE NOT internal")
        }


def system_rows(runtime: Runtime, table: str) -> list[tuple[Any, ...]]:
    with runtime.engine.snapshot() as reader:
        return reader.fetchall(f"SELECT * FROM _buttress.{table} ORDER BY ALL")


# One valid operation of every type against the base application (tests/runtime/conftest.py), with the
# action that replace_action and drop_action need. The fuzz below puts a payload into each string.
ACTION = {
    "name": "note_memo",
    "kind": "mutation",
    "description": "Write a memo.",
    "params": [{"name": "body", "type": "text", "description": "the text"}],
    "statements": ["insert into memo (id, body) values (100, $body) returning id"],
}
TOPIC: dict[str, Any] = {
    "name": "memo_events",
    "payload": [{"name": "body", "type": "text"}],
    "key": "body",
    "external": True,
}
WORKFLOW: dict[str, Any] = {
    "name": "memo_flow",
    "description": "Write a memo.",
    "params": [{"name": "body", "type": "text"}],
    "steps": [
        {"name": "write", "kind": "action", "action": "note_memo", "args": {"body": {"from": "input.body"}}}
    ],
}
SUBSCRIPTION: dict[str, Any] = {
    "name": "memo_feed",
    "topic": "memo_events",
    "workflow": "memo_flow",
    "args": {"body": {"from": "message.body"}},
}
FLOWS = [
    {"op": "add_topic", "topic": TOPIC},
    {"op": "add_workflow", "workflow": WORKFLOW},
    {"op": "add_subscription", "subscription": SUBSCRIPTION},
]
TEMPLATES: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "gadget",
            "description": "a gadget",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer", "default": {"expr": "autoincrement"}},
                {"name": "label", "type": "text", "check": "length(label) > 0", "default": "new"},
                {"name": "owner", "type": "integer", "nullable": True, "references": "customer.id"},
                {"name": "seen", "type": "timestamp", "default": {"expr": "now()"}, "description": "when"},
            ],
            "unique": [["label"]],
            "indexes": [{"name": "gadget_owner", "columns": ["owner"]}],
        },
    },
    {"op": "drop_entity", "entity": "tag"},
    {"op": "rename_entity", "entity": "tag", "new_name": "label_set"},
    {
        "op": "add_field",
        "entity": "memo",
        "field": {"name": "mood", "type": "text", "default": "ok", "check": "length(mood) < 10"},
    },
    {"op": "drop_field", "entity": "memo", "field": "author"},
    {"op": "rename_field", "entity": "memo", "field": "author", "new_name": "writer"},
    {"op": "alter_field", "entity": "memo", "field": "body", "check": "length(body) > 0", "default": "x"},
    {"op": "alter_field", "entity": "memo", "field": "author", "nullable": False, "backfill": "anon"},
    {"op": "alter_field", "entity": "memo", "field": "priority", "type": "bigint"},
    {"op": "add_unique", "entity": "memo", "columns": ["body"]},
    {"op": "drop_unique", "entity": "customer", "columns": ["email"]},
    {"op": "add_index", "entity": "memo", "index": {"name": "memo_body", "columns": ["body"]}},
    {"op": "drop_index", "entity": "tag", "name": "tag_label"},
    {
        "op": "add_invariant",
        "invariant": {"name": "sane", "description": "d", "sql": "select id from memo where priority < 0"},
    },
    {"op": "drop_invariant", "name": "no_negative_totals"},
    {"op": "add_view", "view": {"name": "memo_ids", "sql": "select id from memo", "description": "d"}},
    {"op": "replace_view", "view": {"name": "customer_totals", "sql": "select id, name from customer"}},
    {"op": "drop_view", "name": "customer_totals"},
    {"op": "add_action", "action": {**ACTION, "name": "memo_again"}},
    {"op": "replace_action", "action": {**ACTION, "description": "Write a memo, again."}},
    {"op": "drop_action", "name": "note_memo"},
    {"op": "set_checked_by", "by": "duckdb"},
    {"op": "add_topic", "topic": {**TOPIC, "name": "news", "description": "What happened."}},
    {
        "op": "replace_topic",
        "topic": {**TOPIC, "payload": [*TOPIC["payload"], {"name": "who", "type": "text", "nullable": True}]},
    },
    {"op": "drop_topic", "name": "memo_events"},
    {"op": "add_workflow", "workflow": {**WORKFLOW, "name": "memo_again_flow"}},
    {
        "op": "replace_workflow",
        "workflow": {
            **WORKFLOW,
            "description": "Write it, then wait.",
            "steps": [
                *WORKFLOW["steps"],
                {"name": "later", "kind": "sleep", "seconds": 1, "description": "d"},
            ],
        },
    },
    {"op": "drop_workflow", "name": "memo_flow"},
    {"op": "add_subscription", "subscription": {**SUBSCRIPTION, "name": "memo_feed_again"}},
    {
        "op": "replace_subscription",
        "subscription": {**SUBSCRIPTION, "description": "Every event, as a memo."},
    },
    {"op": "drop_subscription", "name": "memo_feed"},
]


def payloads(sentinel: Path) -> list[str]:
    """Quote-breaking strings: each tries to end the construct it lands in and run a statement of its own."""
    return [
        "x\"');--",
        "'); CREATE TABLE pwned (a INTEGER); --",
        '"; CREATE TABLE pwned (a INTEGER); --',
        "0)); CREATE TABLE pwned AS SELECT * FROM _buttress.audit; --",
        "1 -- \n) ; CREATE TABLE pwned (a INTEGER); --",
        "1 */ ; CREATE TABLE pwned (a INTEGER); /*",
        f"'); COPY (SELECT 1) TO '{sentinel}'; --",
        "$$; CREATE TABLE pwned (a INTEGER); $$",
        "\\'; CREATE TABLE pwned (a INTEGER); --",
        "1; UPDATE _buttress.idempotency SET result = '{}'",
    ]


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every string leaf of an operation (its 'op' discriminator aside)."""
    if isinstance(value, str):
        if path != ("op",):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))


def with_value(op: dict[str, Any], path: tuple[Any, ...], value: str) -> dict[str, Any]:
    changed = copy.deepcopy(op)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


def test_every_operation_type_has_a_fuzz_template() -> None:
    assert {t["op"] for t in TEMPLATES} == set(changes.OPERATION_NAMES)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Path]]:
    directory = tmp_path_factory.mktemp("fuzz")
    runtime = Runtime.open(directory / "app.duckdb")
    deploy(runtime, [*BASE_OPERATIONS, {"op": "add_action", "action": ACTION}, *FLOWS])
    seed(runtime)
    yield runtime, directory / "leaked.csv"
    runtime.close()


DEPLOY_EVERY = bool(os.environ.get("BUTTRESS_FUZZ_FULL"))
"""Every payload is proposed and dry-run (the dry-run executes the very statements a deploy would, then
rolls them back). By default the first payload a dry-run passes at each string is also deployed and
rolled back; ``BUTTRESS_FUZZ_FULL=1`` (a long trial CI runs) deploys and rolls back every one."""


@pytest.mark.parametrize("template", TEMPLATES, ids=[t["op"] + str(i) for i, t in enumerate(TEMPLATES)])
def test_quote_breaking_payloads_in_any_string_of_any_operation_never_execute(
    fuzzed: tuple[Runtime, Path], template: dict[str, Any]
) -> None:
    runtime, sentinel = fuzzed
    tables_before = every_table(runtime)
    idempotency_before = system_rows(runtime, "idempotency")
    version_before, _ = runtime.current
    accepted = 0
    deployed: set[tuple[Any, ...]] = set()
    parser = runtime.engine.scratch()
    for path in string_paths(template):
        original = template
        for target in path:
            original = original[target]
        for payload in payloads(sentinel):
            for value in (payload, f"{original}{payload}"):
                op = with_value(template, path, value)
                try:
                    proposal = runtime.propose([op], actor="fuzzer")
                except ButtressError:
                    continue
                accepted += 1
                for step in proposal.steps:
                    for statement in (*step.sql, *(p.sql for p in step.probes)):
                        assert len(parser.extract_statements(statement)) == 1, statement
                report = runtime.dry_run(proposal.proposal_id, actor="fuzzer")
                if report.passed and (DEPLOY_EVERY or path not in deployed):
                    # as the operator: an agent's hazardous deploy would wait for approval
                    runtime.deploy(proposal.proposal_id)
                    runtime.rollback(to_version=version_before)
                    deployed.add(path)
                assert "pwned" not in every_table(runtime), (path, value)
    parser.close()
    assert not sentinel.exists()
    assert system_rows(runtime, "idempotency") == idempotency_before
    new_tables = every_table(runtime) - tables_before
    assert all(re.fullmatch(r"ret_v\d+_s\d+(_\d+)?", name) for name in new_tables), new_tables
    assert runtime.verify_audit().ok
    assert runtime.check_drift() == []
    texts = {path[-1] for path in string_paths(template)} & {"description", "default", "backfill"}
    assert accepted > 0 or not texts  # free text is data: accepted, stored, never pasted into SQL


# --------------------------------------------------------------------- 2. every connection hardened

PROBE = "SELECT * FROM read_text('/etc/hostname')"


def test_each_engine_is_connected_only_in_its_engine_module() -> None:
    doors = {"duckdb.connect": "engine.py", "psycopg.connect": "postgres.py", "psycopg.Connection(": "-"}
    offenders = []
    for package in ("runtime", "tools", "mcp_server"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for call, door in doors.items():
                if call in text and path != ROOT / "runtime" / "store" / door:
                    offenders.append(f"{path.relative_to(ROOT)}: {call}")
    assert offenders == []


def test_the_writer_snapshots_and_scratch_databases_cannot_reach_files(rt: Runtime) -> None:
    with pytest.raises(ButtressError) as caught, rt.engine.transaction() as tx:
        tx.execute(PROBE)
    assert caught.value.code == "sql.forbidden"
    with pytest.raises(ButtressError) as caught, rt.engine.snapshot() as reader:
        reader.execute(PROBE)
    assert caught.value.code == "sql.forbidden"
    scratch = rt.engine.scratch()
    try:
        with pytest.raises(duckdb.PermissionException):
            scratch.execute(PROBE)
        with pytest.raises(duckdb.Error):
            scratch.execute("SET enable_external_access = true")
    finally:
        scratch.close()
    for raw in (connect(":memory:"),):
        with pytest.raises(duckdb.PermissionException):
            raw.execute(PROBE)
        raw.close()


def test_every_connection_opened_during_a_whole_lifecycle_comes_from_the_engine_factory(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = duckdb.connect
    callers: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        frame = inspect.stack()[1]
        callers.append(f"{Path(frame.filename).name}:{frame.function}")
        return real(*args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", spy)
    deploy(rt, BASE_OPERATIONS)
    seed(rt)
    deploy(rt, [{"op": "drop_field", "entity": "memo", "field": "author"}])
    rt.query("select * from memo")
    rt.rollback()
    assert rt.check_drift() == []
    assert callers and set(callers) == {"engine.py:connect"}
