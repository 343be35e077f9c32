"""The control room as a Starlette application: routes, the guard in front of them, and rendering.

``ControlRoom(project, runtime)`` builds it for one project; ``room.app`` is the ASGI application
(``buttress ui`` serves it on 127.0.0.1; ``buttress serve --http --ui`` mounts it beside ``/mcp``)
and ``room.login_url(base)`` makes a one-time link to sign in.

Every request passes ``Guard`` first:

* a ``Host`` other than the loopback names is refused (no DNS rebinding);
* every response carries the security headers (``HEADERS``: a script-free-inline CSP, no framing,
  no referrer, and ``no-store`` for everything but the static assets);
* only ``/login`` and ``/static/`` are open; every other path needs a live session cookie (an
  ``Authorization`` header counts for nothing), else 401;
* every POST is read (at most ``MAX_FORM_BYTES``), its ``Origin`` must be this server, and its
  ``csrf`` field must match the session's token, else 403 — before any route runs.

Pages and acts come from ``pages.PAGES`` and ``pages.ACTS``; runtime calls run in worker threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.project import Project
from mcp_server.ui import pages
from mcp_server.ui.auth import LoginTokens, Session, Sessions
from runtime.api import RuntimeAPI
from runtime.errors import ButtressError, Code
from runtime.results import ActivityHead

logger = logging.getLogger(__name__)
T = TypeVar("T")

RuntimeSource = Callable[[], RuntimeAPI]
"""Where the runtime comes from: ``BackgroundRuntime.get`` (which re-attaches after the owner
changes), or ``lambda: runtime`` for one already open."""

HERE: Final = Path(__file__).resolve().parent
MAX_FORM_BYTES: Final = 64 * 1024
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "[::1]"})
OPEN_PATHS: Final = ("/login", "/static/")
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
STATUS: Final = {
    Code.NOT_FOUND: 404,
    Code.POLICY_DENIED: 403,
    Code.ENGINE_BUSY: 503,
    Code.ENGINE_LOCKED: 503,
    Code.ENGINE_OWNER_GONE: 503,
}


def cookie_name(project: Project) -> str:
    """The session cookie's name, distinct per project (cookies do not tell ports apart)."""
    return "buttress_ui_" + hashlib.sha256(str(project.root).encode()).hexdigest()[:10]


def route_path(scope: Scope) -> str:
    """The request's path below the application's mount point."""
    path = str(scope.get("path", "/"))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def live_state(head: ActivityHead) -> str:
    """What the pages compare to know something happened: a new version, agent call, open approval
    request or unknown effect."""
    return f"{head.version}:{head.agent_seq}:{head.pending_approvals}:{head.unknown_effects}"


