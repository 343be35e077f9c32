"""The control room in a real headless Chromium, with a real agent acting over MCP at the same time.

One project made with `buttress init`; the agent's `buttress serve` (stdio, the SDK client) owns it;
the real `buttress ui` attaches to it; the operator signs in with the one-time link it printed. The
operator watches the agent's deploy appear, approves a hazardous deploy (the agent's retry then
succeeds), refuses another (the agent's retry is told why), filters the audit to refusals, opens
the agent's workflow run and cancels it (its step is compensated), records what the provider did
with a charge that got no answer (the agent's run then completes), and an
agent's bearer token or a missing session opens nothing. Every page visited is saved as a PNG in
``$BUTTRESS_SCREENSHOTS`` (default ``.screenshots/ui/``) and checked for unlabelled form controls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from mcp_server.demo import BOOKING, SLOT
from mcp_server.ui.pages import ACTS, PAGES
from runtime.boundary.policy import add_agent
from tests.mcp_server.helpers import configure
from tests.ui.conftest import (
    Agent,
    ControlRoomProcess,
    agent_over_stdio,
    control_room,
    make_project,
    page_path,
    require_browser,
    screenshot_folder,
)
from tests.workflows.harness import Provider, provider

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
WAIT_S = 30


READ_TEXT = "const found = document.getElementById(arguments[0]); return found ? found.innerText : '';"


@pytest.fixture(scope="module")
def payments() -> Iterator[Provider]:
    """A payment provider (tests/fakes/provider.py, its own process) that never answers: 503 to all."""
    require_browser()  # skip (or, in CI, fail) before starting anything
    with provider(seed=1, fail_rate=1.0) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, payments: Provider) -> Path:
    folder = make_project(tmp_path_factory.mktemp("browser") / "shop")
    configure(folder, connectors={"payments": {"url": f"{payments.url}/charges", "timeout_s": 2}})
    return folder


@pytest.fixture(scope="module")
def agent(project: Path) -> Iterator[Agent]:
    with agent_over_stdio(project) as connected:
        yield connected


@pytest.fixture(scope="module")
def room(project: Path, agent: Agent) -> Iterator[ControlRoomProcess]:
    with control_room(project) as running:
        yield running


@pytest.fixture(scope="module")
def browser(chromium: Any, room: ControlRoomProcess) -> Any:
    """The operator's browser, signed in with the one-time link `buttress ui` printed."""
    chromium.get(room.login)
    WebDriverWait(chromium, WAIT_S).until(lambda d: d.find_elements(By.ID, "overview-version"))
    return chromium


def shoot(driver: Any, name: str) -> None:
    """Save the whole page as ``<name>.png``, after checking every form control has a label."""
    unlabelled = driver.execute_script(
        "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.outerHTML)"
    )
    assert unlabelled == [], unlabelled
    nameless = driver.execute_script(
        "return Array.from(document.querySelectorAll('button')).filter(b => !b.textContent.trim()).length"
    )
    assert nameless == 0
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 800), 8000))
    driver.save_screenshot(str(screenshot_folder() / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def wait_for_text(driver: Any, text: str, *, element: str = "main") -> None:
    """Wait until ``element`` shows ``text``. The text is read in the page in one script call (no
    element handle a navigation could detach); a call that meets the page mid-navigation is read again."""

    def shows(d: Any) -> bool:
        try:
            return text in str(d.execute_script(READ_TEXT, element))
        except WebDriverException:  # the page is being replaced: read the new one
            return False

    try:
        WebDriverWait(driver, WAIT_S).until(shows)
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"{text!r} did not show; the page shows: {shown}") from None


def visit(driver: Any, url: str) -> None:
    """Open ``url`` and wait until it shows the latest state: the agent's last calls are audited a few
    milliseconds after they return, and the page refreshes itself once they land."""
    driver.get(url)

    def current(d: Any) -> bool:
        return bool(
            d.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(document.body.dataset.live, {cache: 'no-store'}).then(r => r.json())"
                ".then(h => done(h.state === document.body.dataset.state)).catch(() => done(false));"
            )
        )

    try:
        WebDriverWait(driver, WAIT_S).until(current)
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"{url} did not catch up with the live state; it shows: {shown}") from None


