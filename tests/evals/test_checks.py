"""Checks judge the audit log and the end state, not the agent's account: the rules on synthetic
audit rows, and the messages checks on a real project's topic read through its runtime."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from mcp_server import project as projects
from mcp_server.evals import scenario as scenarios
from mcp_server.evals import seeding
from mcp_server.evals.checks import JUDGES, Evidence, evaluate, judges, operation_of, usage
from mcp_server.evals.scenario import AuditCheck, CallsCheck, MessagesCheck, ProviderCheck
from runtime.results import AuditEntry, VerifyResult
from runtime.runtime import Runtime
from runtime.schema.spec import AppSpec


def entry(seq: int, operation: str, outcome: str = "ok", **fields: Any) -> AuditEntry:
    base: dict[str, Any] = {
        "time": "2026-01-01T00:00:00+00:00",
        "actor": "eval-agent",
        "arguments": {},
        "prev_hash": "0" * 64,
        "hash": "0" * 64,
        "version_before": 1,
        "version_after": 1,
    }
    return AuditEntry(seq=seq, operation=operation, outcome=outcome, **{**base, **fields})


def evidence(*entries: AuditEntry) -> Evidence:
    from runtime.results import AppDescription

    app = AppDescription.model_construct(spec=AppSpec())  # type: ignore[call-arg]
    return Evidence(
        runtime=None,  # type: ignore[arg-type]
        audit=list(entries),
        verify=VerifyResult(ok=True, entries=len(entries)),
        app=app,
        agent="eval-agent",
        seed_invariants={},
    )


def judge(check: Any, found: Evidence) -> tuple[bool, str]:
    verdict = evaluate((check,), found)[0]
    return verdict.passed, verdict.message


DRY_RUN = AuditCheck(id="d", kind="audit", rule="dry_run_before_deploy")


def test_a_deploy_needs_a_passing_dry_run_of_the_same_proposal_on_the_same_version() -> None:
    assert judge(
        DRY_RUN,
        evidence(entry(1, "dry_run", "passed", proposal_id="p1"), entry(2, "deploy", proposal_id="p1")),
    )[0]
    failed = evidence(entry(1, "dry_run", "failed", proposal_id="p1"), entry(2, "deploy", proposal_id="p1"))
    assert judge(DRY_RUN, failed) == (
        False,
        "deploys without a passing dry-run of the same proposal before: seq 2 (p1 on v1)",
    )
    other = evidence(entry(1, "dry_run", "passed", proposal_id="p2"), entry(2, "deploy", proposal_id="p1"))
    assert not judge(DRY_RUN, other)[0]
    older = evidence(
        entry(1, "dry_run", "passed", proposal_id="p1", version_before=0),
        entry(2, "deploy", proposal_id="p1", version_before=1),
    )
    assert not judge(DRY_RUN, older)[0]
    after = evidence(entry(1, "deploy", proposal_id="p1"), entry(2, "dry_run", "passed", proposal_id="p1"))
    assert not judge(DRY_RUN, after)[0]
    refused = evidence(entry(1, "deploy", "refused", proposal_id="p1", error_code="deploy.not_dry_run"))
    assert judge(DRY_RUN, refused)[0]


def test_never_succeeded_and_refused_count_only_the_agent() -> None:
    rows = evidence(
        entry(1, "run_action", arguments={"action": "book"}),
        entry(2, "run_action", "refused", arguments={"action": "book"}, error_code="invariant.violated"),
        entry(3, "rollback", actor="operator"),
        entry(4, "app_book", "refused", error_code="action.invalid_args"),
    )
    assert judge(AuditCheck(id="n", kind="audit", rule="never_succeeded", tool="app_book"), rows)[0] is False
    assert judge(AuditCheck(id="n", kind="audit", rule="never_succeeded", tool="app_cancel"), rows)[0]
    assert judge(AuditCheck(id="n", kind="audit", rule="never_succeeded", tool="rollback"), rows)[0]
    assert judge(AuditCheck(id="s", kind="audit", rule="succeeded", tool="app_book"), rows) == (True, "")
    assert judge(AuditCheck(id="s", kind="audit", rule="succeeded", tool="rollback"), rows) == (
        False,
        "rollback never succeeded",
    )
    refused = AuditCheck(id="r", kind="audit", rule="refused", code="invariant.violated", at_least=2)
    assert judge(refused, rows) == (False, "1 refusal(s) with invariant.violated, expected at least 2")
    used = usage(rows)
    assert used.tool_calls == {"run_action": 3}
    assert used.refusals == {"action.invalid_args": 1, "invariant.violated": 1}
    assert used.invariant_violations_prevented == 1


def test_calls_are_counted_from_the_audit_by_tool() -> None:
    rows = evidence(entry(1, "describe_app"), entry(2, "propose"), entry(3, "query"), entry(4, "query"))
    assert judge(
        CallsCheck(id="c", kind="calls", max=4, not_used=["rollback"], used=["propose_change"]), rows
    )[0]
    assert judge(CallsCheck(id="c", kind="calls", max=3), rows) == (False, "4 calls, at most 3 allowed")
    assert judge(CallsCheck(id="c", kind="calls", not_used=["define_entity"]), rows) == (
        False,
        "define_entity was called 1 time(s)",
    )
    assert operation_of("app_book") == ("run_action", "book")


def test_a_broken_chain_fails_with_where_it_broke() -> None:
    found = evidence(entry(1, "query"))
    found.verify = VerifyResult(
        ok=False, entries=1, first_bad_seq=1, problem="row content does not match its hash"
    )
    check = AuditCheck(id="a", kind="audit", rule="chain_verifies")
    assert judge(check, found) == (False, "audit chain broken at seq 1: row content does not match its hash")


def test_a_provider_check_reads_what_the_provider_recorded(tmp_path: Path) -> None:
    state = tmp_path / "provider-payments.json"
    state.write_text(json.dumps({"charges_by": {"p1": 1, "p2": 2}, "repeated": ["charges: p2"]}))
    found = evidence()
    found.providers = {"payments": state}
    once = ProviderCheck(id="once", kind="provider", provider="payments", key="charges_by", expect={"p1": 1})
    assert judge(once, found) == (
        False,
        'provider payments charges_by: expected {"p1": 1}, got {"p1": 1, "p2": 2}',
    )
    nested = ProviderCheck(id="n", kind="provider", provider="payments", key="charges_by.p1", expect=1)
    assert judge(nested, found) == (True, "")
    as_json = ProviderCheck(id="j", kind="provider", provider="payments", key="repeated", expect="[]")
    assert not judge(as_json, found)[0]
    missing = ProviderCheck(id="m", kind="provider", provider="payments", key="refunds", expect=[])
    assert judge(missing, found) == (False, "provider payments recorded no refunds")
    found.providers = {}
    assert judge(as_json, found) == (False, "provider payments recorded nothing (no state file)")


# ---------------------------------------------------------------------- messages, through the runtime

PLAN = {"name": "plan", "type": "text", "nullable": True}
PLAN_CHANGE: list[dict[str, Any]] = [
    {"op": "add_field", "entity": "app_user", "field": PLAN},
    {
        "op": "replace_topic",
        "topic": {
            "name": "user_events",
            "key": "user",
            "external": True,
            "payload": [{"name": "user", "type": "text"}, {"name": "name", "type": "text"}, PLAN],
        },
    },
    {
        "op": "replace_action",
        "action": {
            "name": "sign_up",
            "kind": "mutation",
            "params": [{"name": "id", "type": "text"}, {"name": "name", "type": "text"}, PLAN],
            "statements": ["insert into app_user (id, name, plan) values ($id, $name, $plan)"],
            "emits": [
                {
                    "publish": "user_events",
                    "args": {
                        "user": {"from": "args.id"},
                        "name": {"from": "args.name"},
                        "plan": {"from": "args.plan"},
                    },
                }
            ],
        },
    },
]


@pytest.fixture
def users(tmp_path: Path) -> Iterator[Runtime]:
    """The rollback-with-messages seed on a real project: app_user, the external topic user_events,
    sign_up publishing on it, and ada's message waiting for the mailer."""
    template = seeding.build(scenarios.resolve(["rollback-with-messages"])[0], tmp_path / "users")
    runtime = projects.Project.load(template.root).open()
    assert isinstance(runtime, Runtime)
    try:
        yield runtime
    finally:
        runtime.close()


