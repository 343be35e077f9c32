"""The control room's Workflows, Messages and Effects pages over a real runtime whose payments go to a
real (fake) provider on 127.0.0.1: a run whose charge gets no answer is blocked, shows up with its
steps and its unknown effect, and the operator retries it, resolves the effect or cancels a run from
the browser's forms — each through the same runtime function as ``buttress runs`` / ``buttress
effects``, each audited as the operator."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_server.project import Project, init
from mcp_server.ui.app import ControlRoom
from runtime.runtime import Runtime
from tests.fakes.provider import State, serve
from tests.runtime.conftest import deploy
from tests.runtime.test_workflows import HOLD, Shop, settle, shop  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8766"
CHECKOUT_ARGS = {"sale": "s1", "sku": "apple", "amount": 10}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def provider() -> Iterator[tuple[str, State]]:
    """The fake payment provider, answering 503 to everything until told otherwise."""
    state = State(seed=1, fail_rate=1.0, drop_rate=0.0, decline_over=1000)
    server = serve(0, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


@pytest.fixture
def blocked(shop: Shop, provider: tuple[str, State]) -> Runtime:  # noqa: F811 (the imported fixture)
    """A shop whose checkout run ``s1`` is blocked: its charge got no answer after every attempt."""
    rt = shop(provider[0])
    rt.start_workflow("checkout", CHECKOUT_ARGS, run_id="s1", actor="claude")
    settle(rt)
    assert rt.get_run("s1").status == "blocked"
    return rt


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return init(tmp_path / "proj", agent="claude")


@pytest.fixture
async def browser(project: Project, blocked: Runtime) -> AsyncIterator[httpx2.AsyncClient]:
    room = ControlRoom(project, lambda: blocked)
    transport = httpx2.ASGITransport(app=room.app)
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as client:
        assert (await client.get(room.login_url(BASE))).status_code == 303
        yield client


async def act(browser: httpx2.AsyncClient, name: str, page: str, **fields: str) -> str:
    """Post one act's form as the page at ``page`` would (its CSRF token), follow the redirect back;
    the page it lands on."""
    html = (await browser.get(page)).text
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    done = await browser.post(f"/act/{name}", data={"csrf": found.group(1), "next": page, **fields})
    assert done.status_code == 303 and done.headers["location"] == page
    return (await browser.get(page)).text


def operator_acts(rt: Runtime, operation: str) -> list[tuple[str, str, Any]]:
    rt.flush_reads()
    return [(e.actor, e.outcome, e.arguments) for e in rt.read_audit(operation=operation)]


async def test_a_blocked_run_shows_its_steps_and_its_unknown_effect_everywhere_it_matters(
    browser: httpx2.AsyncClient, blocked: Runtime
) -> None:
    effect = blocked.list_effects(state="unknown")[0]
    overview = (await browser.get("/")).text
    assert "1 effect in an unknown state" in overview and 'href="/workflows?status=blocked"' in overview
    runs = (await browser.get("/workflows")).text
    assert 'href="/workflows/runs/s1"' in runs and 'class="tone-act" id="run-s1"' in runs
    assert (await browser.get("/workflows?status=completed")).text.count("/workflows/runs/s1") == 0
    run = (await browser.get("/workflows/runs/s1")).text
    assert "reserve" in run and effect.effect_id in run and "Retry this run" in run
    assert "Cancel this run" in run and 'action="/act/resolve_effect"' in run
    effects = (await browser.get("/effects")).text
    assert effect.effect_id in effects and "it succeeded" in effects
    assert '<span class="count">1<span class="visually-hidden"> unknown</span>' in effects
    assert effect.effect_id not in (await browser.get("/effects?state=succeeded")).text
    assert (await browser.get("/effects?state=weird")).status_code == 400
    assert (await browser.get("/workflows?status=weird")).status_code == 400
    assert (await browser.get("/workflows/runs/nope")).status_code == 404


async def test_a_retry_from_the_browser_resends_the_effect_and_the_run_completes(
    browser: httpx2.AsyncClient, blocked: Runtime, provider: tuple[str, State]
) -> None:
    provider[1].fail_rate = 0.0
    page = await act(browser, "retry_run", "/workflows/runs/s1", run_id="s1")
    assert "Retrying run s1 at step charge" in page
    settle(blocked)
    assert blocked.get_run("s1").status == "completed" and len(provider[1].charges) == 1
    assert operator_acts(blocked, "retry_run") == [("operator", "ok", {"run_id": "s1"})]
    again = await act(browser, "retry_run", "/workflows/runs/s1", run_id="s1")
    assert "workflow.not_active" in again  # a finished run is not retried twice


async def test_resolving_an_unknown_effect_from_the_browser_records_the_providers_answer(
    browser: httpx2.AsyncClient, blocked: Runtime
) -> None:
    effect = blocked.list_effects(state="unknown")[0]
    refused = await act(
        browser,
        "resolve_effect",
        "/effects",
        effect_id=effect.effect_id,
        outcome="succeeded",
        response="{oops",
    )
    assert "must be JSON" in refused and blocked.get_run("s1").status == "blocked"
    page = await act(
        browser,
        "resolve_effect",
        "/effects",
        effect_id=effect.effect_id,
        outcome="succeeded",
        response='{"id": "ch_manual"}',
    )
    assert f"Effect {effect.effect_id} recorded as succeeded" in page
    settle(blocked)
    assert blocked.get_run("s1").status == "completed"
    assert blocked.query("select charge from sale").rows == [["ch_manual"]]
    assert operator_acts(blocked, "resolve_effect") == [
        ("operator", "ok", {"effect_id": effect.effect_id, "outcome": "succeeded"})
    ]
    assert "No effect is in an unknown state." in (await browser.get("/effects")).text


async def test_cancelling_a_waiting_run_from_the_browser_compensates_it(
    browser: httpx2.AsyncClient, blocked: Runtime
) -> None:
    deploy(blocked, [HOLD])
    blocked.start_workflow("hold", {"sku": "apple"}, run_id="h", actor="claude")
    settle(blocked)
    assert blocked.get_run("h").status == "waiting"
    assert "signal:confirmed" in (await browser.get("/workflows?status=waiting")).text
    page = await act(browser, "cancel_run", "/workflows/runs/h", run_id="h", reason="customer left")
    assert "Cancelling run h" in page
    settle(blocked)
    assert blocked.get_run("h").status == "cancelled"
    assert operator_acts(blocked, "cancel_run") == [
        ("operator", "ok", {"run_id": "h", "reason": "customer left"})
    ]
    finished = (await browser.get("/workflows/runs/h")).text
    assert "Cancel this run" not in finished and "reserve.compensation" in finished


async def test_undelivered_messages_are_listed_until_consumed(
    browser: httpx2.AsyncClient, blocked: Runtime, provider: tuple[str, State]
) -> None:
    assert "Every message has been delivered." in (await browser.get("/messages")).text
    provider[1].fail_rate = 0.0
    blocked.retry_run("s1")
    settle(blocked)
    waiting = (await browser.get("/messages")).text
    assert "sales" in waiting and "&#34;sale&#34;: &#34;s1&#34;" in waiting
    claimed = blocked.claim_messages("sales", consumer="desk")
    blocked.ack_messages([m.message_id for m in claimed.messages], consumer="desk")
    assert "Every message has been delivered." in (await browser.get("/messages")).text
    assert "acknowledged" in (await browser.get("/messages?all=1")).text
    assert (await browser.get("/messages?topic=x';")).status_code == 400
