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

Pages and acts come from ``pages.PAGES`` and ``pages.ACTS``; ``/data/export`` answers a table's
matching rows (or a SELECT's) as CSV or JSON. Runtime calls run in worker threads. A page that cannot
be shown, or an act that fails, is explained for a person (``present.for_people``) with the
navigation around it; a failed act's typed fields are kept for the page it returns to.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
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
from mcp_server.ui import pages, present
from mcp_server.ui.auth import LoginTokens, Session, Sessions
from runtime.api import RuntimeAPI
from runtime.errors import ButtressError, Code
from runtime.results import ActivityHead, QueryResult

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
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
"""A CSV cell of text starting with one of these is written with a leading ``'``: a spreadsheet
opening the export reads it as text, never as a formula."""


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
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            form = dict(pairs)
            if not session.csrf_ok(form.get("csrf")):
                await PlainResponse("missing or wrong CSRF token: reload the page and try again", 403)(
                    scope, receive, secured
                )
                return
            scope["buttress.form"] = form
            scope["buttress.form_all"] = pairs
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
        self.templates.filters["duration"] = present.duration
        self.templates.filters["summary"] = present.argument_summary
        self.templates.globals["query"] = lambda **values: urlencode({k: v for k, v in values.items() if v})
        self.templates.globals["link"] = link
        self.templates.globals["tone"] = present.tone
        self.templates.globals["stage"] = present.stage
        self.templates.globals["refusal_message"] = present.refusal_message
        self.templates.globals["tone_words"] = present.TONE_WORDS
        self.templates.globals["filter_params"] = pages.filter_params
        routes: list[Route | Mount] = [
            Route("/login", self.login, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/live", self.live, methods=["GET"]),
            Route("/act/{name}", self.act, methods=["POST"]),
            Route("/data/export", self.export, methods=["GET"]),
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
            "drafts": session.take_drafts(),
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
                        query_all=request.query_params.multi_items(),
                    )
                    loaded, shared = page.load(view), self._context(request, session, runtime, page)
                    if clash := loaded.keys() & shared.keys():  # a page's variable would hide the layout's
                        raise RuntimeError(f"page {page.name} defines {sorted(clash)}, which the layout uses")
                    return {**loaded, **shared}

                try:
                    context = self._with_runtime(load)
                except pages.BadRequest as error:
                    problem = present.Problem("This page cannot be shown", str(error), "", None)
                    return self._problem(request, 400, problem, page)
                except ButtressError as error:
                    problem = present.for_people(error, f"show this {page.title.lower()}")
                    return self._problem(request, STATUS.get(error.code, 400), problem, page)
                return self.render(request, f"{page.name}.html", context)

            return await anyio.to_thread.run_sync(build)

        endpoint.__name__ = f"page_{page.name}"
        return endpoint

    def _problem(
        self, request: Request, status: int, problem: present.Problem, page: pages.Page | None = None
    ) -> Response:
        """A page explaining what could not be shown, for a person, inside the usual header and
        navigation (when the runtime can still say what the header shows)."""
        session: Session | None = request.scope.get("buttress.session")
        context: dict[str, Any] = {
            "problem": problem,
            "page": page,
            "parent": next((p for p in pages.PAGES if page is not None and p.name == page.parent), page),
            "nav": [p for p in pages.PAGES if p.nav],
            "head": None,
            "state": "",
            "csrf": session.csrf if session else "",
            "here": "/",
            "flashes": session.take_flashes() if session else [],
            "drafts": {},
            "current": page or pages.PAGES[0],
            "signed_in": session is not None,
        }
        if session is not None:
            try:
                head = self._with_runtime(lambda rt: rt.activity_head())
                context.update(head=head, state=live_state(head))
            except ButtressError:
                pass
        return self.render(request, "problem.html", context, status=status)

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
        problem = present.Problem(
            "No such page",
            f"Nothing lives at {route_path(request.scope)[:200]}.",
            "Use the navigation.",
            None,
        )
        return await anyio.to_thread.run_sync(lambda: self._problem(request, 404, problem))

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
        """Run one operator act from a form, then return to the page it was posted from (with what was
        typed kept, and the error named, when it failed)."""
        session: Session = request.scope["buttress.session"]
        form: dict[str, str] = request.scope["buttress.form"]
        pairs: list[tuple[str, str]] = request.scope.get("buttress.form_all", [])
        root = str(request.scope.get("root_path", ""))
        back = form.get("next") or "/"
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/"
        found = pages.ACTS.get(request.path_params["name"])
        if found is None:
            return PlainResponse("no such act", 404)
        act = found

        def run() -> tuple[pages.Flash, str | None]:
            def call(runtime: RuntimeAPI) -> pages.Flash:
                view = pages.View(
                    runtime=runtime, query={}, params={}, room=self.room, form=form, form_all=pairs
                )
                return act.run(view)

            try:
                return self._with_runtime(call), None
            except pages.BadRequest as error:
                return pages.Flash("error", f"Could not {act.what(form)}: {error}"), str(error)
            except ButtressError as error:
                problem = present.for_people(error, act.what(form))
                text = f"{problem.title}: {problem.text}" + (f" {problem.advice}" if problem.advice else "")
                text += f" ({problem.code})" if problem.code else ""
                return pages.Flash("error", text), text

        flash, failure = await anyio.to_thread.run_sync(run)
        session.flash(flash.kind, flash.text)
        key = act.draft(form)
        if failure is not None and key is not None:
            kept = {k: v for k, v in form.items() if k not in {"csrf", "next"}}
            session.keep_draft(key, {**kept, "_error": failure})
        return RedirectResponse(f"{root}{back}", status_code=303)

    async def export(self, request: Request) -> Response:
        """A table's matching rows (the Data page's filters and sort) or a SELECT's rows, as CSV or
        JSON, as many as the query limits allow (the response says when more matched)."""
        params = request.query_params
        fmt = params.get("format") or "csv"
        if fmt not in {"csv", "json"}:
            return PlainResponse("format must be csv or json", 400)

        def read(runtime: RuntimeAPI) -> tuple[str, QueryResult]:
            view = pages.View(
                runtime=runtime,
                query=dict(params),
                params={},
                room=self.room,
                query_all=params.multi_items(),
            )
            _, spec = runtime.current
            table = pages.table_name(view.query, spec)
            if table is not None:
                exported = runtime.export_data(
                    table,
                    filters=pages.data_filters(view),
                    sort=pages.name_param(view.query, "sort", "column"),
                    descending=view.query.get("desc") == "1",
                )
                return table, exported
            sql = (params.get("sql") or "").strip()
            if not sql:
                raise pages.BadRequest("say what to export: a table, or a SELECT")
            return "query", runtime.query(sql)

        try:
            name, result = await anyio.to_thread.run_sync(lambda: self._with_runtime(read))
        except pages.BadRequest as error:
            return PlainResponse(str(error), 400)
        except ButtressError as error:
            problem = present.for_people(error, "export")
            return PlainResponse(f"{problem.text} {problem.advice}".strip(), STATUS.get(error.code, 400))
        headers = {
            "content-disposition": f'attachment; filename="{name}.{fmt}"',
            "x-buttress-truncated": "true" if result.truncated else "false",
        }
        if fmt == "json":
            body = json.dumps(
                {
                    "table": name,
                    "columns": result.columns,
                    "rows": [dict(zip(result.columns, row, strict=True)) for row in result.rows],
                    "row_count": result.row_count,
                    "truncated": result.truncated,
                },
                default=str,
            )
            return Response(body, media_type="application/json", headers=headers)
        return Response(
            csv_text(result.columns, result.rows), media_type="text/csv; charset=utf-8", headers=headers
        )


def link(path: str, *pairs: Iterable[tuple[str, Any]] | Mapping[str, Any], **values: Any) -> str:
    """``path`` with a query string made of ``pairs`` (mappings, or lists of name and value with
    repeated names kept) and ``values``; empty values (None, "", False) are left out."""
    items = [
        (k, v) for group in pairs for k, v in (group.items() if isinstance(group, Mapping) else group)
    ] + list(values.items())
    kept = [(k, "1" if v is True else str(v)) for k, v in items if v not in (None, "", False)]
    return f"{path}?{urlencode(kept)}" if kept else path


def csv_text(columns: list[str], rows: Iterable[list[Any]]) -> str:
    """Rows as CSV; JSON values as JSON, NULL as an empty cell, and text a spreadsheet would take for
    a formula with a leading ``'`` (``FORMULA_START``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str, sort_keys=True)
    text = str(value)
    return "'" + text if isinstance(value, str) and text.startswith(FORMULA_START) else text