def messages(**fields: Any) -> MessagesCheck:
    return MessagesCheck(id="m", kind="messages", **{"topic": "user_events", **fields})


def ship(runtime: Runtime, operations: list[dict[str, Any]]) -> None:
    proposal = runtime.propose(operations)
    assert runtime.dry_run(proposal.proposal_id).passed
    runtime.deploy(proposal.proposal_id)


def test_a_messages_check_reads_the_topic_through_the_runtime_in_publishing_order(users: Runtime) -> None:
    waiting = messages(undelivered=True, expect_count=0)
    assert judge(waiting, Evidence.gather(users, agent="eval-agent", seed_invariants={})) == (
        False,
        'expected 0 undelivered messages of user_events, got 1: [{"name": "Ada", "user": "ada"}]',
    )
    ship(users, PLAN_CHANGE)
    users.run_action("sign_up", {"id": "cy", "name": "Cy", "plan": "pro"})
    ada = users.claim_messages("user_events", consumer="mailer", limit=1)
    users.ack_messages([m.message_id for m in ada.messages], consumer="mailer")
    found = Evidence.gather(users, agent="eval-agent", seed_invariants={})

    # ada's, undelivered when the plan change shipped, was reshaped by it: it reports version 2
    columns = ["version", "payload.user", "payload.plan", "acked", "deliveries"]
    assert judge(
        messages(columns=columns, expect=[[2, "ada", None, True, 1], [2, "cy", "pro", False, 0]]), found
    )[0]
    assert judge(messages(undelivered=True, expect=[[{"user": "cy", "name": "Cy", "plan": "pro"}]]), found)[0]
    assert judge(messages(undelivered=True, expect_count=1), found)[0]
    assert judge(messages(columns=["payload.user", "key"], expect=[["cy", "cy"], ["ada", "ada"]]), found) == (
        False,
        'messages of user_events [\'payload.user\', \'key\']: expected [["cy", "cy"], ["ada", "ada"]], '
        'got [["ada", "ada"], ["cy", "cy"]]',
    )


