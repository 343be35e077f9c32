"""Deploy refusals, drift, finalize and the stored dry-run report."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import open_runtime
from tests.runtime.conftest import deploy, state

DROP_AUTHOR = [{"op": "drop_field", "entity": "memo", "field": "author"}]


def code_of(call: object) -> str:
    with pytest.raises(ButtressError) as caught:
        call()  # type: ignore[operator]
    return str(caught.value.code)


def test_a_proposal_never_dry_run_is_refused(app: Runtime) -> None:
    proposal = app.propose(DROP_AUTHOR)
    assert code_of(lambda: app.deploy(proposal.proposal_id)) == "deploy.not_dry_run"


def test_a_proposal_on_an_older_base_is_refused(app: Runtime) -> None:
    stale = app.propose(DROP_AUTHOR)
    app.dry_run(stale.proposal_id)
    deploy(app, [{"op": "add_view", "view": {"name": "v", "sql": "select id from memo"}}])
    assert code_of(lambda: app.deploy(stale.proposal_id)) == "plan.stale_base"
    assert code_of(lambda: app.dry_run(stale.proposal_id)) == "plan.stale_base"
    assert code_of(lambda: app.propose(DROP_AUTHOR, base_version=1)) == "plan.stale_base"


def test_a_failed_dry_run_blocks_deploy_and_reports_the_rows(app: Runtime) -> None:
    proposal = app.propose([{"op": "add_unique", "entity": "memo", "columns": ["flagged"]}])
    report = app.dry_run(proposal.proposal_id)
    assert not report.passed
    assert report.error is not None and report.error["code"] == "deploy.dry_run_failed"
    assert report.error["details"]["rows"]
    assert code_of(lambda: app.deploy(proposal.proposal_id)) == "deploy.dry_run_failed"


def test_dry_run_reports_values_that_would_be_lost(app: Runtime) -> None:
    proposal = app.propose(DROP_AUTHOR)
    report = app.dry_run(proposal.proposal_id)
    assert report.passed
    loss = report.steps[0].losses[0]
    assert (loss.code, loss.count) == ("data.drop_field", 2)
    assert {r["author"] for r in loss.sample} == {"ann", "bob"}
    assert [c.name for c in report.checks] == ["catalog", "views", "invariants", "actions"]


def test_deploy_rechecks_invariants_on_data_that_moved_since_the_dry_run(app: Runtime) -> None:
    proposal = app.propose(
        [
            {
                "op": "add_invariant",
                "invariant": {
                    "name": "short",
                    "description": "bodies are short",
                    "sql": "select id from memo where length(body) > 10",
                },
            }
        ]
    )
    assert app.dry_run(proposal.proposal_id).passed
    with app.engine.transaction() as tx:
        tx.execute("INSERT INTO memo (id, body) VALUES (50, 'a very long body indeed')")
    assert code_of(lambda: app.deploy(proposal.proposal_id)) == "invariant.violated"


def test_drift_is_reported_on_open_and_blocks_deploys(
    app: Runtime, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with app.engine.transaction() as tx:
        tx.execute("ALTER TABLE memo ADD COLUMN sneaky INTEGER")
    app.close()
    reopened = open_runtime(tmp_path, request)  # the same database, opened again
    try:
        assert any("sneaky" in line for line in reopened.drift)
        assert any("sneaky" in line for line in reopened.describe().drift)
        proposal = reopened.propose([{"op": "add_view", "view": {"name": "v", "sql": "select id from memo"}}])
        assert code_of(lambda: reopened.dry_run(proposal.proposal_id)) == "catalog.drift"
    finally:
        reopened.close()


def test_finalize_discards_retained_data_and_then_rollback_is_refused(app: Runtime) -> None:
    version = deploy(app, DROP_AUTHOR)
    result = app.finalize(before_version=version + 1)
    assert result.finalized_tables
    before = state(app)
    assert code_of(lambda: app.rollback()) == "rollback.finalized"
    assert state(app) == before


def test_rolling_back_version_zero_is_refused(rt: Runtime) -> None:
    assert code_of(lambda: rt.rollback()) == "rollback.nothing_to_roll_back"


def test_proposals_are_immutable_and_their_status_is_derived(app: Runtime) -> None:
    proposal = app.propose(DROP_AUTHOR, note="remove author")
    stored = app.proposal(proposal.proposal_id)
    assert stored["plan"].hash() == proposal.plan_hash
    assert [p.proposal_id for p in app.describe().pending_proposals] == [proposal.proposal_id]
    app.dry_run(proposal.proposal_id)
    app.deploy(proposal.proposal_id)
    assert app.proposal(proposal.proposal_id)["deployed_as"] == app.current[0]
    assert app.describe().pending_proposals == []
    assert code_of(lambda: app.deploy(proposal.proposal_id)) == "deploy.already_applied"


def test_invalid_operations_get_precise_errors(app: Runtime) -> None:
    with pytest.raises(ButtressError) as caught:
        app.propose([{"op": "drop_field", "entity": "memo", "field": "nope"}])
    assert caught.value.code == "spec.invalid"
    assert caught.value.details["path"] == "operations[0]"
    with pytest.raises(ButtressError) as caught:
        app.propose([{"op": "explode"}])
    assert caught.value.code == "spec.invalid"
    with pytest.raises(ButtressError) as caught:
        app.propose([{"op": "add_view", "view": {"name": "v", "sql": "select * from _buttress.audit"}}])
    assert caught.value.code == "sql.forbidden"
