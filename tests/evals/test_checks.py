"""Checks judge the audit log, not the agent's account: the rules on synthetic audit rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcp_server.evals.checks import Evidence, evaluate, operation_of, usage
from mcp_server.evals.scenario import AuditCheck, CallsCheck, ProviderCheck
from runtime.results import AuditEntry, VerifyResult
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