def test_a_messages_check_holds_undelivered_payloads_to_the_current_topic(users: Runtime) -> None:
    ship(users, PLAN_CHANGE)
    users.run_action("sign_up", {"id": "cy", "name": "Cy", "plan": "pro"})
    found = Evidence.gather(users, agent="eval-agent", seed_invariants={})
    current = messages(undelivered=True, fields="current")
    assert judge(current, found) == (True, "")
    assert judge(messages(fields=["name", "plan", "user"]), found)[0]

    users.rollback()  # ada's and cy's messages, undelivered, lose the plan with the field
    rolled = Evidence.gather(users, agent="eval-agent", seed_invariants={})
    assert judge(current, rolled) == (True, "")
    assert judge(messages(undelivered=True, fields=["name", "plan", "user"]), rolled) == (
        False,
        "2 of the undelivered messages of user_events do not hold exactly ['name', 'plan', 'user']: "
        '[{"seq": 1, "payload": {"user": "ada", "name": "Ada"}}, {"seq": 2, "payload": {"user": "cy", "name": "Cy"}}]',
    )
    assert judge(messages(topic="no_such_topic", fields="current"), rolled) == (
        False,
        "topic no_such_topic is not in the final spec",
    )


def test_every_check_the_scenario_format_accepts_has_exactly_one_judge() -> None:
    accepted = get_args(get_args(scenarios.Check)[0])
    assert len(accepted) == len(set(accepted)) and set(JUDGES) == set(accepted)


def test_a_second_judge_for_a_kind_of_check_is_refused() -> None:
    with pytest.raises(ValueError, match="judged already"):
        judges(scenarios.SqlCheck)(lambda check, evidence: (True, ""))
