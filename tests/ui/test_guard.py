"""Only the operator gets in, and nothing an agent wrote can act in the operator's browser: one-time
sign-in links, sessions, CSRF, the Host check and the security headers, exercised through the real
application in process (``httpx2.ASGITransport``); hostile strings render inert; every form control
is labelled; and the control room mounted beside ``/mcp`` keeps both doors shut to the wrong key."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_server.project import BackgroundRuntime, Project, init
from mcp_server.ui.app import ControlRoom
from mcp_server.ui.auth import LoginTokens, issue_token
from mcp_server.ui.cli import combined_app
from mcp_server.ui.pages import PAGES
from runtime.boundary.policy import add_agent
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.ui.conftest import page_path

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8766"
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
MEMO = {
    "name": "memo",
    "primary_key": ["id"],
    "description": HOSTILE,
    "fields": [
        {"name": "id", "type": "integer"},
        {"name": "body", "type": "text", "description": HOSTILE},
        {"name": "author", "type": "text", "nullable": True},
    ],
}
ACTION = {
    "name": "scribble",
    "kind": "mutation",
    "description": HOSTILE,
    "params": [{"name": "body", "type": "text"}],
    "statements": ["insert into memo (id, body) values (42, $body)"],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return init(tmp_path / "proj", agent="claude")


@pytest.fixture
def runtime(project: Project) -> Iterator[Runtime]:
    """The project's runtime with an app whose every agent-written string is hostile, a row that says so,
    and an agent's hazardous deploy waiting for approval."""
    rt = project.open()
    ops: list[dict[str, Any]] = [{"op": "add_entity", "entity": MEMO}, {"op": "add_action", "action": ACTION}]
    proposal = rt.propose(ops, note=HOSTILE, actor="claude")
    rt.dry_run(proposal.proposal_id, actor="claude")
    rt.deploy(proposal.proposal_id, actor="claude")
    rt.run_action("scribble", {"body": HOSTILE}, actor="claude")
    drop = rt.propose(
        [{"op": "drop_field", "entity": "memo", "field": "author"}], note=HOSTILE, actor="claude"
    )
    rt.dry_run(drop.proposal_id, actor="claude")
    with pytest.raises(ButtressError):
        rt.deploy(drop.proposal_id, actor="claude")
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def room(project: Project, runtime: Runtime) -> ControlRoom:
    return ControlRoom(project, lambda: runtime)


def client(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def signed_in(room: ControlRoom) -> AsyncIterator[httpx2.AsyncClient]:
    async with client(room.app) as browser:
        response = await browser.get(room.login_url(BASE))
        assert response.status_code == 303
        yield browser


def page_paths(runtime: Runtime) -> list[str]:
    return [page_path(page.path) for page in PAGES]


def tampered(token: str) -> str:
    """The token with the last character of its signature changed."""
    return token[:-1] + ("1" if token[-1] == "0" else "0")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def request_id_of(runtime: Runtime) -> str:
    return runtime.approval_requests()[0].request_id


async def test_a_sign_in_link_works_once_and_sets_a_strict_http_only_cookie(room: ControlRoom) -> None:
    link = room.login_url(BASE)
    async with client(room.app) as first, client(room.app) as second:
        signed = await first.get(link)
        again = await second.get(link)
        overview = await first.get("/")
    cookie = signed.headers["set-cookie"]
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert again.status_code == 401 and "not valid" in again.text
    assert overview.status_code == 200 and "Overview" in overview.text


@pytest.mark.parametrize("kind", ["missing", "forged", "expired", "tampered"])
async def test_a_missing_forged_expired_or_tampered_token_signs_nobody_in(
    room: ControlRoom, kind: str
) -> None:
    token = {
        "missing": "",
        "forged": "9999999999.nonce.0000",
        "expired": issue_token(ttl_s=-5),
        "tampered": tampered(issue_token()),
    }[kind]
    async with client(room.app) as browser:
        response = await browser.get(f"/login?token={token}")
        overview = await browser.get("/")
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert overview.status_code == 401


async def test_a_link_made_elsewhere_with_the_operator_secret_signs_in(room: ControlRoom) -> None:
    async with client(room.app) as browser:  # what `buttress ui --login` prints
        assert (await browser.get(f"/login?token={LoginTokens().issue()}")).status_code == 303
        assert (await browser.get("/approvals")).status_code == 200


async def test_an_agents_token_and_a_missing_session_open_no_page_and_no_act(
    project: Project, room: ControlRoom, runtime: Runtime
) -> None:
    token = add_agent(project.root / "buttress.toml", "web-agent", "developer")
    request_id = request_id_of(runtime)
    async with client(room.app) as agent:
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            for path in [*page_paths(runtime), "/live", "/nope"]:
                response = await agent.get(path, headers=headers)
                assert response.status_code == 401, path
                assert "memo" not in response.text and request_id not in response.text, path
            for act in ("approve", "refuse", "verify_audit"):
                response = await agent.post(f"/act/{act}", data={"request_id": request_id}, headers=headers)
                assert response.status_code == 401, act
            assert (await agent.post("/logout", headers=headers)).status_code == 401
    assert runtime.approval_requests()[0].status == "pending"


async def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    signed_in: httpx2.AsyncClient, runtime: Runtime
) -> None:
    request_id = request_id_of(runtime)
    csrf = csrf_of((await signed_in.get("/approvals")).text)
    attempts = [
        ({"request_id": request_id}, {}),
        ({"request_id": request_id, "csrf": "0" * 43}, {}),
        ({"request_id": request_id, "csrf": csrf}, {"Origin": "http://evil.example"}),
    ]
    for form, headers in attempts:
        response = await signed_in.post("/act/approve", data=form, headers=headers)
        assert response.status_code == 403, (form, headers)
    assert runtime.approval_requests()[0].status == "pending"

    done = await signed_in.post(
        "/act/approve",
        data={"request_id": request_id, "csrf": csrf, "next": "/approvals"},
        headers={"Origin": BASE},
    )
    assert done.status_code == 303 and done.headers["location"] == "/approvals"
    assert runtime.approval_requests()[0].status == "approved"
    page = await signed_in.get("/approvals")
    assert "Approved the deploy of proposal p2" in page.text
    runtime.flush_reads()
    assert [(e.actor, e.outcome) for e in runtime.read_audit(operation="approve")] == [("operator", "ok")]