def hostname(host: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]`` keeps its brackets)."""
    return host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]


class Guard:
    """Host check, security headers, sessions and CSRF in front of every route (see the module)."""

    def __init__(
        self, app: ASGIApp, *, sessions: Sessions, cookie: str, render: Callable[..., Response]
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.cookie = cookie
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        cache = b"public, max-age=3600" if path.startswith("/static/") else b"no-store"

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message["headers"] = [*headers, *HEADERS, (b"cache-control", cache)]
            await send(message)

        request = Request(scope)
        if hostname(request.headers.get("host") or "") not in LOOPBACK:
            await PlainResponse("unknown host", 421)(scope, receive, secured)
            return
        if path == "/login" or path.startswith("/static/"):
            await self.app(scope, receive, secured)
            return
        session = self.sessions.get(request.cookies.get(self.cookie))
        if session is None:
            response = (
                JSONResponse({"error": "sign in first"}, 401)
                if path == "/live"
                else self.render(request, "signin.html", {"reason": "missing"}, status=401)
            )
            await response(scope, receive, secured)
            return
        scope["buttress.session"] = session
        if scope["method"] not in {"GET", "HEAD"}:
            origin = request.headers.get("origin")
            if origin is not None and origin.split("//", 1)[-1] != request.headers.get("host"):
                await PlainResponse("cross-origin request refused", 403)(scope, receive, secured)
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > MAX_FORM_BYTES:
                    await PlainResponse("request too large", 413)(scope, receive, secured)
                    return
                if not message.get("more_body"):
                    break
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            if not session.csrf_ok(form.get("csrf")):
                await PlainResponse("missing or wrong CSRF token: reload the page and try again", 403)(
                    scope, receive, secured
                )
                return
            scope["buttress.form"] = form
        await self.app(scope, receive, secured)


class PlainResponse(Response):
    media_type = "text/plain; charset=utf-8"


class ControlRoom:
    """The control room of one project, over a runtime (opened here or attached to its owner)."""

    def __init__(
        self,
        project: Project,
        runtime: RuntimeSource,
        *,
        tokens: LoginTokens | None = None,
        sessions: Sessions | None = None,
        poll_ms: int = 3000,
    ) -> None:
        self.project = project
        self.runtime = runtime
        self.tokens = tokens or LoginTokens()
        self.sessions = sessions or Sessions()
        self.room = pages.Room()
        self.cookie = cookie_name(project)
        self.poll_ms = poll_ms
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.templates.filters["pretty"] = lambda value: json.dumps(
            value, indent=2, default=str, sort_keys=True
        )
        self.templates.filters["compact"] = lambda value: json.dumps(value, default=str, sort_keys=True)
        self.templates.filters["when"] = lambda value: str(value or "")[:19].replace("T", " ")
        self.templates.globals["query"] = lambda **values: urlencode({k: v for k, v in values.items() if v})
        routes: list[Route | Mount] = [
            Route("/login", self.login, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/live", self.live, methods=["GET"]),
            Route("/act/{name}", self.act, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        routes += [Route(page.path, self._page_endpoint(page), methods=["GET"]) for page in pages.PAGES]
        self.app = Guard(
            Starlette(routes=routes, exception_handlers={404: self.not_found}),
            sessions=self.sessions,
            cookie=self.cookie,
            render=self.render,
        )

    def login_url(self, base: str) -> str:
        """A new one-time link that signs a browser in (``base``: where the control room is served)."""
        return f"{base.rstrip('/')}/login?token={self.tokens.issue()}"

    # rendering --------------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, context: Mapping[str, Any], *, status: int = 200
    ) -> HTMLResponse:
        page = self.templates.get_template(template).render(
            {
                "root": str(request.scope.get("root_path", "")),
                "project_name": self.project.root.name,
                "poll_ms": self.poll_ms,
                **context,
            }
        )
        return HTMLResponse(page, status_code=status)

    def _context(
        self, request: Request, session: Session, runtime: RuntimeAPI, page: pages.Page
    ) -> dict[str, Any]:
        head = runtime.activity_head()
        here = route_path(request.scope) + (f"?{request.url.query}" if request.url.query else "")
        return {
            "current": page,
            "nav": [p for p in pages.PAGES if p.nav],
            "head": head,
            "state": live_state(head),
            "csrf": session.csrf,
            "here": here,
            "flashes": session.take_flashes(),
        }

    def _page_endpoint(self, page: pages.Page) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            session: Session = request.scope["buttress.session"]

            def build() -> Response:
                def load(runtime: RuntimeAPI) -> dict[str, Any]:
                    view = pages.View(
                        runtime=runtime,
                        query=dict(request.query_params),
                        params=dict(request.path_params),
                        room=self.room,
                    )
                    loaded, shared = page.load(view), self._context(request, session, runtime, page)
                    if clash := loaded.keys() & shared.keys():  # a page's variable would hide the layout's
                        raise RuntimeError(f"page {page.name} defines {sorted(clash)}, which the layout uses")
                    return {**loaded, **shared}

                try:
                    context = self._with_runtime(load)
                except pages.BadRequest as error:
                    return self._problem(request, 400, "This page cannot be shown", str(error))
                except ButtressError as error:
                    return self._problem(
                        request, STATUS.get(error.code, 400), error.message, error.hint, error
                    )
                return self.render(request, f"{page.name}.html", context)

            return await anyio.to_thread.run_sync(build)

        endpoint.__name__ = f"page_{page.name}"
        return endpoint

    def _problem(
        self, request: Request, status: int, title: str, detail: str, error: ButtressError | None = None
    ) -> Response:
        return self.render(
            request,
            "problem.html",
            {
                "nav": [p for p in pages.PAGES if p.nav],
                "title": title,
                "detail": detail,
                "code": str(error.code) if error else None,
            },
            status=status,
        )

    def _with_runtime(self, call: Callable[[RuntimeAPI], T]) -> T:
        """Run ``call`` on the runtime; once more if the process that owned the project went away
        (the second try attaches to the new owner, or opens the project here)."""
        try:
            return call(self.runtime())
        except ButtressError as error:
            if error.code != Code.ENGINE_OWNER_GONE:
                raise
        return call(self.runtime())

    # routes -----------------------------------------------------------------------------------

    async def not_found(self, request: Request, _: Exception) -> Response:
        return self._problem(request, 404, "No such page", "Use the navigation to find what you are after.")

    async def login(self, request: Request) -> Response:
        """Redeem a one-time token for a session cookie, then go to the overview."""
        token = request.query_params.get("token") or ""
        if not self.tokens.redeem(token):
            return self.render(
                request, "signin.html", {"reason": "invalid" if token else "missing"}, status=401
            )
        session = self.sessions.create()
        root = str(request.scope.get("root_path", ""))
        response = RedirectResponse(f"{root}/", status_code=303)
        response.set_cookie(
            self.cookie, session.id, path=f"{root}/", httponly=True, samesite="strict", secure=False
        )
        return response

    async def logout(self, request: Request) -> Response:
        session: Session = request.scope["buttress.session"]
        self.sessions.end(session.id)
        root = str(request.scope.get("root_path", ""))
        response = self.render(request, "signin.html", {"reason": "signed_out"}, status=200)
        response.delete_cookie(self.cookie, path=f"{root}/", httponly=True, samesite="strict")
        return response

    async def live(self, request: Request) -> Response:
        """What changed lately (polled by the pages): version, newest agent entry, open approvals."""
        try:
            head = await anyio.to_thread.run_sync(lambda: self._with_runtime(lambda rt: rt.activity_head()))
        except ButtressError as error:
            return JSONResponse({"error": error.to_dict()}, STATUS.get(error.code, 503))
        return JSONResponse({**head.model_dump(), "state": live_state(head)})

    async def act(self, request: Request) -> Response:
        """Run one operator act from a form, then return to the page it was posted from."""
        session: Session = request.scope["buttress.session"]
        form: dict[str, str] = request.scope["buttress.form"]
        root = str(request.scope.get("root_path", ""))
        back = form.get("next") or "/"
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/"
        found = pages.ACTS.get(request.path_params["name"])
        if found is None:
            return PlainResponse("no such act", 404)
        act = found

        def run() -> pages.Flash:
            def call(runtime: RuntimeAPI) -> pages.Flash:
                return act.run(pages.View(runtime=runtime, query={}, params={}, room=self.room, form=form))

            try:
                return self._with_runtime(call)
            except pages.BadRequest as error:
                return pages.Flash("error", str(error))
            except ButtressError as error:
                return pages.Flash("error", f"{error.code}: {error.message} {error.hint}")

        flash = await anyio.to_thread.run_sync(run)
        session.flash(flash.kind, flash.text)
        return RedirectResponse(f"{root}{back}", status_code=303)
