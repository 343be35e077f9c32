"""The operator policy at the runtime: protected entities, approvals bound to a plan, single use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.boundary import approvals
from runtime.boundary.policy import Capability, Policy, load, require
from runtime.boundary.policyfile import PolicyChange, PolicyFile
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.runtime.conftest import BASE_OPERATIONS, deploy, seed, state

DROP_AUTHOR = [{"op": "drop_field", "entity": "memo", "field": "author"}]


@pytest.fixture
def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("BUTTRESS_OPERATOR_KEY", str(tmp_path / "operator.key"))
    approvals.ensure_operator_key()
    policy = Policy.model_validate(
        {
            "protected": {"entities": ["customer"], "fields": ["memo.flagged"]},
            "approvals": {"severity": "high"},
        }
    )
    rt = Runtime.open(tmp_path / "app.duckdb", policy=policy)
    deploy(rt, BASE_OPERATIONS)
    seed(rt)
    yield rt
    rt.close()


def approve(rt: Runtime, request_id: str) -> None:
    folder = approvals.folder(rt.engine.path)
    request = json.loads((folder / "requests" / f"{request_id}.json").read_text())
    (folder / "approvals").mkdir(exist_ok=True)
    (folder / "approvals" / f"{request_id}.json").write_text(json.dumps(approvals.sign(request, "operator")))


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "drop_field", "entity": "customer", "field": "tier"}],
        [{"op": "rename_entity", "entity": "customer", "new_name": "client"}],
        [{"op": "alter_field", "entity": "memo", "field": "flagged", "default": True}],
        [
            {
                "op": "add_field",
                "entity": "customer",
                "field": {"name": "pw", "type": "text", "nullable": True},
            }
        ],
        [
            {
                "op": "add_action",
                "action": {"name": "wipe", "kind": "mutation", "statements": ["delete from customer"]},
            }
        ],
    ],
)
def test_proposals_touching_protected_entities_are_refused_and_audited(
    guarded: Runtime, ops: list[dict[str, object]]
) -> None:
    before = state(guarded)
    with pytest.raises(ButtressError) as caught:
        guarded.propose(ops, actor="agent")
    assert caught.value.code == "policy.protected"
    assert state(guarded) == before
    last = guarded.read_audit(limit=1)[0]
    assert (last.operation, last.outcome, last.error_code, last.actor) == (
        "propose",
        "refused",
        "policy.protected",
        "agent",
    )


def test_a_hazardous_deploy_waits_for_an_operator_approval_bound_to_its_plan(guarded: Runtime) -> None:
    first = guarded.propose(DROP_AUTHOR, actor="agent")
    guarded.dry_run(first.proposal_id, actor="agent")
    with pytest.raises(ButtressError) as caught:
        guarded.deploy(first.proposal_id, actor="agent")
    assert caught.value.code == "deploy.needs_approval"
    request_id = caught.value.details["approval_request"]
    approve(guarded, request_id)
    result = guarded.deploy(first.proposal_id, actor="agent")
    assert result.version == 2

    guarded.rollback()
    second = guarded.propose(DROP_AUTHOR, actor="agent")
    guarded.dry_run(second.proposal_id, actor="agent")
    with pytest.raises(ButtressError) as caught:  # the old approval is used and bound to another plan
        guarded.deploy(second.proposal_id, actor="agent")
    assert caught.value.code == "deploy.needs_approval"
    assert caught.value.details["approval_request"] != request_id


def test_a_forged_approval_is_ignored(guarded: Runtime) -> None:
    proposal = guarded.propose(DROP_AUTHOR, actor="agent")
    guarded.dry_run(proposal.proposal_id, actor="agent")
    with pytest.raises(ButtressError) as caught:
        guarded.deploy(proposal.proposal_id, actor="agent")
    request_id = caught.value.details["approval_request"]
    folder = approvals.folder(guarded.engine.path)
    (folder / "approvals").mkdir(exist_ok=True)
    forged = {"id": request_id, "approved_by": "agent", "signature": "0" * 64}
    (folder / "approvals" / f"{request_id}.json").write_text(json.dumps(forged))
    with pytest.raises(ButtressError) as caught:
        guarded.deploy(proposal.proposal_id, actor="agent")
    assert caught.value.code == "deploy.needs_approval"


def test_low_hazard_deploys_need_no_approval(guarded: Runtime) -> None:
    proposal = guarded.propose(
        [{"op": "alter_field", "entity": "memo", "field": "priority", "default": 4}], actor="agent"
    )
    guarded.dry_run(proposal.proposal_id, actor="agent")
    assert guarded.deploy(proposal.proposal_id, actor="agent").version == 2


def test_policy_file_grants_capabilities_by_role(tmp_path: Path) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text(
        '[agents.bot]\nrole = "reader"\n[agents.dev]\nrole = "developer"\ntoken_sha256 = "'
        + __import__("hashlib").sha256(b"s3cret").hexdigest()
        + '"\n'
    )
    policy = load(path)
    assert policy.may("bot", Capability.QUERY) and not policy.may("bot", Capability.DEPLOY)
    assert policy.may("dev", Capability.DEPLOY) and not policy.may("dev", Capability.FINALIZE)
    assert not policy.may("stranger", Capability.READ)
    assert policy.agent_for_token("s3cret") == "dev"
    assert policy.agent_for_token("wrong") is None
    needs = {"query": Capability.QUERY, "deploy": Capability.DEPLOY, "describe_app": Capability.READ}
    assert policy.tools_for("bot", ["query", "deploy", "describe_app", "unknown"], needs) == [
        "query",
        "describe_app",
    ]


def test_a_refusal_says_what_the_file_in_force_gives_the_agent_and_since_when(tmp_path: Path) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text('[agents.bot]\nrole = "reader"\n')
    policy = load(path)
    assert policy.origin is not None
    with pytest.raises(ButtressError) as refused:
        require(policy, "bot", Capability.DEPLOY, what="deploy")
    error = refused.value
    assert error.code == "policy.denied"
    assert error.message == (
        f"agent 'bot' may not deploy: buttress.toml as loaded at {policy.origin.clock} gives agent 'bot' "
        "role reader (read, query)"
    )
    assert "ask them to grant" not in error.hint and "re-read within a second" in error.hint
    assert error.details["capabilities"] == ["query", "read"]
    with pytest.raises(ButtressError) as stranger:
        require(policy, "stranger", Capability.READ, what="read")
    assert "does not name agent 'stranger'" in stranger.value.message


def test_a_policy_file_follows_its_file_and_keeps_the_policy_in_force_when_the_file_is_broken(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buttress.toml"
    path.write_text('[agents.bot]\nrole = "reader"\n')
    followed = PolicyFile(path, poll_s=0)
    heard: list[PolicyChange] = []
    followed.on_change(heard.append)
    first = followed.current()
    assert followed.refresh() is None  # unchanged
    path.write_text('[agents.bot]\nrole = "developer"\n[limits]\nmax_rows = 5\nthreads = 3\n')
    change = followed.refresh()
    assert change is not None and change.error is None and heard == [change]
    assert followed.current().may("bot", Capability.DEPLOY) and followed.current().limits.max_rows == 5
    assert followed.current().limits.threads is None  # the database's threads change at the next start
    assert followed.current().origin.restart_needed == (
        "threads: 3 in the file, None until the owner restarts",
    )  # type: ignore[union-attr]
    assert first.limits.max_rows == 1000  # the policy read before is never changed in place
    path.write_text("[agents.bot\n")
    broken = followed.refresh()
    assert broken is not None and broken.error is not None and broken.error.code == "config.invalid"
    assert followed.current().may("bot", Capability.DEPLOY)  # the policy in force stays
    assert "not valid TOML" in (followed.current().origin.problem or "")  # type: ignore[union-attr]
    assert broken.digest == hashlib.sha256(path.read_bytes()).hexdigest()
