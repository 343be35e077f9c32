"""The operator's decisions on approval requests, at the runtime: an approval lets the agent's retry
through once, a refusal is what the retry hears, both are audited as the operator, and a request that
was used, refused or has expired can no longer be decided."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_server.channel import ChannelServer, RemoteRuntime, socket_path
from runtime.boundary import approvals
from runtime.boundary.policy import Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime

MEMO = {
    "op": "add_entity",
    "entity": {
        "name": "memo",
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "body", "type": "text"},
            {"name": "author", "type": "text", "nullable": True},
        ],
    },
}
DROP_AUTHOR = [{"op": "drop_field", "entity": "memo", "field": "author"}]
DROP_MEMO = [{"op": "drop_entity", "entity": "memo"}]


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose agents' high-hazard deploys wait for the operator, with a few memos."""
    rt = Runtime.open(
        tmp_path / "app.duckdb", policy=Policy.model_validate({"approvals": {"severity": "high"}})
    )
    proposal = rt.propose([MEMO])
    rt.dry_run(proposal.proposal_id)
    rt.deploy(proposal.proposal_id)
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO memo VALUES (1, 'hello', 'ada'), (2, 'again', NULL), (3, 'bye', 'grace')")
    try:
        yield rt
    finally:
        rt.close()


def waiting(rt: Runtime, operations: list[dict[str, Any]]) -> tuple[str, str]:
    """An agent proposes and dry-runs ``operations``; its deploy waits. Returns (proposal, request)."""
    proposal = rt.propose(operations, actor="agent")
    assert rt.dry_run(proposal.proposal_id, actor="agent").passed
    with pytest.raises(ButtressError) as caught:
        rt.deploy(proposal.proposal_id, actor="agent")
    assert caught.value.code == "deploy.needs_approval"
    return proposal.proposal_id, str(caught.value.details["approval_request"])


def audit_rows(rt: Runtime, operation: str) -> list[tuple[str, str, str | None]]:
    rt.flush_reads()
    return [(e.actor, e.outcome, e.error_code) for e in rt.read_audit(limit=1000) if e.operation == operation]


def test_an_approval_lets_the_agents_retry_through_once_and_is_audited_as_the_operator(
    guarded: Runtime,
) -> None:
    proposal_id, request_id = waiting(guarded, DROP_AUTHOR)
    listed = guarded.approval_requests()
    assert [(r.request_id, r.status) for r in listed] == [(request_id, "pending")]
    assert [loss.count for loss in listed[0].losses] == [2]  # two memos have an author
    assert {row["author"] for row in listed[0].losses[0].sample} == {"ada", "grace"}

    decided = guarded.approve_request(request_id)
    assert (decided.status, decided.decided_by) == ("approved", "operator")
    assert guarded.deploy(proposal_id, actor="agent").version == 2
    assert guarded.approval_requests()[0].status == "used"
    assert audit_rows(guarded, "approve") == [("operator", "ok", None)]


def test_a_refusal_is_what_the_agents_retry_hears_and_a_new_plan_asks_again(guarded: Runtime) -> None:
    proposal_id, request_id = waiting(guarded, DROP_MEMO)
    refused = guarded.refuse_request(request_id, reason="memos are still read by the export job")
    assert (refused.status, refused.reason) == ("refused", "memos are still read by the export job")

    with pytest.raises(ButtressError) as caught:
        guarded.deploy(proposal_id, actor="agent")
    assert caught.value.code == "policy.denied"
    assert "memos are still read by the export job" in caught.value.message
    assert caught.value.details["approval_request"] == request_id
    assert guarded.current[0] == 1

    _, again = waiting(guarded, DROP_MEMO)  # the same change proposed again: a new plan, a new question
    assert again != request_id
    assert audit_rows(guarded, "refuse") == [("operator", "ok", None)]
    assert ("agent", "refused", "policy.denied") in audit_rows(guarded, "deploy")


def test_refusing_an_approved_request_revokes_the_approval(guarded: Runtime) -> None:
    proposal_id, request_id = waiting(guarded, DROP_AUTHOR)
    guarded.approve_request(request_id)
    guarded.refuse_request(request_id, reason="changed my mind")
    with pytest.raises(ButtressError) as caught:
        guarded.deploy(proposal_id, actor="agent")
    assert caught.value.code == "policy.denied"
    assert guarded.current[0] == 1


@pytest.mark.parametrize("state", ["used", "refused", "expired"])
def test_a_used_refused_or_expired_request_can_no_longer_be_decided(guarded: Runtime, state: str) -> None:
    proposal_id, request_id = waiting(guarded, DROP_AUTHOR)
    if state == "used":
        guarded.approve_request(request_id)
        guarded.deploy(proposal_id, actor="agent")
    elif state == "refused":
        guarded.refuse_request(request_id)
    else:
        past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).isoformat()
        with guarded.engine.transaction() as tx:
            tx.execute("UPDATE _buttress.approvals SET expires_at = ? WHERE id = ?", [past, request_id])
    for decide in (guarded.approve_request, guarded.refuse_request):
        with pytest.raises(ButtressError) as caught:
            decide(request_id)
        assert caught.value.code == "approval.invalid"
        assert caught.value.details["status"] == state
    assert ("operator", "refused", "approval.invalid") in audit_rows(guarded, "approve")


def test_only_the_operator_decides_and_an_agents_attempt_is_audited(guarded: Runtime) -> None:
    _, request_id = waiting(guarded, DROP_AUTHOR)
    for decide in (guarded.approve_request, guarded.refuse_request):
        with pytest.raises(ButtressError) as caught:
            decide(request_id, actor="agent")
        assert caught.value.code == "policy.denied"
    assert guarded.approval_requests()[0].status == "pending"
    assert audit_rows(guarded, "approve") == [("agent", "refused", "policy.denied")]
    with pytest.raises(ButtressError) as caught:
        guarded.approve_request("r00000000")
    assert caught.value.code == "not_found"


def test_an_unsigned_refusal_file_is_ignored(guarded: Runtime) -> None:
    proposal_id, request_id = waiting(guarded, DROP_AUTHOR)
    folder = approvals.folder(guarded.engine.path) / "refusals"
    folder.mkdir(parents=True)
    (folder / f"{request_id}.json").write_text(
        json.dumps({"id": request_id, "reason": "x", "signature": "0" * 64})
    )
    assert guarded.approval_requests()[0].status == "pending"
    guarded.approve_request(request_id)
    assert guarded.deploy(proposal_id, actor="agent").version == 2


def test_decisions_travel_over_the_projects_socket(guarded: Runtime) -> None:
    channel = ChannelServer(guarded, socket_path(guarded.engine.path))
    try:
        remote = RemoteRuntime.attach(socket_path(guarded.engine.path))
        proposal_id, request_id = waiting(guarded, DROP_AUTHOR)
        assert [r.status for r in remote.approval_requests()] == ["pending"]
        assert remote.approve_request(request_id).status == "approved"
        assert remote.activity_head().pending_approvals == 0
        assert guarded.deploy(proposal_id, actor="agent").version == 2
    finally:
        channel.close()
