"""What the control room reads, at the runtime: the audit log filtered, paged and counted in the
database; versions and proposals a page at a time; each page one audited read by the operator; the
polled head not audited; and every read available over the project's socket too."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_server.channel import RESULTS, ChannelServer, RemoteRuntime, socket_path
from runtime.api import RuntimeAPI
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from runtime.store import audit_view

CONTROL_ROOM = (
    "overview",
    "workflow_summary",
    "version_page",
    "compare_versions",
    "proposal_page",
    "proposal_detail",
    "approval_requests",
    "approve_request",
    "refuse_request",
    "audit_page",
    "activity_head",
    "search_runs",
    "run_history",
    "browse_data",
    "read_row",
    "export_data",
)
NOTE = {
    "op": "add_entity",
    "entity": {
        "name": "note",
        "primary_key": ["id"],
        "fields": [{"name": "id", "type": "integer"}, {"name": "body", "type": "text", "nullable": True}],
    },
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime that audits the operator's reads, as when `buttress` serves a project."""
    rt = Runtime.open(tmp_path / "app.duckdb", audit_operator_reads=True)
    try:
        yield rt
    finally:
        rt.close()


def append(rt: Runtime, rows: list[dict[str, Any]]) -> None:
    """Audit rows written straight into the log (chained on from its head), for counting tests."""
    rt.flush_reads()
    with rt.engine.transaction() as tx:
        for row in rows:
            rt.audit.append(tx, **row)


def entry(
    time: str, actor: str = "agent", outcome: str = "ok", code: str | None = None, op: str = "query"
) -> dict[str, Any]:
    return {
        "actor": actor,
        "operation": op,
        "arguments": {},
        "outcome": outcome,
        "error_code": code,
        "time": time,
    }


def test_the_audit_is_filtered_and_paged_in_the_database_with_counts_to_filter_on(served: Runtime) -> None:
    rows = [
        entry(
            f"2026-01-01T00:00:{i:02d}+00:00",
            outcome="refused" if i % 3 == 0 else "ok",
            code="policy.denied" if i % 3 == 0 else None,
            actor="a" if i % 2 else "b",
        )
        for i in range(30)
    ]
    append(served, rows)
    first = served.audit_page(outcome="refused", limit=4)
    assert first.matching == 10 and first.total == 30
    assert all(e.outcome == "refused" for e in first.entries)
    assert [e.seq for e in first.entries] == [28, 25, 22, 19]
    second = served.audit_page(outcome="refused", limit=4, before_seq=first.next_before)
    assert [e.seq for e in second.entries] == [16, 13, 10, 7]
    last = served.audit_page(outcome="refused", limit=4, before_seq=second.next_before)
    assert [e.seq for e in last.entries] == [4, 1] and last.next_before is None
    both = served.audit_page(agent="a", code="policy.denied", limit=50)
    assert {(e.actor, e.error_code) for e in both.entries} == {("a", "policy.denied")} and both.matching == 5
    facets = first.facets
    assert [(f.value, f.count) for f in facets.outcomes] == [("ok", 20), ("refused", 10)]
    assert [(f.value, f.count) for f in facets.codes] == [("policy.denied", 10)]
    assert {f.value for f in facets.actors} == {"a", "b"}


@pytest.mark.parametrize(
    ("times", "granularity", "labels"),
    [
        (
            ["2026-01-01T10:00:05", "2026-01-01T10:02:59"],
            "minute",
            ["2026-01-01T10:00", "2026-01-01T10:01", "2026-01-01T10:02"],
        ),
        (
            ["2026-01-01T10:00:05", "2026-01-01T13:30:00"],
            "hour",
            ["2026-01-01T10", "2026-01-01T11", "2026-01-01T12", "2026-01-01T13"],
        ),
        (
            ["2026-01-01T10:00:05", "2026-01-04T09:00:00"],
            "day",
            ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"],
        ),
    ],
)
def test_agent_calls_are_counted_over_consecutive_buckets_sized_to_their_span(
    served: Runtime, times: list[str], granularity: str, labels: list[str]
) -> None:
    append(
        served,
        [entry(t + "+00:00") for t in times]
        + [entry(times[-1] + "+00:00", outcome="refused", code="sql.forbidden")],
    )
    append(
        served,
        [entry("2020-01-01T00:00:00+00:00", actor="operator", outcome="refused", code="approval.invalid")],
    )  # the operator's own rows do not count
    with served.engine.snapshot() as reader:
        stats = audit_view.audit_stats(reader, operator="operator")
    assert stats.granularity == granularity
    assert [b.start for b in stats.buckets] == labels
    assert (stats.buckets[0].allowed, stats.buckets[-1].allowed, stats.buckets[-1].refused) == (1, 1, 1)
    assert sum(b.allowed + b.refused for b in stats.buckets[1:-1]) == 0
    assert [(f.value, f.count) for f in stats.refusals_by_code] == [("sql.forbidden", 1)]


def test_a_long_history_is_shown_as_its_newest_sixty_days(served: Runtime) -> None:
    append(served, [entry("2025-01-01T00:00:00+00:00"), entry("2025-12-31T12:00:00+00:00")])
    with served.engine.snapshot() as reader:
        stats = audit_view.audit_stats(reader, operator="operator")
    assert stats.granularity == "day" and len(stats.buckets) == audit_view.MAX_BUCKETS
    assert stats.buckets[-1].start == "2025-12-31" and stats.buckets[-1].allowed == 1


