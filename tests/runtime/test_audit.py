"""The audit chain records every operation, refusals included, and detects any tampering."""

from __future__ import annotations

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.runtime.conftest import deploy


@pytest.fixture
def audited(rt: Runtime) -> Runtime:
    deploy(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "item",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "integer"}],
                },
            }
        ],
    )
    with pytest.raises(ButtressError):
        rt.deploy("p404")
    rt.query("select * from item", actor="agent")
    assert rt.verify_audit().ok
    return rt


def tamper(rt: Runtime, sql: str) -> None:
    with rt.engine.transaction() as tx:
        tx.execute(sql)


def test_every_operation_and_refusal_has_an_audit_row(audited: Runtime) -> None:
    rows = [(e.operation, e.outcome, e.error_code) for e in audited.read_audit(limit=100)]
    assert rows == [
        ("propose", "ok", None),
        ("dry_run", "passed", None),
        ("deploy", "ok", None),
        ("deploy", "refused", "not_found"),
        ("query", "ok", None),
    ]


@pytest.mark.parametrize(
    ("sql", "first_bad"),
    [
        ("UPDATE _buttress.audit SET actor = 'mallory' WHERE seq = 2", 2),
        ("DELETE FROM _buttress.audit WHERE seq = 3", 4),
        ("UPDATE _buttress.audit SET seq = seq + 100 WHERE seq = 5", 105),
        (
            "INSERT INTO _buttress.audit SELECT 6, time, actor, operation, arguments, outcome, error_code, version_before, "
            "version_after, proposal_id, prev_hash, hash FROM _buttress.audit WHERE seq = 5",
            6,
        ),
        ("UPDATE _buttress.audit SET arguments = '{}' WHERE seq = 1", 1),
    ],
)
def test_verify_detects_edited_deleted_inserted_and_reordered_rows(
    audited: Runtime, sql: str, first_bad: int
) -> None:
    tamper(audited, sql)
    result = audited.verify_audit()
    assert not result.ok
    assert result.first_bad_seq == first_bad


def test_swapping_two_rows_is_detected(audited: Runtime) -> None:
    tamper(audited, "UPDATE _buttress.audit SET seq = -1 WHERE seq = 2")
    tamper(audited, "UPDATE _buttress.audit SET seq = 2 WHERE seq = 3")
    tamper(audited, "UPDATE _buttress.audit SET seq = 3 WHERE seq = -1")
    assert not audited.verify_audit().ok
