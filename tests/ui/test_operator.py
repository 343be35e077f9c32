"""The control room as the operator's place to decide, on a project with a history (tests/ui/showcase.py):
requests and proposals in every state, runs in every state, a reference chain and a 100,000-row table.

The project is owned by this process (its runtime, served over the project's socket, with nothing
running in the background, so every state stays as built); the real ``buttress ui`` attaches to it
over the socket; the operator uses it from a headless Chromium and, for what a browser cannot see
(headers, downloads, refused posts), from an HTTP client. The runtime's own reads are checked first,
then the pages, then the acts (which change the project, so they come last and act on objects no
earlier test relies on). Screenshots go to ``$BUTTRESS_SCREENSHOTS`` (``.screenshots/ui`` by default;
``docs/screenshots`` holds the committed ones).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from mcp_server.channel import ChannelServer, RemoteRuntime, socket_path
from mcp_server.ui.auth import issue_token
from runtime.errors import ButtressError
from tests.ui.conftest import ControlRoomProcess, control_room, screenshot_folder
from tests.ui.showcase import HOSTILE_RUN, Showcase, build

WAIT_S = 30


# ------------------------------------------------------------------------------------------ fixtures


READ_TEXT = "const found = document.getElementById(arguments[0]); return found ? found.innerText : '';"


@pytest.fixture(scope="module")
def show(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Showcase]:
    built = build(tmp_path_factory.mktemp("operator") / "shop")
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module")
def channel(show: Showcase) -> Iterator[ChannelServer]:
    """The project's socket, served by this process (which owns the database)."""
    served = ChannelServer(show.runtime, socket_path(show.project.database))
    try:
        yield served
    finally:
        served.close()


@pytest.fixture(scope="module")
def remote(channel: ChannelServer, show: Showcase) -> RemoteRuntime:
    return RemoteRuntime.attach(socket_path(show.project.database))


@pytest.fixture(scope="module")
def room(channel: ChannelServer, show: Showcase) -> Iterator[ControlRoomProcess]:
    """The real ``buttress ui``, attached to this process over the project's socket."""
    with control_room(show.project.root) as running:
        yield running


@pytest.fixture(scope="module")
def http(room: ControlRoomProcess) -> Iterator[httpx2.Client]:
    """An HTTP client signed in to the control room with a link made with the operator secret."""
    with httpx2.Client(base_url=room.base, follow_redirects=False, timeout=30) as client:
        assert client.get(f"/login?token={issue_token()}").status_code == 303
        yield client


@pytest.fixture(scope="module")
def browser(chromium: Any, room: ControlRoomProcess) -> Any:
    chromium.set_window_size(1280, 1000)
    chromium.get(room.login)
    WebDriverWait(chromium, WAIT_S).until(lambda d: d.find_elements(By.ID, "overview-version"))
    return chromium


# ------------------------------------------------------------------------------------------- helpers


def main_text(driver: Any) -> str:
    return str(driver.find_element(By.ID, "main").text)


def wait_for_text(driver: Any, text: str) -> None:
    """Wait until the page's main part shows ``text``, read in one script call (no element handle a
    navigation could detach); a call that meets the page mid-navigation is read again."""

    def shows(d: Any) -> bool:
        try:
            return text in str(d.execute_script(READ_TEXT, "main"))
        except WebDriverException:  # the page is being replaced: read the new one
            return False

    try:
        WebDriverWait(driver, WAIT_S).until(shows)
    except TimeoutException:
        raise AssertionError(f"{text!r} did not show; the page shows: {main_text(driver)[:2000]}") from None