def booking_app(agent: Agent) -> None:
    """The demo's slot and booking entities with sample rows (deployed once)."""
    entities = {e["name"] for e in agent.call("describe_app")["entities"]}
    if "slot" not in entities:
        agent.ship([{"op": "add_entity", "entity": SLOT}, {"op": "add_entity", "entity": BOOKING}])
    if not agent.call("query", sql="select count(*) from slot")["rows"][0][0]:
        agent.call("demo_seed_rows")


SEAT_HOLD: list[dict[str, Any]] = [
    {
        "op": "add_action",
        "action": {
            "name": f"{name}_seat",
            "kind": "mutation",
            "params": [{"name": "slot", "type": "integer"}],
            "statements": [
                f"update slot set capacity = capacity {sign} 1 where id = $slot returning capacity"
            ],
        },
    }
    for name, sign in (("add", "+"), ("remove", "-"))
] + [
    {
        "op": "add_workflow",
        "workflow": {
            "name": "seat_hold",
            "params": [{"name": "slot", "type": "integer"}],
            "steps": [
                {
                    "name": "reserve",
                    "kind": "action",
                    "action": "add_seat",
                    "args": {"slot": {"from": "input.slot"}},
                    "compensation": {"action": "remove_seat", "args": {"slot": {"from": "input.slot"}}},
                },
                {"name": "confirm", "kind": "wait", "signal": "confirmed"},
            ],
        },
    }
]


CHARGE: dict[str, Any] = {
    "name": "charge",
    "params": [{"name": "sale", "type": "text"}, {"name": "amount", "type": "integer"}],
    "steps": [
        {
            "name": "charge",
            "kind": "effect",
            "connector": "payments",
            "args": {"customer": "c1", "amount": {"from": "input.amount"}, "order": {"from": "input.sale"}},
            "retry": {"attempts": 2, "backoff_s": 0.01},
        }
    ],
}


def run_state(agent: Agent, run_id: str, status: str) -> None:
    """Wait (bounded) until the agent's get_run says the run is ``status``."""
    deadline = time.monotonic() + WAIT_S
    while (found := agent.call("get_run", run_id=run_id)["status"]) != status:
        assert time.monotonic() < deadline, f"run {run_id} is {found}, not {status}"
        time.sleep(0.1)


def waiting_deploy(agent: Agent, operations: list[dict[str, Any]], note: str) -> tuple[str, str]:
    """The agent proposes and dry-runs a hazardous change; its deploy waits. (proposal, request)"""
    proposal = agent.call("propose_change", operations=operations, note=note)["proposal_id"]
    assert agent.call("dry_run", proposal_id=proposal)["passed"]
    waiting = agent.refused("deploy", proposal_id=proposal)
    assert waiting["code"] == "deploy.needs_approval", waiting
    return proposal, str(waiting["details"]["approval_request"])


