"""References checked by the runtime: rows deleted in any order inside one action, on_delete restrict /
cascade / set null, writes that point nowhere refused, parents altered without rebuilding children,
and existing projects moved to it (and back) by an ordinary deploy and rollback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import constraint_kinds, examples, index_names
from tests.runtime.conftest import deploy


def expense_app(on_delete: str = "restrict") -> list[dict[str, Any]]:
    nullable = on_delete == "set_null"
    return [
        {
            "op": "add_entity",
            "entity": {
                "name": "expense",
                "primary_key": ["id"],
                "fields": [{"name": "id", "type": "integer"}, {"name": "amount", "type": "integer"}],
            },
        },
        {
            "op": "add_entity",
            "entity": {
                "name": "share",
                "primary_key": ["id"],
                "fields": [
                    {"name": "id", "type": "integer"},
                    {
                        "name": "expense_id",
                        "type": "integer",
                        "references": "expense.id",
                        "on_delete": on_delete,
                        "nullable": nullable,
                    },
                    {"name": "who", "type": "text"},
                ],
            },
        },
        action("add_expense", ["id", "amount"], "insert into expense (id, amount) values ($id, $amount)"),
        action(
            "add_share",
            ["id", "expense_id"],
            "insert into share (id, expense_id, who) values ($id, $expense_id, 'ada')",
        ),
        action(
            "delete_expense",
            ["id"],
            "delete from share where expense_id = $id",
            "delete from expense where id = $id",
        ),
        action(
            "delete_expense_first",
            ["id"],
            "delete from expense where id = $id",
            "delete from share where expense_id = $id",
        ),
        action("delete_only_expense", ["id"], "delete from expense where id = $id"),
        action(
            "move_share", ["id", "expense_id"], "update share set expense_id = $expense_id where id = $id"
        ),
    ]


def action(name: str, params: list[str], *statements: str) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": "integer"} for p in params],
            "statements": list(statements),
        },
    }


def seeded(rt: Runtime, on_delete: str = "restrict") -> Runtime:
    deploy(rt, expense_app(on_delete))
    for n in (1, 2):
        rt.run_action("add_expense", {"id": n, "amount": 10 * n})
    for n, expense in ((1, 1), (2, 1), (3, 2)):
        rt.run_action("add_share", {"id": n, "expense_id": expense})
    return rt


def count(rt: Runtime, sql: str) -> int:
    return int(rt.query(sql).rows[0][0])


def code(call: Any) -> str:
    with pytest.raises(ButtressError) as caught:
        call()
    return str(caught.value.code)


def test_new_projects_check_references_in_the_runtime_without_duckdb_foreign_keys(rt: Runtime) -> None:
    seeded(rt)
    assert rt.current[1].checked_by == "buttress"
    assert "FOREIGN KEY" not in constraint_kinds(rt, "share")
    assert "buttress_ref_share_expense_id" in index_names(rt, "share")


def test_children_then_parent_are_deleted_in_one_action(rt: Runtime) -> None:
    seeded(rt)
    rt.run_action("delete_expense", {"id": 1})
    assert count(rt, "select count(*) from expense") == 1
    assert count(rt, "select count(*) from share") == 1


def test_parent_then_children_are_deleted_in_one_action(rt: Runtime) -> None:
    seeded(rt)
    rt.run_action("delete_expense_first", {"id": 1})
    assert count(rt, "select count(*) from share where expense_id = 1") == 0


def test_restrict_refuses_deleting_a_referenced_row_and_names_the_children(rt: Runtime) -> None:
    seeded(rt, "restrict")
    with pytest.raises(ButtressError) as caught:
        rt.run_action("delete_only_expense", {"id": 1})
    assert caught.value.code == "action.constraint_violated"
    assert {row["id"] for row in caught.value.details["rows"]} == {1, 2}
    assert count(rt, "select count(*) from expense") == 2  # nothing changed


def test_cascade_deletes_the_children(rt: Runtime) -> None:
    seeded(rt, "cascade")
    rt.run_action("delete_only_expense", {"id": 1})
    assert count(rt, "select count(*) from share") == 1


def test_set_null_empties_the_reference_of_the_children(rt: Runtime) -> None:
    seeded(rt, "set_null")
    rt.run_action("delete_only_expense", {"id": 1})
    assert rt.query("select id, expense_id from share order by id").rows == [[1, None], [2, None], [3, 2]]


def test_a_write_pointing_nowhere_is_refused(rt: Runtime) -> None:
    seeded(rt)
    assert (
        code(lambda: rt.run_action("add_share", {"id": 9, "expense_id": 99})) == "action.constraint_violated"
    )
    assert (
        code(lambda: rt.run_action("move_share", {"id": 1, "expense_id": 99})) == "action.constraint_violated"
    )
    rt.run_action("move_share", {"id": 1, "expense_id": 2})
    assert count(rt, "select count(*) from share where expense_id = 2") == 2


def test_set_null_needs_a_nullable_field_and_runtime_checks(rt: Runtime) -> None:
    app = expense_app("set_null")
    app[1]["entity"]["fields"][1]["nullable"] = False
    assert code(lambda: rt.propose(app)) == "spec.invalid"


def test_adding_a_field_to_a_parent_does_not_rebuild_its_children(rt: Runtime) -> None:
    seeded(rt)
    proposal = rt.propose(
        [
            {
                "op": "add_field",
                "entity": "expense",
                "field": {"name": "note", "type": "text", "nullable": True},
            }
        ]
    )
    assert [step.strategy for step in proposal.steps] == ["alter"]
    assert all("share" not in statement for step in proposal.steps for statement in step.sql)


def test_a_deploy_that_leaves_rows_pointing_nowhere_fails_its_dry_run(rt: Runtime) -> None:
    seeded(rt)
    deploy(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {
                    "name": "tag",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "integer"}],
                },
            }
        ],
    )
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO tag VALUES (1)")
    proposal = rt.propose(
        [
            {
                "op": "add_field",
                "entity": "share",
                "field": {"name": "tag_id", "type": "integer", "default": 7, "references": "tag.id"},
            }
        ]
    )
    report = rt.dry_run(proposal.proposal_id)
    assert not report.passed and report.error is not None
    assert report.error["code"] == "deploy.dry_run_failed" and "tag" in report.error["message"]


def test_an_existing_project_moves_to_runtime_checks_by_a_deploy_and_back_by_a_rollback(
    tmp_path: Path,
) -> None:
    rt = Runtime.open(tmp_path / "old.duckdb")
    try:
        with rt.engine.transaction() as tx:  # a project made before: version 0 with DuckDB foreign keys
            tx.execute("UPDATE _buttress.versions SET spec = '{}', hash = ? WHERE number = 0", [_old_hash()])
        rt.close()
        rt = Runtime.open(tmp_path / "old.duckdb")
        assert rt.current[1].checked_by == "duckdb"
        seeded(rt)
        assert code(lambda: rt.run_action("delete_expense", {"id": 1})) == "action.constraint_violated"
        deploy(rt, [{"op": "set_checked_by", "by": "buttress"}])
        assert rt.check_drift() == []
        rt.run_action("delete_expense", {"id": 1})
        assert count(rt, "select count(*) from share") == 1
        rt.rollback()
        assert rt.current[1].checked_by == "duckdb" and rt.check_drift() == []
        assert "FOREIGN KEY" in constraint_kinds(rt, "share")
        assert count(rt, "select count(*) from share") == 1  # the data is what it was
    finally:
        rt.close()


def _old_hash() -> str:
    from runtime.schema.spec import AppSpec

    return AppSpec().hash()


# ---------------------------------------------------------------- property: never dangling, never wrong

STEP = st.one_of(
    st.tuples(st.just("add_expense"), st.just(0)),
    st.tuples(st.just("add_share"), st.integers(0, 6)),
    st.tuples(st.just("delete_only_expense"), st.integers(0, 6)),
    st.tuples(st.just("move_share"), st.integers(0, 6)),
    st.tuples(st.just("delete_expense"), st.integers(0, 6)),
)


@pytest.mark.parametrize("on_delete", ["restrict", "cascade", "set_null"])
@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=20, max_size=20), picks=st.randoms(use_true_random=False))
def test_random_mutations_never_leave_a_dangling_reference_nor_refuse_a_valid_one(
    on_delete: str, steps: list[tuple[str, int]], picks: Any
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        rt = Runtime.open(Path(directory) / "app.duckdb", audit_reads=False)
        try:
            deploy(rt, expense_app(on_delete))
            expenses: set[int] = set()
            shares: dict[int, int | None] = {}
            next_id = 1
            for name, target in steps:
                if name == "add_expense":
                    rt.run_action(name, {"id": next_id, "amount": 1})
                    expenses.add(next_id)
                    next_id += 1
                    continue
                if name == "add_share":
                    valid = target in expenses
                    outcome = attempt(rt, name, {"id": next_id, "expense_id": target})
                    if valid:
                        shares[next_id] = target
                    next_id += 1
                elif name == "move_share":
                    if not shares:
                        continue
                    share = picks.choice(sorted(shares))
                    valid = target in expenses
                    outcome = attempt(rt, name, {"id": share, "expense_id": target})
                    if valid:
                        shares[share] = target
                else:  # delete_only_expense / delete_expense (children first, then the parent)
                    children = [s for s, e in shares.items() if e == target]
                    cleared = name == "delete_expense"
                    valid = cleared or on_delete != "restrict" or not children
                    outcome = attempt(rt, name, {"id": target})
                    if valid:
                        expenses.discard(target)
                        for child in children:
                            if cleared or on_delete == "cascade":
                                del shares[child]
                            else:
                                shares[child] = None
                assert outcome == ("ok" if valid else "action.constraint_violated"), (name, target, outcome)
                assert {r[0] for r in rt.query("select id from expense").rows} == expenses
                assert {r[0]: r[1] for r in rt.query("select id, expense_id from share").rows} == shares
                dangling = rt.query(
                    "select s.id from share s where s.expense_id is not null "
                    "and not exists (select 1 from expense e where e.id = s.expense_id)"
                )
                assert dangling.rows == []
        finally:
            rt.close()


def attempt(rt: Runtime, name: str, args: dict[str, Any]) -> str:
    try:
        rt.run_action(name, args)
    except ButtressError as error:
        return str(error.code)
    return "ok"
