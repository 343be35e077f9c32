"""Shared fixtures for runtime tests: a real DuckDB file per test, a seeded application."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.runtime import Runtime
from runtime.store import fingerprint
from tests.conftest import open_runtime

BASE_OPERATIONS: list[dict[str, Any]] = [
    {
        "op": "add_entity",
        "entity": {
            "name": "customer",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "name", "type": "text"},
                {"name": "email", "type": "text", "nullable": True},
                {"name": "tier", "type": "text", "default": "basic"},
                {"name": "score", "type": "integer", "nullable": True, "check": "score >= 0"},
            ],
            "unique": [["email"]],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "purchase",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "customer_id", "type": "integer", "references": "customer.id"},
                {"name": "total", "type": "decimal(10,2)"},
                {"name": "placed_at", "type": "timestamp"},
            ],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "tag",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "label", "type": "text"},
            ],
            "indexes": [{"name": "tag_label", "columns": ["label"]}],
        },
    },
    {
        "op": "add_entity",
        "entity": {
            "name": "memo",
            "primary_key": ["id"],
            "fields": [
                {"name": "id", "type": "integer"},
                {"name": "body", "type": "text"},
                {"name": "author", "type": "text", "nullable": True},
                {"name": "priority", "type": "integer", "default": 1},
                {"name": "flagged", "type": "boolean", "default": False},
            ],
        },
    },
    {
        "op": "add_view",
        "view": {
            "name": "customer_totals",
            "sql": "select c.id, c.name, sum(p.total) as spent from customer c "
            "left join purchase p on p.customer_id = c.id group by c.id, c.name",
        },
    },
    {
        "op": "add_invariant",
        "invariant": {
            "name": "no_negative_totals",
            "description": "totals are never negative",
            "sql": "select id from purchase where total < 0",
        },
    },
]

SEED = [
    "INSERT INTO customer VALUES (1, 'Ada', 'ada@example.com', 'gold', 10), (2, 'Bo', NULL, 'basic', NULL), "
    "(3, 'Cy', 'cy@example.com', 'basic', 0)",
    "INSERT INTO purchase VALUES (1, 1, 12.50, '2026-01-01 10:00'), (2, 1, 3.25, '2026-01-02 11:00'), "
    "(3, 3, 99.99, '2026-02-01 09:30')",
    "INSERT INTO tag VALUES (1, 'red'), (2, 'blue')",
    "INSERT INTO memo VALUES (1, 'first', 'ann', 2, true), (2, 'second', NULL, 1, false), (3, 'third', 'bob', 5, false)",
]


def deploy(rt: Runtime, operations: list[dict[str, Any]]) -> int:
    proposal = rt.propose(operations)
    report = rt.dry_run(proposal.proposal_id)
    assert report.passed, report.error
    return rt.deploy(proposal.proposal_id).version


def seed(rt: Runtime, statements: list[str] = SEED) -> None:
    with rt.engine.transaction() as tx:
        for statement in statements:
            tx.execute(statement)


def state(rt: Runtime) -> dict[str, Any]:
    """The catalog plus every application table's rows (by column name, sorted by primary key)."""
    _, spec = rt.current
    with rt.engine.snapshot() as cursor:
        catalog = fingerprint.read(cursor)
        data = {}
        for entity in spec.entities:
            result = cursor.execute(f'SELECT * FROM "{entity.name}"')
            names = [d[0] for d in result.description or []]
            rows = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
            data[entity.name] = sorted(rows, key=lambda r: tuple(str(r[k]) for k in entity.primary_key))
    return {"catalog": catalog, "data": data, "spec": spec.hash()}


@pytest.fixture
def rt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path, request)
    yield runtime
    runtime.close()


@pytest.fixture
def app(rt: Runtime) -> Runtime:
    deploy(rt, BASE_OPERATIONS)
    seed(rt)
    return rt