def test_the_one_time_link_signs_the_operator_in_once(browser: Any, room: ControlRoomProcess) -> None:
    assert browser.current_url == f"{room.base}/"
    cookie = next(c for c in browser.get_cookies() if c["name"].startswith("buttress_ui_"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    with httpx2.Client() as stranger:
        again = stranger.get(room.login, follow_redirects=False)
    assert again.status_code == 401 and "not valid" in again.text
    shoot(browser, "overview-empty")


def test_a_deploy_an_agent_makes_over_mcp_appears_without_a_reload(
    browser: Any, room: ControlRoomProcess, agent: Agent
) -> None:
    browser.get(f"{room.base}/")
    shown = int(browser.find_element(By.ID, "overview-version").text)
    browser.execute_script("window.stayed = true")  # a reload would forget it
    version = agent.ship([{"op": "add_entity", "entity": SLOT}, {"op": "add_entity", "entity": BOOKING}])
    assert version == shown + 1
    wait_for_text(browser, f"Version {version}")
    assert browser.execute_script("return window.stayed") is True
    wait_for_text(browser, "deploy")
    recent = browser.find_element(By.ID, "main").text
    assert "claude" in recent and f"{version - 1} → {version}" in recent
    shoot(browser, "overview")


def test_an_approval_given_in_the_browser_lets_the_agents_retried_deploy_succeed(
    browser: Any, room: ControlRoomProcess, agent: Agent
) -> None:
    booking_app(agent)
    proposal, request = waiting_deploy(
        agent, [{"op": "drop_field", "entity": "slot", "field": "note"}], "notes are unused"
    )
    browser.get(f"{room.base}/")
    wait_for_text(browser, "1 waiting for approval", element="status")
    visit(browser, f"{room.base}/approvals")
    card = browser.find_element(By.ID, request)
    assert "data.drop_field" in card.text and "HIGH" in card.text.upper()
    assert "morning yoga" in card.text  # a sample row whose value the deploy drops
    shoot(browser, "approvals")
    card.find_element(By.XPATH, ".//button[normalize-space()='Approve this plan']").send_keys(Keys.ENTER)
    wait_for_text(browser, f"Approved the deploy of proposal {proposal}")

    deployed = agent.call("deploy", proposal_id=proposal)
    assert agent.call("query", sql="select count(*) from slot")["rows"] == [[3]]
    visit(browser, f"{room.base}/proposals/{proposal}")
    page = browser.find_element(By.ID, "main").text
    assert f"deployed as version {deployed['version']}" in page
    assert 'ALTER TABLE "slot" DROP COLUMN "note"' in page and "Values lost" in page
    assert "used" in page
    shoot(browser, "proposal")


def test_a_refusal_given_in_the_browser_is_what_the_agents_retry_hears(
    browser: Any, room: ControlRoomProcess, agent: Agent
) -> None:
    booking_app(agent)
    proposal, request = waiting_deploy(agent, [{"op": "drop_entity", "entity": "booking"}], "start over")
    visit(browser, f"{room.base}/approvals")
    reason = browser.find_element(By.ID, f"reason-{request}")
    reason.send_keys("The front desk still reads bookings.")
    reason.send_keys(Keys.TAB)  # the keyboard's way to the Refuse button
    refuse = browser.switch_to.active_element
    assert refuse.text == "Refuse"
    refuse.send_keys(Keys.ENTER)
    wait_for_text(browser, f"Refused the deploy of proposal {proposal}")
    shoot(browser, "approvals-decided")

    retried = agent.refused("deploy", proposal_id=proposal)
    assert retried["code"] == "policy.denied"
    assert "The front desk still reads bookings." in retried["message"]
    assert agent.call("query", sql="select count(*) from booking")["rows"][0][0] > 0


def test_the_audit_filtered_to_refusals_shows_only_refusals_marked_and_verifies_the_chain(
    browser: Any, room: ControlRoomProcess, agent: Agent
) -> None:
    booking_app(agent)
    agent.refused("query", sql="select * from _buttress.audit")
    visit(browser, f"{room.base}/audit")
    Select(browser.find_element(By.ID, "filter-outcome")).select_by_value("refused")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: "outcome=refused" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    assert rows and all("outcome-refused" in (row.get_attribute("class") or "") for row in rows)
    codes = {row.find_elements(By.TAG_NAME, "td")[4].find_element(By.TAG_NAME, "code").text for row in rows}
    assert {"deploy.needs_approval", "policy.denied", "sql.forbidden"} <= codes
    shoot(browser, "audit-refusals")

    browser.find_element(By.XPATH, "//button[normalize-space()='Verify the chain now']").click()
    wait_for_text(browser, "Audit chain ok")
    assert "intact" in browser.find_element(By.ID, "chain-status").text


def test_versions_their_diff_proposals_and_data_can_be_read(
    browser: Any, room: ControlRoomProcess, agent: Agent
) -> None:
    booking_app(agent)
    visit(browser, f"{room.base}/versions")
    shoot(browser, "versions")
    current = int(browser.find_element(By.ID, "current-version").text)
    origin = browser.find_element(By.ID, "diff-from")
    origin.clear()
    origin.send_keys("0")
    target = browser.find_element(By.ID, "diff-to")
    target.clear()
    target.send_keys(str(current), Keys.ENTER)
    wait_for_text(browser, f"Version 0 → {current}")
    text = browser.find_element(By.ID, "main").text
    assert "added entity slot" in text.lower() and "starts_at" in text
    shoot(browser, "diff")

    browser.get(f"{room.base}/proposals")
    assert (
        "pending" in browser.find_element(By.ID, "main").text
        or "deployed" in browser.find_element(By.ID, "main").text
    )
    shoot(browser, "proposals")

    visit(browser, f"{room.base}/data?table=slot")
    assert "lunch talk" not in browser.find_element(By.ID, "main").text  # the note was dropped
    assert "capacity" in browser.find_element(By.ID, "main").text
    shoot(browser, "data")
    query = browser.find_element(By.ID, "sql")
    query.send_keys("select * from _buttress.versions")
    query.submit()
    wait_for_text(browser, "sql.forbidden")


def test_the_operator_opens_an_agents_workflow_run_and_cancels_it_from_the_keyboard(
    browser: Any, room: ControlRoomProcess, agent: Agent
) -> None:
    booking_app(agent)
    agent.ship(SEAT_HOLD)
    seats = agent.call("query", sql="select capacity from slot where id = 1")["rows"][0][0]
    started = agent.call("start_workflow", workflow="seat_hold", args={"slot": 1}, run_id="hold-1")
    assert started["run_id"] == "hold-1"
    run_state(agent, "hold-1", "waiting")

    visit(browser, f"{room.base}/workflows")
    wait_for_text(browser, "hold-1")
    shoot(browser, "workflows")
    browser.find_element(By.LINK_TEXT, "hold-1").click()
    wait_for_text(browser, "signal:confirmed")
    steps = browser.find_element(By.CSS_SELECTOR, "ol.run-steps").text
    assert "reserve" in steps and "completed" in steps
    assert browser.find_element(By.ID, "run-id").text == "hold-1"
    shoot(browser, "run")

    reason = browser.find_element(By.ID, "cancel-reason")
    reason.send_keys("The guest called to cancel.")
    reason.send_keys(Keys.TAB)
    cancel = browser.switch_to.active_element
    assert cancel.text == "Cancel this run"
    cancel.send_keys(Keys.ENTER)
    wait_for_text(browser, "Cancelling run hold-1")
    run_state(agent, "hold-1", "cancelled")
    assert agent.call("query", sql="select capacity from slot where id = 1")["rows"][0][0] == seats
    visit(browser, f"{room.base}/workflows/runs/hold-1")
    wait_for_text(browser, "reserve.compensation")
    assert browser.find_elements(By.ID, "cancel-reason") == []
    shoot(browser, "run-cancelled")

    visit(browser, f"{room.base}/audit?operation=cancel_run")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows] == ["operator"]
    for page in ("messages", "effects"):
        visit(browser, f"{room.base}/{page}")
        shoot(browser, page)


def test_an_effect_with_no_answer_is_resolved_by_the_operator_and_the_agents_run_completes(
    browser: Any, room: ControlRoomProcess, agent: Agent, payments: Provider
) -> None:
    agent.ship([{"op": "add_workflow", "workflow": CHARGE}])
    agent.call("start_workflow", workflow="charge", args={"sale": "o-7", "amount": 12}, run_id="pay-1")
    run_state(agent, "pay-1", "blocked")  # the provider answered 503 to every attempt
    assert payments.state()["charges"] == []

    visit(browser, f"{room.base}/effects")
    wait_for_text(browser, "1 effect in an unknown state", element="status")
    effect = agent.call("get_run", run_id="pay-1")["effects"][0]["effect_id"]
    row = browser.find_element(By.ID, f"effect-{effect}")
    assert "unknown" in row.text and "payments" in row.text
    shoot(browser, "effects-unknown")
    succeeded = browser.find_element(By.CSS_SELECTOR, "input[name=outcome][value=succeeded]")
    succeeded.send_keys(Keys.SPACE)  # radios are chosen from the keyboard
    assert succeeded.is_selected()
    response = browser.find_element(By.CSS_SELECTOR, "textarea[name=response]")
    response.send_keys('{"id": "ch_by_phone"}')
    response.send_keys(Keys.TAB)
    record = browser.switch_to.active_element
    assert record.text == "Record the outcome"
    record.send_keys(Keys.ENTER)
    wait_for_text(browser, f"Effect {effect} recorded as succeeded")
    run_state(agent, "pay-1", "completed")
    assert agent.call("get_run", run_id="pay-1")["steps"][0]["output"] == {"id": "ch_by_phone"}
    visit(browser, f"{room.base}/workflows/runs/pay-1")
    wait_for_text(browser, "resolved")
    shoot(browser, "run-resolved")
    visit(browser, f"{room.base}/")
    in_flight = browser.find_element(By.ID, "main").text
    assert "No effect in an unknown state." in in_flight
    bars = {
        bar.find_element(By.CLASS_NAME, "hbar-label").text: bar.find_element(By.CLASS_NAME, "hbar-value").text
        for bar in browser.find_elements(By.CSS_SELECTOR, "#run-states li.hbar")
    }
    assert bars["completed"] == "1"
    shoot(browser, "overview-later")


def test_agent_written_markup_renders_as_text(browser: Any, room: ControlRoomProcess, agent: Agent) -> None:
    booking_app(agent)
    action = {
        "name": "whisper",
        "kind": "query",
        "description": HOSTILE,
        "statements": ["select count(*) as n from slot"],
    }
    proposal = agent.call("propose_change", operations=[{"op": "add_action", "action": action}], note=HOSTILE)
    agent.call("dry_run", proposal_id=proposal["proposal_id"])
    agent.call("deploy", proposal_id=proposal["proposal_id"])
    for path in ("/proposals", f"/proposals/{proposal['proposal_id']}", "/versions", "/versions/diff"):
        browser.get(f"{room.base}{path}")
        assert browser.find_elements(By.XPATH, "//script[contains(., 'pwned')]") == []
        assert browser.find_elements(By.XPATH, "//img[@src='x']") == []
        assert browser.execute_script("return window.pwned") is None
        assert "<script>window.pwned = 1</script>" in browser.find_element(By.ID, "main").text
    shoot(browser, "hostile-strings")


def test_an_agents_token_and_a_missing_session_reach_no_page_and_no_action(
    browser: Any, room: ControlRoomProcess, project: Path
) -> None:
    token = add_agent(project / "buttress.toml", "web-agent", "developer")
    paths = [page_path(page.path) for page in PAGES] + ["/live"]
    with httpx2.Client(base_url=room.base, follow_redirects=False) as agent:
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            for path in paths:
                response = agent.get(path, headers=headers)
                assert response.status_code == 401, path
                assert "slot" not in response.text and "claude" not in response.text, path
            for act in ACTS:
                response = agent.post(f"/act/{act}", data={"request_id": "r00000000"}, headers=headers)
                assert response.status_code == 401, act
    browser.delete_all_cookies()
    browser.get(f"{room.base}/approvals")
    assert "Sign in to the control room" in browser.find_element(By.TAG_NAME, "h1").text
    shoot(browser, "signed-out")