async def test_an_act_returns_only_to_a_page_of_this_control_room(signed_in: httpx2.AsyncClient) -> None:
    csrf = csrf_of((await signed_in.get("/audit")).text)
    for target in ("//evil.example/x", "https://evil.example/", "\\\\evil"):
        response = await signed_in.post("/act/verify_audit", data={"csrf": csrf, "next": target})
        assert response.status_code == 303 and response.headers["location"] == "/"
    assert "Audit chain ok" in (await signed_in.get("/")).text


async def test_every_response_carries_the_security_headers(
    room: ControlRoom, signed_in: httpx2.AsyncClient
) -> None:
    async with client(room.app) as stranger:
        responses = [
            await signed_in.get("/"),
            await signed_in.get("/static/ui.css"),
            await stranger.get("/audit"),
        ]
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    assert responses[0].headers["cache-control"] == "no-store"
    assert responses[2].headers["cache-control"] == "no-store"


async def test_a_request_naming_another_host_is_refused(room: ControlRoom) -> None:
    async with client(room.app) as browser:
        response = await browser.get(room.login_url(BASE), headers={"Host": "rebound.example:8766"})
    assert response.status_code == 421


async def test_agent_written_strings_render_as_text(signed_in: httpx2.AsyncClient) -> None:
    paths = [
        "/",
        "/proposals",
        "/proposals/p1",
        "/proposals/p2",
        "/approvals",
        "/versions",
        "/versions/diff?from=0&to=1",
    ]
    paths += [
        "/data?table=memo",
        "/audit",
        "/data?sql=" + httpx2.URL(params={"s": f"select '{HOSTILE}' as x"}).query.decode()[2:],
    ]
    seen_escaped = 0
    for path in paths:
        html = (await signed_in.get(path)).text
        assert "<script>window.pwned" not in html and "<img src=x" not in html, path
        seen_escaped += "&lt;script&gt;window.pwned" in html
    assert seen_escaped >= 5


class _Controls(HTMLParser):
    """Form controls and the labels that name them."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label" and found.get("for"):
            self.labelled.add(str(found["for"]))
        if tag in {"input", "select", "textarea"} and found.get("type") != "hidden":
            self.controls.append(found)


async def test_every_form_control_has_a_label(signed_in: httpx2.AsyncClient, runtime: Runtime) -> None:
    for path in [*page_paths(runtime), "/data?table=memo"]:
        parser = _Controls()
        parser.feed((await signed_in.get(path)).text)
        unlabelled = [
            c for c in parser.controls if c.get("id") not in parser.labelled and not c.get("aria-label")
        ]
        assert unlabelled == [], path


async def test_bad_parameters_answer_400_and_unknown_pages_404(signed_in: httpx2.AsyncClient) -> None:
    assert (await signed_in.get("/audit?before=abc")).status_code == 400
    assert (await signed_in.get("/audit?outcome=weird")).status_code == 400
    assert (await signed_in.get("/proposals/x';drop")).status_code == 400
    assert (await signed_in.get("/proposals/p999")).status_code == 404
    assert (await signed_in.get("/versions/diff?from=0&to=999")).status_code == 404
    assert (await signed_in.get("/data?table=nope")).status_code == 400
    assert (await signed_in.get("/nowhere")).status_code == 404


async def test_signing_out_ends_the_session(signed_in: httpx2.AsyncClient) -> None:
    csrf = csrf_of((await signed_in.get("/")).text)
    assert (await signed_in.post("/logout", data={"csrf": csrf})).status_code == 200
    assert (await signed_in.get("/")).status_code == 401


async def test_beside_mcp_the_control_room_lives_under_ui_and_each_door_wants_its_own_key(
    project: Project,
) -> None:
    from mcp_server.server import build_server

    policy = project.policy()
    token = add_agent(project.root / "buttress.toml", "web-agent", "developer")
    policy = project.policy()
    runtime = BackgroundRuntime(project)
    runtime.start()
    try:
        server = build_server(runtime, agent="web-agent", policy=policy, require_tokens=True)
        app = combined_app(server, project, runtime, max_request_body_size=policy.limits.max_request_bytes)
        room: ControlRoom = app.state.control_room
        bearer = {"Authorization": f"Bearer {token}"}
        async with client(app) as browser, client(app) as agent:
            assert (await agent.get("/ui/", headers=bearer)).status_code == 401
            assert (
                await agent.post("/mcp", json={}, headers={"Accept": "application/json"})
            ).status_code == 401
            signed = await browser.get(room.login_url(f"{BASE}/ui"))
            assert signed.headers["location"] == "/ui/" and "Path=/ui/" in signed.headers["set-cookie"]
            overview = await browser.get("/ui/")
            assert overview.status_code == 200
            assert 'href="/ui/versions"' in overview.text and 'action="/ui/act/verify_audit"' in overview.text
            assert (await browser.get("/ui/live")).json()["version"] == 0
    finally:
        runtime.close()
