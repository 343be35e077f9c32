"""docs/ui.md stays true: it names every page, every operator act, the commands that open the control
room, and the audit operation of every page."""

from __future__ import annotations

import re
from pathlib import Path

from mcp_server.ui.pages import ACTS, PAGES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "ui.md").read_text(encoding="utf-8")
OPERATIONS = (
    "overview",
    "version_page",
    "diff_versions",
    "proposal_page",
    "read_proposal",
    "list_approvals",
    "audit_page",
    "browse_data",
    "read_row",
    "export_data",
    "query",
    "search_runs",
    "workflow_summary",
    "run_history",
    "list_messages",
    "list_effects",
)


def test_the_guide_names_every_page_and_act() -> None:
    missing = [f"page {p.title}" for p in PAGES if f"**{p.title}**" not in DOC]
    missing += [f"act {name}" for name in ACTS if f"`{name}`" not in DOC]
    assert missing == []


def test_the_guide_shows_how_to_open_it_and_what_each_page_writes_in_the_audit_log() -> None:
    for text in ("buttress ui --project", "--port 0", "buttress ui --login", "buttress serve --http --ui"):
        assert text in DOC, text
    assert [op for op in OPERATIONS if f"`{op}`" not in DOC] == []


def test_every_read_a_page_makes_is_one_the_audit_can_hide_as_the_operators_own() -> None:
    from runtime.store.audit_view import OPERATOR_READS

    assert [op for op in OPERATIONS if op not in OPERATOR_READS] == []


def test_the_guide_shows_each_screenshot_it_names() -> None:
    folder = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    named = re.findall(r"\(screenshots/([a-z-]+\.png)\)", DOC)
    assert len(named) >= 10
    assert [shot for shot in named if not (folder / shot).is_file()] == []
