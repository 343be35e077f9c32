"""Run statuses are declared once: the sets partition them, the tools' filter lists them, and their SQL
is the same text whatever order a set iterates in."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from runtime.workflows import tables
from runtime.workflows.status import (
    ACTIVE,
    READY,
    RETRYABLE,
    RUN_FILTERS,
    SCHEDULABLE,
    TERMINAL,
    RunFilter,
    RunStatus,
    literal,
    status_in,
    status_not_in,
)


def test_every_run_is_either_active_or_terminal() -> None:
    assert set(RunStatus) == ACTIVE | TERMINAL
    assert not ACTIVE & TERMINAL
    assert READY < SCHEDULABLE < ACTIVE
    assert {RunStatus.BLOCKED} == ACTIVE - SCHEDULABLE
    assert {RunStatus.FAILED, RunStatus.BLOCKED} == RETRYABLE


def test_the_run_filter_is_active_then_every_status_in_order() -> None:
    assert ("active", *RunStatus) == RUN_FILTERS


def test_the_run_filter_keeps_its_json_schema() -> None:
    schema: dict[str, Any] = TypeAdapter(RunFilter | None).json_schema()
    assert schema == {
        "anyOf": [
            {
                "enum": [
                    "active",
                    "running",
                    "waiting",
                    "compensating",
                    "blocked",
                    "completed",
                    "compensated",
                    "failed",
                    "cancelled",
                ],
                "type": "string",
            },
            {"type": "null"},
        ]
    }


def test_a_status_set_renders_as_sql_in_declaration_order() -> None:
    assert status_in(SCHEDULABLE) == "status IN ('running', 'waiting', 'compensating')"
    assert (
        status_in({RunStatus.WAITING, RunStatus.RUNNING}, "r.status") == "r.status IN ('running', 'waiting')"
    )
    assert status_not_in(TERMINAL) == "status NOT IN ('completed', 'compensated', 'failed', 'cancelled')"
    assert literal(RunStatus.WAITING) == "'waiting'"


def test_the_in_flight_probe_keeps_its_text() -> None:
    # Plans store this SQL: the same plan must keep the same text.
    assert tables.in_flight("workflow = 'x'") == (
        "SELECT run_id, workflow, version, status, step FROM _buttress.runs WHERE status NOT IN "
        "('completed', 'compensated', 'failed', 'cancelled') AND (workflow = 'x')"
    )