def shoot(driver: Any, name: str, *, height: int = 1400) -> None:
    """The page as a PNG, 1280 pixels wide (at most ``height`` tall), after checking its controls."""
    unlabelled = driver.execute_script(
        "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.outerHTML)"
    )
    assert unlabelled == [], unlabelled
    width = driver.execute_script("return window.innerWidth")
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width if width <= 1280 else 1280, min(max(int(full), 700), height))
    path = screenshot_folder() / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    if shutil.which("pngquant"):  # a third of the size, for the ones committed to docs/screenshots
        subprocess.run(["pngquant", "--quality=70-95", "--force", "--ext", ".png", str(path)], check=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def post(http: httpx2.Client, act: str, page: str, **fields: Any) -> str:
    """Post an act's form as ``page`` would; the page it returns to, with its message."""
    csrf = csrf_of(http.get(page).text)
    done = http.post(f"/act/{act}", data={"csrf": csrf, "next": page, **fields})
    assert done.status_code == 303, done.text
    return http.get(done.headers["location"]).text


def inert(driver: Any) -> None:
    """Nothing an agent or the data wrote ran as markup on this page."""
    assert driver.execute_script("return window.pwned") is None
    assert driver.find_elements(By.XPATH, "//main//img[@src='x']") == []
    assert driver.find_elements(By.XPATH, "//script[contains(., 'pwned')]") == []


class Forms(HTMLParser):
    """Every form of a page: its method, and whether it carries a CSRF field."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (found.get("method") or "get").lower(), "csrf": False})
        elif tag == "input" and found.get("name") == "csrf" and self.forms:
            self.forms[-1]["csrf"] = True


# ------------------------------------------------------------------------------ the runtime's reads


def test_requests_carry_their_note_their_dry_run_and_a_truthful_status(show: Showcase) -> None:
    names = show.names
    found = {r.request_id: r for r in show.runtime.approval_requests()}
    pending, approved = found[names["pending_request"]], found[names["approved_request"]]
    assert (pending.status, pending.dry_run, pending.note) == ("pending", "passed", "notes are unused")
    assert approved.status == "approved"
    stale = found[names["stale_request"]]
    assert stale.status == "stale" and "the current version is" in (stale.reason or "")
    failing = found[names["failing_request"]]
    assert (failing.status, failing.dry_run) == ("stale", "failed")
    assert failing.reason == f"the last dry-run of proposal {names['failing_proposal']} failed"
    assert found[names["refused_request"]].status == "refused"
    assert found[names["expired_request"]].status == "expired"
    assert found[names["used_request"]].status == "used"
    assert show.runtime.activity_head().pending_approvals == 1  # stale ones do not wait for anyone


def test_proposals_carry_their_latest_dry_run_and_request_on_every_read(show: Showcase) -> None:
    names = show.names
    rows = {p.proposal_id: p for p in show.runtime.proposal_page(limit=100).proposals}
    failed = rows[names["dry_run_failed"]]
    assert (failed.latest_dry_run, failed.dry_run_error, failed.dry_run_passed) == (
        "failed",
        "invariant.violated",
        False,
    )
    assert (rows[names["never_dry_run"]].latest_dry_run, rows[names["never_dry_run"]].dry_run) == (
        "none",
        "not_dry_run",
    )
    failing = rows[names["failing_proposal"]]
    assert (failing.latest_dry_run, failing.dry_run_passed, failing.approval) == ("failed", True, "stale")
    refused = rows[names["refused_proposal"]]
    assert (refused.approval, refused.approval_reason) == (
        "refused",
        "The accountants read sales every morning.",
    )
    pending = {p.proposal_id: p for p in show.runtime.overview().pending_proposals}
    assert pending[names["dry_run_failed"]].dry_run == "failed"
    assert pending[names["refused_proposal"]].approval == "refused"
    assert show.runtime.proposal_detail(names["dry_run_failed"]).summary.dry_run == "failed"


def test_a_rollbacks_version_names_the_earlier_version_with_its_spec(show: Showcase) -> None:
    versions = {v.number: v for v in show.runtime.version_page().versions}
    rollback = versions[int(show.names["rollback"])]
    assert rollback.kind == "rollback" and rollback.same_as == int(show.names["restored"])
    assert versions[1].same_as is None


def test_runs_are_searched_paged_and_their_failures_grouped(show: Showcase) -> None:
    rt = show.runtime
    first = rt.search_runs(limit=50)
    assert first.matching == len(rt.list_runs(limit=1000)) and len(first.runs) == 50
    second = rt.search_runs(limit=50, before=first.next_before)
    assert {r.run_id for r in first.runs}.isdisjoint(r.run_id for r in second.runs)
    assert len(first.runs) + len(second.runs) == first.matching
    failed = {r.run_id: r for r in rt.search_runs(status="failed").runs}
    assert {r.at_step for r in failed.values()} == {"count"}  # a failed run says where it stopped
    assert rt.search_runs(search="hold-01").matching == 10
    assert rt.search_runs(step="charge", status="blocked").runs[0].run_id == "checkout-lost"
    groups = {(g.workflow, g.status, g.step, g.code): g.count for g in first.failures}
    assert groups[("restock", "failed", "count", "engine.error")] == 4
    assert groups[("checkout", "blocked", "charge", "effect.unavailable")] == 1
    chosen = rt.search_runs(runs=["hold-001", "hold-002", "nope"])
    assert sorted(r.run_id for r in chosen.runs) == ["hold-001", "hold-002"]


def test_a_runs_history_has_every_step_past_current_and_to_come(show: Showcase) -> None:
    waiting = show.runtime.run_history(show.names["waiting"])
    assert [(s.name, s.state) for s in waiting.steps] == [
        ("reserve", "completed"),
        ("confirm", "current"),
        ("cool_down", "to come"),
    ]
    assert waiting.waits_for == ["confirmed"] and waiting.run.acting_for == "claude"
    lost = show.runtime.run_history(show.names["blocked"])
    charge = next(s for s in lost.steps if s.name == "charge")
    assert charge.state == "current" and charge.attempts == 2
    assert [e.operation for e in charge.events].count("effect_send") == 2
    assert ("retrying", "effect.unavailable") in {(e.outcome, e.error_code) for e in charge.events}
    assert [s.state for s in lost.steps][2:] == ["to come", "to come"]
    cancelled = show.runtime.run_history(show.names["cancelled"])
    assert [s.state for s in cancelled.steps] == ["compensated", "not run", "not run"]
    assert [c.name for c in cancelled.compensations] == ["reserve.compensation"]
    unsettled = show.runtime.run_history(show.names["unsettled"])
    error = unsettled.run.error or {}
    assert error["unsettled"] == ["charge"] and len(error["effects"]) == 1


def test_data_is_browsed_through_the_query_guard_with_facets_types_and_keys(show: Showcase) -> None:
    rt = show.runtime
    page = rt.browse_data(
        "event", filters=[{"column": "kind", "op": "eq", "value": "kind_3"}], sort="amount", descending=True
    )
    assert (page.total, page.matching, len(page.rows)) == (100_000, 14_286, 50)
    assert page.rows[0][[c.name for c in page.columns].index("amount")] == "99.90"
    facets = {f.column: f for f in page.facets}
    assert {v.value for v in facets["level"].values} == {"0", "1", "2", "3", "4"}
    assert "id" not in facets and "happened" not in facets  # a key, and a column of distinct values
    columns = {c.name: c for c in page.columns}
    assert columns["id"].key and columns["amount"].type == "decimal(12,2)"
    assert columns["customer"].references == "customer.id" and columns["customer"].references_key
    injected = rt.browse_data("event", filters=[{"column": "kind", "op": "eq", "value": "x' OR 1=1 --"}])
    assert injected.matching == 0  # a value is a value
    for bad in (
        {"column": "kind; drop table event", "op": "eq", "value": "1"},
        {"column": "kind", "op": "or", "value": "1"},
    ):
        with pytest.raises(ButtressError):
            rt.browse_data("event", filters=[bad])
    with pytest.raises(ButtressError) as caught:
        rt.browse_data("event", filters=[{"column": "level", "op": "gt", "value": "high"}])
    assert caught.value.code == "sql.mismatch"
    row = rt.read_row("customer", {"id": "3"})
    children = {(c.table, c.column): c.count for c in row.children}
    assert children[("orders", "customer")] == 4 and children[("event", "customer")] == 10_000
    order = rt.read_row("orders", {"id": "7"})
    assert [(p.table, p.value, p.found) for p in order.parents] == [("customer", 7, True)]
    exported = rt.export_data("event")
    assert exported.row_count == rt.limits.max_rows and exported.truncated


def test_the_audit_keeps_refusal_messages_and_filters_by_time_text_and_the_operators_reads(
    show: Showcase,
) -> None:
    rt = show.runtime
    refused = rt.audit_page(agent="claude", outcome="refused", operation="query").entries
    assert {e.arguments.get("_refused") for e in refused} >= {"'_buttress.audit' is a system object"}
    rt.overview()  # an operator's read
    rt.flush_reads()
    hidden = rt.audit_page(hide_operator_reads=True, limit=500)
    shown = rt.audit_page(limit=500)
    assert shown.matching > hidden.matching
    assert not any(e.actor == "operator" and e.operation == "overview" for e in hidden.entries)
    assert any(e.operation == "cancel_run" and e.actor == "operator" for e in hidden.entries)  # acts stay
    found = rt.audit_page(search="hold-003").entries
    assert {e.operation for e in found} >= {"start_workflow", "cancel_run", "workflow_finished"}
    assert rt.audit_page(since="2999-01-01").matching == 0
    assert rt.audit_page(until="2000-01-01").matching == 0


def test_the_new_reads_travel_over_the_projects_socket_unchanged(
    show: Showcase, remote: RemoteRuntime
) -> None:
    rt = show.runtime
    assert remote.search_runs(status="failed") == rt.search_runs(status="failed")
    timeless = {"duration_s"}  # the current step's duration grows between the two reads
    assert [s.model_dump(exclude=timeless) for s in remote.run_history("hold-010").steps] == [
        s.model_dump(exclude=timeless) for s in rt.run_history("hold-010").steps
    ]
    filters = [{"column": "level", "op": "le", "value": "1"}]
    assert remote.browse_data("event", filters=filters, facets=["kind"]) == rt.browse_data(
        "event", filters=filters, facets=["kind"]
    )
    assert remote.read_row("orders", {"id": "7"}) == rt.read_row("orders", {"id": "7"})
    assert remote.export_data("customer").rows == rt.export_data("customer").rows
    assert (
        remote.audit_page(search="hold-003", hide_operator_reads=True).matching
        == rt.audit_page(search="hold-003", hide_operator_reads=True).matching
    )


# ---------------------------------------------------------------------------------------- the pages


def test_approvals_offer_approve_only_for_a_plan_that_can_deploy(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    names = show.names
    browser.get(f"{room.base}/approvals")
    assert "1 waiting for approval" in browser.find_element(By.ID, "status").text
    pending = browser.find_element(By.ID, names["pending_request"])
    assert pending.find_elements(By.XPATH, ".//button[normalize-space()='Approve this plan']")
    assert "notes are unused" in pending.text and "likes tea" in pending.text
    for stale in (names["stale_request"], names["failing_request"]):
        card = browser.find_element(By.ID, stale)
        assert card.find_elements(By.XPATH, ".//button[normalize-space()='Approve this plan']") == []
        assert "It cannot be approved" in card.text and "stale" in card.text
    assert "the last dry-run of proposal" in browser.find_element(By.ID, names["failing_request"]).text
    waiting = browser.find_element(By.XPATH, "//h2[@id='waiting']/following-sibling::article[1]")
    assert waiting.get_attribute("id") == names["pending_request"]
    approved = browser.find_element(By.XPATH, "//h2[@id='approved']/following-sibling::article[1]")
    assert approved.get_attribute("id") == names["approved_request"]
    assert "Revoke the approval" in approved.text
    inert(browser)
    shoot(browser, "approvals", height=2400)


def test_a_dry_runs_outcome_reads_the_same_on_every_page(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    names = show.names
    browser.get(f"{room.base}/")
    waiting = browser.find_element(By.ID, "pending-proposals").text
    assert f"{names['dry_run_failed']} by claude — dry-run failed invariant.violated" in waiting
    assert f"{names['refused_proposal']} by claude — refused by the operator" in waiting
    assert f"{names['never_dry_run']} by claude — not dry-run yet" in waiting
    assert f"{names['pending_proposal']} by claude — waiting for your approval" in waiting
    shoot(browser, "overview", height=2200)
    browser.get(f"{room.base}/proposals")
    row = browser.find_element(By.ID, f"proposal-{names['dry_run_failed']}").text
    assert "failed" in row and "invariant.violated" in row and "dry-run failed" in row
    assert "not dry-run" in browser.find_element(By.ID, f"proposal-{names['never_dry_run']}").text
    shoot(browser, "proposals")
    browser.get(f"{room.base}/proposals/{names['failing_proposal']}")
    assert "dry-run failed" in browser.find_element(By.ID, "proposal-stage").text
    assert "Failed" in browser.find_element(By.ID, "dry-run-result").text
    assert "it cannot be approved" in main_text(browser)
    shoot(browser, "proposal", height=1800)


def test_the_runs_list_says_where_each_run_stands_in_one_line_and_pages(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    browser.get(f"{room.base}/workflows")
    total = len(show.runtime.list_runs(limit=1000))
    assert f"{total} runs; 50 shown" in browser.find_element(By.ID, "run-count").text
    failed = browser.find_element(By.ID, "run-restock-0").text
    assert "failed" in failed and "count 1/1" in failed and "engine.error" in failed
    heights = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.runs tbody tr')).map(r => r.getBoundingClientRect().height)"
    )
    assert max(heights) < 60, heights  # a row is a line or two, never five
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    right = browser.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('table.runs td.why'))"
        ".map(e => e.getBoundingClientRect().right))"
    )
    assert right <= browser.execute_script("return window.innerWidth"), right  # the error column is on screen
    shoot(browser, "workflows", height=1600)
    browser.find_element(By.LINK_TEXT, "Older runs").click()
    wait_for_text(browser, "an older page")
    assert browser.find_elements(By.ID, "run-hold-000")
    browser.get(f"{room.base}/workflows?q=hold-01")
    assert "10 runs match" in browser.find_element(By.ID, "run-count").text
    inert(browser)


def test_a_run_page_shows_the_whole_history_and_what_blocks_it(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    browser.get(f"{room.base}/workflows/runs/{show.names['waiting']}")
    steps = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "ol.run-steps > li")]
    assert "reserve" in steps[0] and "completed" in steps[0]
    assert "confirm" in steps[1] and "current" in steps[1] and "waits for signal confirmed" in steps[1]
    assert "cool_down" in steps[2] and "to come" in steps[2]
    assert "claude" in browser.find_element(By.ID, "where").find_element(By.XPATH, "..").text
    browser.get(f"{room.base}/workflows/runs/{show.names['blocked']}")
    charge = browser.find_element(By.ID, "step-charge").text
    assert "attempt 1 failed, retrying" in charge and "request sent through payments" in charge
    browser.get(f"{room.base}/workflows/runs/{show.names['unsettled']}")
    blocked = browser.find_element(By.ID, "unsettled").text
    assert "charge" in blocked and "bt-" in blocked
    shoot(browser, "run", height=1800)
    browser.get(f"{room.base}/workflows/runs/{quote(HOSTILE_RUN, safe='')}")
    assert browser.find_element(By.ID, "run-id").text == HOSTILE_RUN
    inert(browser)


def test_state_colours_mean_the_same_everywhere_and_charts_have_axes_and_readable_labels(
    browser: Any, room: ControlRoomProcess
) -> None:
    browser.get(f"{room.base}/")
    fill = browser.execute_script(
        "const f = s => getComputedStyle(document.querySelector('#run-states li.hbar.tone-' + s + ' rect')).fill;"
        "return {failed: f('bad'), completed: f('good'), blocked: f('act')};"
    )
    assert len(set(fill.values())) == 3, fill
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('#run-states .hbar-label')).map(e => e.textContent.trim())"
    )
    tones = browser.execute_script(
        "return Array.from(document.querySelectorAll('#run-states li.hbar')).map(e => e.className)"
    )
    assert dict(zip(labels, tones, strict=True))["failed"].endswith("tone-bad")
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#run-states .hbar-label, svg text.axis-label'))"
        ".map(e => e.getBoundingClientRect().height)"
    )
    assert min(sizes) >= 11, sizes  # no 9-pixel labels
    axis = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg text.axis-label")
    assert len([t for t in axis if t.text.isdigit()]) >= 2  # the activity chart has a y-axis
    recent = browser.find_element(By.XPATH, '//caption[contains(., "agents\' own latest calls")]/..').text
    assert "via workflow" not in recent
    browser.get(f"{room.base}/workflows")
    pill = browser.execute_script(
        "return getComputedStyle(document.querySelector('#run-restock-0 .status')).borderTopColor"
    )
    bar = browser.execute_script(
        "return getComputedStyle(document.querySelector('#run-states li.hbar.tone-bad rect')).fill"
    )
    assert pill == bar  # a failed run's pill and its bar are the same red


def test_the_audit_shows_why_calls_were_refused_and_finds_a_run_across_arguments(
    browser: Any, room: ControlRoomProcess
) -> None:
    browser.get(f"{room.base}/audit?outcome=refused&agent=claude")
    assert "'_buttress.audit' is a system object" in main_text(browser)
    shoot(browser, "audit", height=1600)
    browser.get(f"{room.base}/audit")
    assert "the operator's own page reads left out" in browser.find_element(By.ID, "audit-count").text
    summaries = browser.execute_script(
        "return Array.from(document.querySelectorAll('td.args summary')).map(s => s.textContent.trim())"
    )
    assert len(set(summaries)) == len(summaries)  # no identical toggles
    actors = {
        (r.find_elements(By.TAG_NAME, "td")[2].text, r.find_elements(By.TAG_NAME, "td")[3].text)
        for r in browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    }
    assert ("operator", "overview") not in actors
    browser.get(f"{room.base}/audit?reads=1")
    assert "left out" not in browser.find_element(By.ID, "audit-count").text
    box = browser.find_element(By.ID, "filter-q")
    box.send_keys("hold-003")
    box.submit()
    WebDriverWait(browser, WAIT_S).until(lambda d: "q=hold-003" in d.current_url)
    operations = {
        r.find_elements(By.TAG_NAME, "td")[3].text
        for r in browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    }
    assert {"start_workflow", "cancel_run", "workflow_compensation"} <= operations
    inert(browser)


def test_data_sorts_filters_facets_and_follows_references_both_ways(
    browser: Any, room: ControlRoomProcess
) -> None:
    browser.get(f"{room.base}/data?table=event")
    assert "100,000 of 100,000 rows" in browser.find_element(By.ID, "row-count").text
    kinds = browser.find_element(By.ID, "facet-kind")
    kinds.find_element(By.LINK_TEXT, "kind_3").click()
    wait_for_text(browser, "14,286 of 100,000 rows match")
    browser.find_element(By.XPATH, "//th//a[@title='sort by amount']").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: "sort=amount" in d.current_url)
    browser.find_element(By.XPATH, "//th//a[@title='sort by amount']").click()  # again: descending
    WebDriverWait(browser, WAIT_S).until(lambda d: "desc=1" in d.current_url)
    header = browser.find_element(By.XPATH, "//th[@aria-sort='descending']").text
    assert "amount" in header and "decimal(12,2)" in header
    first = browser.find_element(By.CSS_SELECTOR, "table.data-rows tbody tr").text
    assert "kind_3" in first and "99.90" in first
    id_header = browser.find_element(By.XPATH, "//table[contains(@class, 'data-rows')]//th[1]").text
    assert "key" in id_header and "bigint" in id_header
    shoot(browser, "data", height=1600)
    browser.find_element(By.CSS_SELECTOR, "table.data-rows tbody tr a.ref").click()  # its customer
    wait_for_text(browser, "Row of customer")
    children = browser.find_element(By.ID, "children").find_element(By.XPATH, "..").text
    assert "4 orders rows" in children and "10,000 event rows" in children
    shoot(browser, "row", height=1400)
    browser.find_element(By.PARTIAL_LINK_TEXT, "4 orders rows").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: "table=orders" in d.current_url)
    assert "4 of 40 rows match" in browser.find_element(By.ID, "row-count").text
    browser.get(f"{room.base}/data?table=customer")
    inert(browser)


def test_a_select_is_paged_and_exports_follow_the_guard_and_its_limits(http: httpx2.Client) -> None:
    page = http.get("/data", params={"sql": "select id, kind from event order by id", "page": "1"}).text
    assert "Rows 51–100; more follow" in page and ">50<" in page
    beyond = http.get("/data", params={"sql": "select id from event", "page": "20"}).text
    assert "The query limits stop before row 1001" in beyond
    refused = http.get("/data", params={"sql": "select * from _buttress.audit"}).text
    assert "sql.forbidden" in refused and "system schema" in refused
    exported = http.get("/data/export", params={"table": "event", "f.kind.eq": "kind_1", "format": "csv"})
    assert exported.headers["content-disposition"] == 'attachment; filename="event.csv"'
    assert exported.headers["x-content-type-options"] == "nosniff"
    assert exported.headers["x-buttress-truncated"] == "true"
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert (
        rows[0][:3] == ["id", "kind", "level"]
        and len(rows) == 1001
        and {r[1] for r in rows[1:]} == {"kind_1"}
    )
    customers = http.get("/data/export", params={"table": "customer", "format": "csv"})
    names = [r[1] for r in csv.reader(io.StringIO(customers.text))]
    assert "'=1+2" in names and "=1+2" not in names  # a spreadsheet reads it as text
    assert customers.headers["x-buttress-truncated"] == "false"
    as_json = http.get(
        "/data/export", params={"table": "orders", "f.customer.eq": "3", "format": "json"}
    ).json()
    assert as_json["row_count"] == 4 and as_json["rows"][0]["customer"] == 3 and not as_json["truncated"]
    assert http.get("/data/export", params={"table": "nope", "format": "csv"}).status_code == 400


def test_a_filter_that_does_not_fit_its_column_is_explained_and_the_table_stays(http: httpx2.Client) -> None:
    page = http.get(
        "/data",
        params={
            "table": "event",
            "f.kind.eq": "kind_2",
            "add_col": "level",
            "add_op": "gt",
            "add_val": "high",
        },
    ).text
    assert "Could not show event" in page and "is not a whole number" in page and "sql.mismatch" in page
    assert 'name="add_val" maxlength="200" value="high"' in page  # what was typed is kept
    assert '<option value="level" selected>' in page and '<option value="gt" selected>' in page
    assert "14,286</strong> of 100,000 rows match" in page  # the table as it was, with its filter


def test_diffs_summarise_and_show_sql_line_by_line_and_versions_mark_rollbacks(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    rollback = int(show.names["rollback"])
    browser.get(f"{room.base}/versions")
    row = browser.find_element(By.ID, f"version-{rollback}").text
    assert (
        f"rollback to version {show.names['restored']}" in row
        and f"same spec as version {show.names['restored']}" in row
    )
    shoot(browser, "versions")
    browser.get(f"{room.base}/versions/diff?from={rollback}&to={rollback + 1}")
    assert browser.find_element(By.ID, "diff-summary").text == "1 view replaced."
    removed = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.line-old")]
    added = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.line-new")]
    assert any("name" in line for line in removed) and any("tier" in line for line in added)
    assert len(removed) + len(added) < 12  # the lines that changed, not two whole blocks
    shoot(browser, "diff")
    browser.get(f"{room.base}/versions/diff?from={rollback - 1}&to={rollback}")
    assert "is a rollback restoring version" in main_text(browser)
    assert browser.find_element(By.ID, "diff-summary").text == "1 field undone."
    browser.get(f"{room.base}/versions/diff?from=3&to=4")
    text = main_text(browser)
    assert "indexes" in text and "by_kind (kind)" in text and '"columns"' not in text


def test_at_800_pixels_tables_become_cards_and_nothing_is_cut_off(
    browser: Any, room: ControlRoomProcess
) -> None:
    browser.set_window_size(800, 1000)
    try:
        for path in ("/workflows", "/audit", "/approvals", "/data?table=event"):
            browser.get(f"{room.base}{path}")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= 800, (path, width)
        browser.get(f"{room.base}/workflows")
        error = browser.find_element(By.CSS_SELECTOR, "#run-restock-0 td.why")
        assert error.is_displayed() and error.rect["x"] + error.rect["width"] <= 800
        shoot(browser, "workflows-narrow", height=1400)
    finally:
        browser.set_window_size(1280, 1000)


def test_pages_that_cannot_be_shown_explain_themselves_inside_the_navigation(
    browser: Any, room: ControlRoomProcess
) -> None:
    browser.get(f"{room.base}/workflows/runs/nope")
    assert browser.find_elements(By.CSS_SELECTOR, "nav#nav a[aria-current='page']")
    text = main_text(browser)
    assert "Could not show this run" in text and "no run named 'nope'" in text
    assert "list_runs" not in text and "describe_app" not in text  # no advice written for agents
    assert "Back to Workflows" in text
    shoot(browser, "error")
    browser.get(f"{room.base}/nowhere")
    assert browser.find_elements(By.ID, "nav") and "No such page" in main_text(browser)


def test_every_post_form_carries_the_csrf_token_and_every_answer_the_security_headers(
    http: httpx2.Client, room: ControlRoomProcess, show: Showcase
) -> None:
    names = show.names
    paths = [
        "/",
        "/approvals",
        f"/proposals/{names['pending_proposal']}",
        "/audit",
        "/data?table=event",
        "/data/row?table=customer&k.id=3",
        "/workflows",
        "/workflows/bulk?do=retry&workflow=restock&status=failed",
        f"/workflows/runs/{names['waiting']}",
        f"/workflows/runs/{names['blocked']}",
        "/effects",
    ]
    for path in paths:
        response = http.get(path)
        assert response.status_code == 200, path
        forms = Forms()
        forms.feed(response.text)
        posting = [f for f in forms.forms if f["method"] == "post"]
        assert posting and all(f["csrf"] for f in posting), path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    for path in ("/static/ui.js", "/static/ui.css", "/static/nothing.js"):
        for method in ("GET", "HEAD"):
            response = httpx2.request(method, f"{room.base}{path}")
            assert response.headers["x-content-type-options"] == "nosniff", (method, path)
            assert "script-src 'self'" in response.headers["content-security-policy"]
    for act in ("signal_run", "bulk_runs", "refuse"):
        refused = http.post(f"/act/{act}", data={"run_id": "hold-010", "signal": "confirmed", "do": "cancel"})
        assert refused.status_code == 403, act
    assert show.runtime.get_run("hold-010").status == "waiting"
    stranger = httpx2.get(f"{room.base}/data/export?table=customer&format=csv")
    assert stranger.status_code == 401 and "likes tea" not in stranger.text


# ------------------------------------------------------------------------------------------ the acts


def test_a_stale_request_cannot_be_approved_and_the_refusal_says_why_for_people(
    http: httpx2.Client, show: Showcase
) -> None:
    request = show.names["stale_request"]
    page = post(http, "approve", "/approvals", request_id=request)
    assert f"Could not approve request {request}" in page and "there is nothing to approve" in page
    assert "approval.stale" in page
    assert next(r for r in show.runtime.approval_requests() if r.request_id == request).status == "stale"
    show.runtime.flush_reads()
    assert ("operator", "refused", "approval.stale") in {
        (e.actor, e.outcome, e.error_code) for e in show.runtime.read_audit(operation="approve", limit=100)
    }


def test_a_refusal_needs_a_reason_and_keeps_what_was_typed_when_it_fails(
    http: httpx2.Client, show: Showcase
) -> None:
    request = show.names["pending_request"]
    page = post(http, "refuse", "/approvals", request_id=request, reason="   ")
    assert "say why" in page and "The agent will be told why" not in page
    assert next(r for r in show.runtime.approval_requests() if r.request_id == request).status == "pending"
    stale = show.names["failing_request"]
    page = post(http, "refuse", "/approvals", request_id=stale, reason="Fix the empty customer name first.")
    assert f"Refused the deploy of proposal {show.names['failing_proposal']}" in page
    assert next(r for r in show.runtime.approval_requests() if r.request_id == stale).status == "refused"


def test_a_failed_form_keeps_its_input_and_names_its_object(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    effect = show.runtime.list_effects(state="unknown")[0]
    browser.get(f"{room.base}/effects")
    row = browser.find_element(By.ID, f"effect-{effect.effect_id}")
    form = row.find_element(By.XPATH, "following-sibling::tr[1]")
    form.find_element(By.CSS_SELECTOR, "input[value=succeeded]").click()
    box = form.find_element(By.CSS_SELECTOR, "textarea[name=response]")
    box.send_keys('{"id": "ch_77", oops}')
    form.find_element(By.XPATH, ".//button[normalize-space()='Record the outcome']").click()
    wait_for_text(browser, f"Could not record the outcome of effect {effect.effect_id}")
    form = browser.find_element(By.ID, f"effect-{effect.effect_id}").find_element(
        By.XPATH, "following-sibling::tr[1]"
    )
    assert (
        form.find_element(By.CSS_SELECTOR, "textarea[name=response]").get_attribute("value")
        == '{"id": "ch_77", oops}'
    )
    assert form.find_element(By.CSS_SELECTOR, "input[value=succeeded]").is_selected()
    assert "must be JSON" in form.find_element(By.CSS_SELECTOR, ".form-error").text
    shoot(browser, "effects")
    assert show.runtime.get_run(effect.run_id).status == "blocked"


def test_a_signal_sent_from_the_run_page_moves_the_waiting_run_on(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    run = "hold-011"
    browser.get(f"{room.base}/workflows/runs/{run}")
    payload = browser.find_element(By.ID, "signal-payload")
    payload.send_keys("not json")
    browser.find_element(By.XPATH, "//button[normalize-space()='Send the signal']").click()
    wait_for_text(browser, f"Could not signal run {run}")
    assert browser.find_element(By.ID, "signal-payload").get_attribute("value") == "not json"
    assert show.runtime.get_run(run).status == "waiting"
    payload = browser.find_element(By.ID, "signal-payload")
    payload.clear()
    payload.send_keys('{"by": "phone"}')
    assert browser.find_element(By.ID, "signal-name").get_attribute("value") == "confirmed"
    browser.find_element(By.XPATH, "//button[normalize-space()='Send the signal']").click()
    wait_for_text(browser, f"Sent signal confirmed to run {run}")
    show.runtime.scheduler.drain()
    assert show.runtime.get_run(run).status == "completed"
    browser.get(f"{room.base}/workflows/runs/{run}")
    assert (
        "confirmed from operator"
        in browser.find_element(By.ID, "signals").find_element(By.XPATH, "following-sibling::ul").text
    )
    history = browser.find_element(By.CSS_SELECTOR, "table.history").text
    assert "signal_run" in history and "operator" in history
    assert all("completed" in e.text for e in browser.find_elements(By.CSS_SELECTOR, "ol.run-steps > li"))


def test_bulk_retry_lists_the_runs_it_will_touch_and_retries_only_those_confirmed(
    browser: Any, room: ControlRoomProcess, show: Showcase
) -> None:
    browser.get(f"{room.base}/workflows")
    group = browser.find_element(
        By.XPATH, "//section[contains(@class,'failures')]//tr[td[2][normalize-space()='restock']]"
    )
    assert group.find_element(By.TAG_NAME, "td").text == "4"
    group.find_element(By.LINK_TEXT, "Retry all…").click()
    wait_for_text(browser, "Retry 4 runs?")
    boxes = browser.find_elements(By.CSS_SELECTOR, "#bulk-form input[name=run_id]")
    assert sorted(b.get_attribute("value") for b in boxes) == [f"restock-{n}" for n in range(4)]
    assert all(show.runtime.get_run(f"restock-{n}").status == "failed" for n in range(4))  # nothing yet
    shoot(browser, "bulk")
    next(b for b in boxes if b.get_attribute("value") == "restock-3").click()  # leave one out
    browser.find_element(By.CSS_SELECTOR, "#bulk-form button[type=submit]").click()
    wait_for_text(browser, "Retrying 3 runs: ")
    assert [show.runtime.get_run(f"restock-{n}").status for n in range(4)] == [
        "running",
        "running",
        "running",
        "failed",
    ]
    show.runtime.flush_reads()
    retried = [
        e.arguments["run_id"]
        for e in show.runtime.read_audit(operation="retry_run", limit=100)
        if e.actor == "operator"
    ]
    assert sorted(retried) == ["restock-0", "restock-1", "restock-2"]


def test_bulk_cancel_of_chosen_runs_names_what_it_could_not_do(http: httpx2.Client, show: Showcase) -> None:
    page = http.get(
        "/workflows/bulk", params=[("do", "cancel"), ("run", "hold-020"), ("run", "hold-000")]
    ).text
    assert "Cancel 1 run?" in page and "hold-000" in page and "it is already completed" in page
    done = post(
        http,
        "bulk_runs",
        "/workflows/bulk?do=cancel&run=hold-020&run=hold-000",
        do="cancel",
        run_id=["hold-020", "hold-000"],
        reason="closing the shop",
    )
    assert "Cancelling 1 run: hold-020" in done and "Not cancelled: hold-000 (workflow.not_active" in done
    cancelled = show.runtime.get_run(
        "hold-020"
    )  # nothing runs in the background: it stays as the act left it
    assert cancelled.status == "compensating" and (cancelled.error or {})["message"] == "closing the shop"