def test_versions_and_proposals_come_a_page_at_a_time(served: Runtime) -> None:
    for index in range(5):
        ops = (
            [NOTE]
            if index == 0
            else [
                {
                    "op": "add_field",
                    "entity": "note",
                    "field": {"name": f"f{index}", "type": "integer", "nullable": True},
                }
            ]
        )
        proposal = served.propose(ops, note=f"change {index}")
        served.dry_run(proposal.proposal_id)
        served.deploy(proposal.proposal_id)
    served.propose([{"op": "drop_entity", "entity": "note"}], note="pending one")
    page = served.version_page(limit=2)
    assert [v.number for v in page.versions] == [5, 4] and page.total == 6 and page.next_before == 4
    assert [v.number for v in served.version_page(before=2, limit=2).versions] == [1, 0]
    proposals = served.proposal_page(limit=4)
    assert [p.proposal_id for p in proposals.proposals] == [
        "p6",
        "p5",
        "p4",
        "p3",
    ] and proposals.matching == 6
    assert [
        p.proposal_id for p in served.proposal_page(before_seq=proposals.next_before, limit=4).proposals
    ] == ["p2", "p1"]
    pending = served.proposal_page(status="pending")
    assert [(p.proposal_id, p.hazards) for p in pending.proposals] == [("p6", ["data.drop_entity"])]
    detail = served.proposal_detail("p2")
    assert detail.summary.status == "deployed" and detail.summary.deployed_as == 2
    assert detail.dry_run is not None and detail.dry_run.passed
    assert detail.steps[0].sql and detail.operations[0]["op"] == "add_field"
    compared = served.compare_versions(1, 3)
    assert [c["name"] for c in compared.diff.changes] == ["note.f1", "note.f2"]
    assert compared.before.number == 1 and compared.after_spec.entity("note") is not None
    with pytest.raises(ButtressError) as caught:
        served.proposal_detail("p99")
    assert caught.value.code == "not_found"


def test_each_page_is_one_audited_read_by_the_operator_and_the_polled_head_is_not(served: Runtime) -> None:
    served.flush_reads()
    before = served.audit_page(limit=1).total
    served.overview()
    served.version_page()
    served.proposal_page()
    served.approval_requests()
    for _ in range(5):
        head = served.activity_head()
    served.flush_reads()
    entries = served.read_audit(after_seq=before, limit=100)
    assert [(e.actor, e.operation) for e in entries] == [
        ("operator", "audit_page"),
        ("operator", "overview"),
        ("operator", "version_page"),
        ("operator", "proposal_page"),
        ("operator", "list_approvals"),
    ]
    assert head.agent_seq == 0  # no agent has called yet: the operator's reads are not activity


def test_an_agent_cannot_read_the_control_room(tmp_path: Path) -> None:
    from runtime.boundary.policy import Policy

    rt = Runtime.open(
        tmp_path / "app.duckdb",
        policy=Policy.model_validate({"agents": {"bot": {"role": "reader"}}, "open_to_any_agent": False}),
    )
    try:
        assert rt.overview(actor="bot").version.number == 0  # a reader may read
        with pytest.raises(ButtressError) as caught:
            rt.activity_head(actor="stranger")
        assert caught.value.code == "policy.denied"
        rt.flush_reads()
        assert ("stranger", "activity_head", "refused") in {
            (e.actor, e.operation, e.outcome) for e in rt.read_audit()
        }
    finally:
        rt.close()


def test_every_control_room_read_is_part_of_the_api_and_carried_by_the_channel() -> None:
    for name in CONTROL_ROOM:
        assert name in RESULTS, name
        for cls in (Runtime, RemoteRuntime, RuntimeAPI):
            assert callable(getattr(cls, name, None)), (cls.__name__, name)
        runtime_parameters = list(inspect.signature(getattr(Runtime, name)).parameters)
        assert list(inspect.signature(getattr(RemoteRuntime, name)).parameters) == runtime_parameters, name


def test_the_control_room_reads_travel_over_the_projects_socket(served: Runtime) -> None:
    proposal = served.propose([NOTE])
    served.dry_run(proposal.proposal_id)
    served.deploy(proposal.proposal_id)
    channel = ChannelServer(served, socket_path(served.engine.path))
    try:
        remote = RemoteRuntime.attach(socket_path(served.engine.path))
        assert remote.overview().version.number == 1
        assert remote.version_page().total == 2
        assert remote.compare_versions(0, 1).diff.changes[0]["name"] == "note"
        assert remote.proposal_page().proposals[0].proposal_id == "p1"
        assert remote.proposal_detail("p1").summary.status == "deployed"
        assert remote.approval_requests() == []
        assert remote.audit_page(operation="deploy").entries[0].operation == "deploy"
        assert remote.activity_head().version == 1
        assert remote.workflow_summary().runs_by_status == []
    finally:
        channel.close()


def test_the_chain_stays_whole_after_the_control_room_reads(served: Runtime) -> None:
    served.overview()
    served.audit_page(outcome="refused")
    assert served.verify_audit().ok
