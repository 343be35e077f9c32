"""``buttress ui``: the control room, served on 127.0.0.1, registered by ``mcp_server.cli``
(``FEATURE_COMMANDS``).

    buttress ui [--project DIR] [--port N]     serve it; print a one-time sign-in link
    buttress ui --login [--project DIR]        print a new sign-in link for the running one

The control room is one of the operator's long-lived servers: it attaches to the process that owns
the project, or, when none does, owns it itself (serving the project's other processes over the
socket and running the scheduler, so an agent's ``buttress serve`` started later attaches to it).

``serve_beside_mcp`` is the other way in: ``buttress serve --http --ui`` mounts the control room at
``/ui`` on the MCP server's own port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from runtime.errors import Code, ConfigError, NotFound

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.applications import Starlette

    from mcp_server.project import BackgroundRuntime, Project

DEFAULT_PORT: Final = 8766
MOUNT: Final = "/ui"


def register(commands: Any, parents: Any) -> None:
    """Add ``buttress ui`` to ``commands`` (an argparse subparsers action)."""
    text = "serve the control room (a local web app for the operator) on 127.0.0.1"
    ui = commands.add_parser("ui", parents=[parents.project], help=text, description=text)
    ui.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default: {DEFAULT_PORT}; 0: any free one)",
    )
    ui.add_argument(
        "--login",
        action="store_true",
        help="print a new one-time sign-in link for the control room already running on this project, and exit",
    )
    ui.set_defaults(command=cmd_ui)


def marker_path(project: Project) -> Path:
    """Where a running control room notes its address (for ``--login``): ``.buttress/ui.json``."""
    return project.cache_dir / "ui.json"


def cmd_ui(args: argparse.Namespace) -> int:
    """``buttress ui``: serve the control room until interrupted (or, with ``--login``, print a link)."""
    from mcp_server.project import Project

    project = Project.load(args.project)
    if args.login:
        print(new_login_url(project))
        return 0
    listener = _listen(args.port)
    port = int(listener.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    serve(project, listener, base)
    return 0


def serve(project: Project, listener: socket.socket, base: str) -> None:
    """Serve the control room of ``project`` on ``listener`` until interrupted."""
    import uvicorn

    from mcp_server.channel import ClientInfo
    from mcp_server.project import BackgroundRuntime
    from mcp_server.ui.app import ControlRoom

    runtime = BackgroundRuntime(project, own="ui", client=ClientInfo("operator", "ui"))
    runtime.start()
    room = ControlRoom(project, runtime.get)
    _write_marker(project, base)
    print(f"buttress: control room for {project.root} on {base}/", flush=True)
    print(f"  sign in (one-time link, valid 10 minutes): {room.login_url(base)}", flush=True)
    print(f"  another link later: buttress ui --login --project {project.root}", flush=True)
    config = uvicorn.Config(room.app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        _remove_marker(project)
        runtime.close()


def serve_beside_mcp(
    server: MCPServer[Any],
    project: Project,
    runtime: BackgroundRuntime,
    *,
    port: int,
    max_request_body_size: int,
) -> None:
    """``buttress serve --http --ui``: the MCP endpoint at ``/mcp`` and the control room at ``/ui`` on one
    port of 127.0.0.1 (``port`` 0: any free one). Prints the control room's one-time sign-in link on
    stderr."""
    import uvicorn

    listener = _listen(port)
    origin = f"http://127.0.0.1:{int(listener.getsockname()[1])}"
    app = combined_app(server, project, runtime, max_request_body_size=max_request_body_size)
    base = f"{origin}{MOUNT}"
    room = app.state.control_room
    _write_marker(project, base)
    print(
        f"buttress: MCP on {origin}/mcp and the control room on {base}/\n"
        f"  sign in (one-time link, valid 10 minutes): {room.login_url(base)}\n"
        f"  another link later: buttress ui --login --project {project.root}",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        _remove_marker(project)


def combined_app(
    server: MCPServer[Any], project: Project, runtime: BackgroundRuntime, *, max_request_body_size: int
) -> Starlette:
    """The MCP server's streamable HTTP app with the control room mounted at ``/ui`` (its
    ``state.control_room``). Agents' bearer tokens still guard ``/mcp``; they open nothing under ``/ui``."""
    from starlette.routing import Mount

    from mcp_server.ui.app import ControlRoom

    app = server.streamable_http_app(host="127.0.0.1", max_request_body_size=max_request_body_size)
    room = ControlRoom(project, runtime.get)
    app.router.routes.append(Mount(MOUNT, app=room.app))
    app.state.control_room = room
    return app


def new_login_url(project: Project) -> str:
    """A one-time sign-in link for the control room running on ``project`` (signed with the operator
    secret, which this process must be able to read)."""
    from mcp_server.ui.auth import issue_token

    path = marker_path(project)
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        base, pid = str(marker["base"]), int(marker["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        raise NotFound(
            "control room",
            str(project.root),
            hint=f"Start one with `buttress ui --project {project.root}`; it prints a sign-in link.",
        ) from None
    return f"{base}/login?token={issue_token()}"


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as error:
        listener.close()
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"cannot listen on 127.0.0.1:{port}: {error.strerror}",
            hint="Pass another --port (0 picks a free one), or stop what holds this one.",
            details={"port": port},
        ) from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def _write_marker(project: Project, base: str) -> None:
    path = marker_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"base": base, "pid": os.getpid()}), encoding="utf-8")
    temporary.replace(path)


def _remove_marker(project: Project) -> None:
    path = marker_path(project)
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(path.read_text(encoding="utf-8"))["pid"] == os.getpid():
            path.unlink()
