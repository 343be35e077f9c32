"""The ``buttress`` command line: the operator's projection of the same runtime operations the tools
project for agents. Each command resolves the project's runtime (through the running server when one
owns the project, else by opening the database itself), calls one runtime method, prints a readable
result (or JSON with ``--json``) and exits 0; or prints ``error [code]: message`` with a hint and
exits 1.

    buttress init [DIR]                        create a project (buttress.toml + app.duckdb)
    buttress serve [--http --port N]           serve the MCP tools (stdio by default)
    buttress status                            who owns the project, and who is attached to it
    buttress demo                              the scripted agent demo in a throwaway project
    buttress describe | versions | proposals   look at the application
    buttress diff A B                          compare the specs of two versions
    buttress query SQL [--param k=v]           one read-only SELECT
    buttress run ACTION [--arg k=v]            run a deployed action
    buttress propose FILE.json                 plan a change
    buttress dry-run ID | deploy ID            execute a plan (rolled back) | apply it
    buttress rollback [--to N]                 roll back, losslessly
    buttress finalize --before N               discard retained data (irreversible)
    buttress approve REQUEST                   approve an agent's hazardous deploy or rollback
    buttress token AGENT [--role R] [--rotate] an HTTP bearer token for an agent (rotate keeps its role)
    buttress audit verify | show | reanchor    the hash-chained audit log
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic import BaseModel, TypeAdapter

from mcp_server import project as projects
from runtime.errors import ButtressError, Code, ConfigError, PolicyError

if TYPE_CHECKING:
    from mcp_server.owner import OwnerKind
    from runtime.api import RuntimeAPI
    from tools.base import ToolSpec

Command = Callable[[argparse.Namespace], int]

OPERATOR = "operator"
"""The actor of the operator's own commands (``runtime.api.OPERATOR``; not imported, to keep the
parser's start-up cheap)."""

DEFAULT_ROLE = "developer"
"""The role ``buttress token`` gives a new agent when ``--role`` is not given."""

BROKEN_PIPE = 141
"""The exit code of a command whose reader went away (``buttress … | head``): 128 + SIGPIPE, as a
shell reports a command killed by it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``buttress`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "command", None)
    if command is None:  # a bare `buttress`
        parser.print_help()
        return 0
    try:
        check_actor(args)
        code = command(args)
        sys.stdout.flush()  # a reader that went away is noticed here, not at interpreter exit
        return code
    except ButtressError as error:
        print_error(error)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (``head``) has what it wanted. Point stdout at /dev/null so that the interpreter's
        # last flush does not raise again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE


def check_actor(args: argparse.Namespace) -> None:
    """An operator-only command (approve, finalize, runs retry, effects resolve, …) acts as the
    operator: ``--actor`` naming anyone else is refused, so an agent's name is never written as the
    one who decided."""
    command = getattr(args, "operator_only", None)
    actor = getattr(args, "actor", OPERATOR)
    if command is not None and actor != OPERATOR:
        raise PolicyError(
            Code.POLICY_DENIED,
            f"`buttress {command}` is the operator's command: it acts as the operator, not as {actor!r}",
            hint="Drop --actor. Only the operator approves, finalizes, retries runs and resolves effects; "
            "an agent with the capability does it through its own MCP tools, under its own name.",
            details={"command": command, "actor": actor},
        )


def print_error(error: ButtressError) -> None:
    """Print ``error [code]: message`` and its hint (and details) on stderr."""
    lines = [f"error [{error.code}]: {error.message}", f"  hint: {error.hint}"]
    if error.details:
        lines.append("  details: " + json.dumps(error.details, default=str)[:2000])
    print("\n".join(lines), file=sys.stderr)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("buttress")
    except PackageNotFoundError:
        return "0.0.0"


# -------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``buttress`` argument parser; each command sets ``command`` to its function."""
    parser = argparse.ArgumentParser(
        prog="buttress",
        description="A transactional runtime for agent-built applications, served over MCP, on DuckDB. "
        "Every command works whether or not a `buttress serve` owns the project.",
    )
    parser.add_argument("--version", action="version", version=f"buttress {version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("--project", default=".", metavar="DIR", help="the project directory (default: .)")
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", default=OPERATOR, help="act as this agent, by name (default: the operator)")
    operator = argparse.ArgumentParser(add_help=False)
    operator.add_argument(
        "--actor",
        default=OPERATOR,
        help="the operator only: this command always acts as the operator (an agent's name is refused)",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the result as JSON")

    def add(
        name: str, command: Command, text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=list(parents), help=text, description=text)
        sub.set_defaults(command=command)
        return sub

    init = add(
        "init",
        cmd_init,
        "create a project: DIR/buttress.toml and DIR/app.duckdb (an existing project is left as it is)",
        project,
    )
    init.add_argument(
        "dir", metavar="DIR", nargs="?", help="the project directory (or --project DIR; default: .)"
    )
    init.add_argument(
        "--agent", help=f"the agent `serve` speaks for over stdio (default: {projects.DEFAULT_AGENT})"
    )
    init.add_argument(
        "--engine",
        choices=projects.ENGINES,
        default="duckdb",
        help="duckdb (a file in DIR, the default) or postgres (a database several servers share; its "
        "connection string is read from --url-env)",
    )
    init.add_argument(
        "--url-env",
        default=projects.DEFAULT_URL_ENV,
        help=f"with --engine postgres: the environment variable holding the connection string "
        f"(default: {projects.DEFAULT_URL_ENV})",
    )

    serve = add(
        "serve", cmd_serve, "serve the MCP tools (stdio by default); attaches if a server runs", project
    )
    serve.add_argument(
        "--agent", help="agent name for the audit log (default: [server] agent in buttress.toml)"
    )
    serve.add_argument(
        "--http", action="store_true", help="serve streamable HTTP on 127.0.0.1 instead of stdio"
    )
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (default: 8765)")
    serve.add_argument(
        "--ui",
        action="store_true",
        help="with --http: also serve the control room at /ui on the same port (prints a sign-in link)",
    )
    serve.add_argument("--demo-seed", action="store_true", help=argparse.SUPPRESS)
    add("status", cmd_status, "who owns the project (pid, kind, memory) and who is attached", project, output)
    owner = commands.add_parser("owner", parents=[project])  # the project daemon; `serve` starts it
    owner.set_defaults(command=cmd_owner)

    add("demo", cmd_demo, "run a scripted agent against a throwaway project")
    add(
        "describe",
        cmd_describe,
        "the current version: entities, invariants, views, actions, drift",
        project,
        output,
    )
    add("versions", cmd_versions, "list versions", project, output)
    proposals = add("proposals", cmd_proposals, "list proposals and where each stands", project, output)
    proposals.add_argument("--pending", action="store_true", help="only those on the current version")
    diff = add("diff", cmd_diff, "compare the specs of two versions", project, output)
    diff.add_argument("from_version", type=int, metavar="A")
    diff.add_argument("to_version", type=int, metavar="B")

    query = add("query", cmd_query, "run one read-only SELECT", project, output)
    query.add_argument("sql", metavar="SQL")
    query.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a $NAME value (JSON or text)"
    )
    query.add_argument("--limit", type=int, help="most rows (default and ceiling: max_rows)")

    run = add("run", cmd_run, "run a deployed action", project, actor, output)
    run.add_argument("action", metavar="ACTION")
    run.add_argument(
        "--arg", action="append", default=[], metavar="NAME=VALUE", help="an argument (JSON or text)"
    )
    run.add_argument(
        "--key", dest="idempotency_key", help="an idempotency key (a retry returns the first result)"
    )
    run.set_defaults(hands_over=True)  # an action's emits may start runs: the daemon carries them on

    propose = add("propose", cmd_propose, "propose operations from a JSON file", project, actor, output)
    propose.add_argument(
        "file", metavar="FILE.json", help='a JSON list of operations (or {"operations": [...]})'
    )
    propose.add_argument("--base-version", type=int)
    propose.add_argument("--note")
    for name, command, text in (
        ("dry-run", cmd_dry_run, "dry-run a proposal (nothing changes)"),
        ("deploy", cmd_deploy, "deploy a proposal whose dry-run passed"),
    ):
        add(name, command, text, project, actor, output).add_argument("proposal_id", metavar="ID")
    redeploy = add(
        "redeploy",
        cmd_redeploy,
        "propose rolling forward to a version whose history extends the current one",
        project,
        actor,
        output,
    )
    redeploy.add_argument("version", type=int, metavar="N")
    redeploy.add_argument("--note")
    rollback = add(
        "rollback", cmd_rollback, "roll back to an earlier version, losslessly", project, actor, output
    )
    rollback.add_argument(
        "--to", type=int, dest="to_version", metavar="N", help="default: the previous version"
    )
    finalize = add(
        "finalize",
        cmd_finalize,
        "discard data retained by versions before N: rollbacks that need it are refused afterwards",
        project,
        operator,
        output,
    )
    finalize.set_defaults(operator_only="finalize")
    finalize.add_argument("--before", type=int, required=True, metavar="N")
    finalize.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    approve = add(
        "approve",
        cmd_approve,
        "approve an agent's pending hazardous deploy or rollback",
        project,
        operator,
        output,
    )
    approve.set_defaults(operator_only="approve")
    approve.add_argument("request", metavar="REQUEST", help="the request id from deploy.needs_approval")
    approve.add_argument("--yes", action="store_true", help="approve without asking")
    token = add("token", cmd_token, "create (or --rotate) an HTTP bearer token for an agent", project, output)
    token.add_argument("agent", metavar="AGENT")
    token.add_argument(
        "--role",
        help=f"give the agent this role (a new agent: default {DEFAULT_ROLE}; an existing one keeps its "
        "role unless this is given)",
    )
    token.add_argument(
        "--rotate", action="store_true", help="replace the agent's existing token (its role and keys kept)"
    )

    audit = commands.add_parser("audit", help="verify, show or re-anchor the audit log")
    audit_commands = audit.add_subparsers(title="audit commands", required=True, metavar="COMMAND")
    audit_commands.add_parser(
        "verify",
        parents=[project, output],
        help="recompute the hash chain and check the anchor; exit 1 if broken",
    ).set_defaults(command=cmd_audit_verify)
    show = audit_commands.add_parser("show", parents=[project, output], help="print recent entries")
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--operation", help="only this operation")
    show.add_argument("--follow", action="store_true", help="keep printing new entries until interrupted")
    show.set_defaults(command=cmd_audit_show)
    reanchor = audit_commands.add_parser(
        "reanchor",
        parents=[project, operator],
        help="anchor the chain as it is now, after reading why verify failed",
    )
    reanchor.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reanchor.set_defaults(command=cmd_audit_reanchor, operator_only="audit reanchor")
    for name in FEATURE_COMMANDS:
        importlib.import_module(name).register(commands, Parents(project, actor, output, operator))
    return parser


@dataclass(frozen=True)
class Parents:
    """The shared option groups a feature's commands may inherit (``--project``, ``--actor``, ``--json``).

    ``operator`` is ``--actor`` for an operator-only command: set ``operator_only`` to the command's
    name in its defaults too, and ``main`` refuses an actor other than the operator."""

    project: argparse.ArgumentParser
    actor: argparse.ArgumentParser
    output: argparse.ArgumentParser
    operator: argparse.ArgumentParser


OWN_COMMANDS: Final = frozenset(
    {"init", "serve", "owner", "status", "demo", "token", "ui", "eval list", "eval run", "eval check"}
)
"""The commands that call no runtime operation: they set a project up, serve it, report on its owner,
or evaluate agents. Every other command calls the operations whose declaration names it
(``@operation(..., cli=...)``); ``tests/test_registry.py`` checks the two account for every command."""


def command_paths(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every command ``parser`` runs, as typed (``"runs retry"``): the leaves of its subcommands."""
    found: set[str] = set()
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                found |= command_paths(sub, path) or {path}
    return found


FEATURE_COMMANDS: tuple[str, ...] = ("mcp_server.workflows_cli", "mcp_server.ui.cli", "mcp_server.evals.cli")
"""Modules whose ``register(commands, parents)`` adds the commands that live with their feature (they
import what they need only when run, so building the parser stays cheap)."""


# ---------------------------------------------------------------------------------------- plumbing


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[RuntimeAPI]:
    """The project's runtime for one command: through the process that owns the project when one runs;
    else opened here (and closed, checkpointed, when the command is done) — except for commands that
    set work in motion (``needs_owner``), which start the project daemon and act through it. A command
    that ``hands_over`` and leaves work due (its action started a run) starts the daemon after it."""
    from mcp_server import owner

    project = projects.Project.load(args.project)
    runtime, _ = projects.connect(project, spawn=getattr(args, "needs_owner", False))
    due: str | None = None
    try:
        yield runtime
        scheduler = getattr(runtime, "scheduler", None)  # opened here, not attached
        if getattr(args, "hands_over", False) and scheduler is not None:
            due = scheduler.due_within(project.idle_stop_s)
    finally:
        runtime.close()
    if due is not None:
        owner.start_daemon(project)
        print(f"buttress: {due}: the project daemon carries it on (buttress status)", file=sys.stderr)


def progress(done: int, total: int, message: str) -> None:
    """Show a runtime progress report on stderr."""
    print(f"  [{done}/{total}] {message}", file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, result: Any) -> bool:
    """With ``--json``, print ``result`` as JSON and return True (the caller prints nothing else)."""
    if not getattr(args, "json", False):
        return False
    data: Any = (
        result.model_dump(mode="json")
        if isinstance(result, BaseModel)
        else [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in result]
        if isinstance(result, list)
        else TypeAdapter(Any).dump_python(result, mode="json")
    )
    print(json.dumps(data, indent=2, default=str))
    return True


def pairs(items: list[str], what: str) -> dict[str, Any]:
    """``NAME=VALUE`` arguments: the value read as JSON when it parses (5, true, null, "x"), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(
                Code.SPEC_INVALID, f"{what} {item!r} is not NAME=VALUE", hint=f"Write --{what} name=value."
            )
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def confirm(args: argparse.Namespace, question: str) -> bool:
    if getattr(args, "yes", False):
        return True
    answer = input(f"{question} [y/N] ") if sys.stdin.isatty() else ""
    return answer.strip().lower() in {"y", "yes"}


def table(columns: list[str], rows: list[list[Any]]) -> None:
    """Rows as an aligned text table."""
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# ---------------------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    """``buttress init [DIR]``: create the configuration, the database and (once per machine) the
    operator secret. A directory that already holds a project is left as it is (exit 0): the command
    says so and changes nothing, so running it twice is safe."""
    root = init_directory(args)
    if (root / projects.CONFIG_NAME).exists():
        project = projects.Project.load(root)
        if args.agent is not None and args.agent != project.agent:
            raise ConfigError(
                Code.CONFIG_INVALID,
                f"{project.root} is already a project, serving agent {project.agent!r}: nothing changed",
                hint=f"Edit [server] agent (and add an [agents.{args.agent}] entry) in "
                f"{project.root / projects.CONFIG_NAME}, or init another directory.",
                details={"project": str(project.root), "agent": project.agent},
            )
        print(f"{project.root} is already a project: nothing changed")
        print(f"  config:   {project.root / projects.CONFIG_NAME}\n  database: {project.database}")
        return 0
    project = projects.init(
        root, agent=args.agent or projects.DEFAULT_AGENT, engine=args.engine, url_env=args.url_env
    )
    where = (
        project.database
        if project.engine == "duckdb"
        else f"PostgreSQL (connection string in ${project.url_env})"
    )
    print(
        f"initialised {project.root}\n  config:   {project.root / projects.CONFIG_NAME}\n  database: {where}"
    )
    print(f"next: buttress serve --project {project.root}")
    return 0


def init_directory(args: argparse.Namespace) -> Path:
    """The directory ``buttress init`` creates: DIR, or ``--project DIR`` as for every other command."""
    given, option = args.dir, args.project
    if given is not None and option != "." and Path(given).resolve() != Path(option).resolve():
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"two directories given: {given} and --project {option}",
            hint="Pass the directory once: `buttress init DIR` or `buttress init --project DIR`.",
        )
    return Path(given if given is not None else option).resolve()


def cmd_serve(args: argparse.Namespace) -> int:
    """``buttress serve``: serve the tools over stdio or streamable HTTP.

    Over stdio (an agent's session) it never owns the database: it attaches to the project's owner,
    starting the project daemon when none runs, so the work goes on when the session ends. Over HTTP
    (the operator's long-lived server) it owns the project when no other process does, else attaches.
    It follows ``buttress.toml`` as it changes (who may see and call which tool, tokens, limits). When
    its standard input closes it exits 0."""
    from mcp_server.channel import ClientInfo
    from mcp_server.server import build_server
    from runtime.boundary.policyfile import PolicyFile

    project = projects.Project.load(args.project)
    if args.ui and not args.http:
        raise ConfigError(
            Code.CONFIG_INVALID,
            "--ui needs --http: the control room is served beside the MCP endpoint over HTTP",
            hint=f"Run `buttress serve --http --ui`, or `buttress ui --project {project.root}` on its own.",
        )
    policy = PolicyFile(project.config_path)
    agent = args.agent or project.agent
    if not policy.current().open_to_any_agent and agent not in policy.current().agents and not args.http:
        raise ConfigError(
            Code.POLICY_DENIED,
            f"agent {agent!r} is not named in the policy of {project.root}",
            hint=f"Add an [agents.{agent}] table with a role to buttress.toml, or pass --agent with a named agent.",
        )
    # The heap as it stands once loaded is frozen out of the cyclic collector (``gc.freeze``), again
    # when the database has opened: otherwise each full collection rescans every module, model
    # and parser table (~70 ms) and lands on a random call — the p90 of a 2,000-row query was 10x
    # its median. Frozen objects are still freed by reference counting.
    if args.http:
        runtime = projects.BackgroundRuntime(
            project,
            own="http",
            client=ClientInfo("(bearer tokens)", "http"),
            policy=policy,
            on_open=gc.freeze,
        )
    else:
        # An agent's session never owns the project; the hidden --demo-seed (tests) does when no process
        # does, for its seeding tool writes rows through the owning process's engine.
        own: OwnerKind | None = "stdio" if args.demo_seed else None
        runtime = projects.BackgroundRuntime(
            project, own=own, client=ClientInfo(agent, "stdio"), on_open=gc.freeze
        )
    runtime.start()
    extra: tuple[ToolSpec, ...] = ()
    if args.demo_seed:
        from mcp_server.demo import DEMO_TOOLS

        extra = DEMO_TOOLS
    server = build_server(runtime, agent=agent, extra_tools=extra, policy=policy, require_tokens=args.http)
    gc.freeze()
    try:
        if args.http:
            print(
                ("" if args.ui else f"buttress: serving MCP on http://127.0.0.1:{args.port}/mcp\n")
                + f"  agents authenticate with a bearer token: buttress token NAME --project {project.root}\n"
                "  (tokens added to buttress.toml work within a second)",
                file=sys.stderr,
                flush=True,
            )
            limit = policy.current().limits.max_request_bytes
            if args.ui:
                from mcp_server.ui.cli import serve_beside_mcp

                serve_beside_mcp(server, project, runtime, port=args.port, max_request_body_size=limit)
            else:
                server.run("streamable-http", host="127.0.0.1", port=args.port, max_request_body_size=limit)
        else:
            server.run("stdio")
    finally:
        runtime.close()
    return 0


def cmd_owner(args: argparse.Namespace) -> int:
    """``buttress owner``: the project daemon (``buttress serve`` starts it; see ``mcp_server.owner``)."""
    from mcp_server.owner import run_daemon

    return run_daemon(projects.Project.load(args.project))


def cmd_status(args: argparse.Namespace) -> int:
    """``buttress status``: who owns the project and who is attached to it (never opens the database)."""
    from mcp_server.channel import owner_status, socket_path

    project = projects.Project.load(args.project)
    if project.engine == "postgres":
        shared: dict[str, Any] = {
            "engine": "postgres",
            "url_env": project.url_env,
            "owner": None,
            "sessions": [],
        }
        if emit(args, shared):
            return 0
        print(f"project {project.root} (database: PostgreSQL, its connection string in ${project.url_env})")
        print(
            "owner: none (the database is shared: every serve and command opens it itself, and one serve "
            "at a time runs the scheduler)"
        )
        return 0
    try:
        status: dict[str, Any] = owner_status(socket_path(project.database))
    except ButtressError as error:
        if error.code != Code.ENGINE_OWNER_GONE:
            raise
        status = {"owner": None, "sessions": []}
    if emit(args, status):
        return 0
    owner = status["owner"]
    print(f"project {project.root} (database {project.database})")
    if owner is None:
        print("owner: none (nothing holds the project open; `buttress serve` starts the project daemon)")
        return 0
    memory = f", {owner['rss_mb']} MB (peak {owner['peak_rss_mb']} MB)" if owner.get("rss_mb") else ""
    print(f"owner: pid {owner['pid']}, {owner['kind']}, since {owner['since']}{memory}")
    if owner["kind"] == "daemon":
        print(
            f"  stops after {owner['idle_stop_s']:g} s with no client and nothing due "
            f"(idle for {owner['idle_for_s']:g} s; due: {owner['due'] or 'nothing'}); log: {owner['log']}"
        )
    origin = owner.get("policy")
    if origin:
        print(
            f"  policy: {origin['file']} as loaded at {origin['loaded_at']} (sha256 {origin['digest'][:12]})"
        )
        if origin.get("problem"):
            print(f"  policy problem: the file as it is now is refused: {origin['problem']}")
        for pending in origin.get("restart_needed") or ():
            print(f"  needs a restart: {pending}")
    sessions = status["sessions"]
    print(f"attached: {len(sessions) or 'none'}")
    for session in sessions:
        actors = ", ".join(session["actors"])
        print(
            f"  pid {session['pid']:<8} {session['transport']:<6} {session['agent']:<20} since {session['since']}"
            + (f"  called as: {actors}" if actors else "")
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``buttress demo``: the scripted agent demo."""
    from mcp_server.demo import run_demo

    return run_demo()


def cmd_describe(args: argparse.Namespace) -> int:
    """``buttress describe`` (``describe_app``)."""
    with opened(args) as runtime:
        app = runtime.describe()
    if emit(args, app):
        return 0
    print(f"version {app.version} ({app.hash[:16]})")
    for entity in app.spec.entities:
        fields = ", ".join(
            f"{f.name} {f.type}{'' if not f.nullable else '?'}"
            + (f" -> {f.references}" if f.references else "")
            for f in entity.fields
        )
        print(f"  entity {entity.name} (key {', '.join(entity.primary_key)}): {fields}")
    for invariant in app.spec.invariants:
        print(f"  invariant {invariant.name}: {invariant.description or invariant.sql}")
    for view in app.spec.views:
        print(f"  view {view.name}")
    for action in app.actions:
        params = ", ".join(f"{p.name} {p.type}" for p in action.params)
        print(f"  action {action.name}({params}) [{action.kind}] writes {', '.join(action.writes) or '-'}")
        for emit_ in action.emits:
            what = (
                f"publishes {emit_.publish}"
                if emit_.publish
                else f"starts {emit_.start}"
                if emit_.start
                else f"signals {emit_.signal}"
            )
            print(f"    emits: {what}")
    for topic in app.spec.topics:
        payload = ", ".join(f"{f.name} {f.type}{'' if not f.nullable else '?'}" for f in topic.payload)
        flags = (f" key {topic.key}" if topic.key else "") + (" external" if topic.external else "")
        print(f"  topic {topic.name}({payload}){flags}")
    for workflow in app.spec.workflows:
        params = ", ".join(f"{p.name} {p.type}" for p in workflow.params)
        steps = " -> ".join(
            f"{s.name}:{s.kind}" + (f"[{s.target()}]" if s.target() else "") for s in workflow.steps
        )
        print(f"  workflow {workflow.name}({params}): {steps}")
    for subscription in app.spec.subscriptions:
        print(
            f"  subscription {subscription.name}: {subscription.topic} -> "
            f"{subscription.workflow or subscription.action}"
            + (f" (max_depth {subscription.max_depth})" if subscription.max_depth else "")
        )
    if app.connectors:
        print(f"  connectors: {', '.join(c.name for c in app.connectors)}")
    if app.work is not None:
        runs = ", ".join(f"{f.value} {f.count}" for f in app.work.runs_by_status) or "none"
        print(
            f"  work: runs {runs}; unknown effects {app.work.unknown_effects}; "
            f"undelivered messages {app.work.undelivered_messages}"
        )
    for pending in app.pending_proposals:
        print(f"  pending proposal {pending.proposal_id} ({DRY_RUN_WORDS[pending.dry_run]})")
    for line in app.drift:
        print(f"  DRIFT: {line}")
    if app.audit_problem:
        print(f"  AUDIT: {app.audit_problem}")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    """``buttress versions`` (``list_versions``)."""
    with opened(args) as runtime:
        versions = runtime.versions()
    if emit(args, versions):
        return 0
    for v in versions:
        origin = f"restores {v.restores}" if v.kind == "rollback" else (v.proposal_id or "")
        print(
            f"{v.number:>4}  {v.kind:<8}  {v.deployed_at[:19]}  {v.deployed_by:<12}  {origin}  {v.note or ''}".rstrip()
        )
    return 0


def cmd_proposals(args: argparse.Namespace) -> int:
    """``buttress proposals`` (``Runtime.proposals``)."""
    with opened(args) as runtime:
        found = runtime.proposals(pending=args.pending)
    if emit(args, found):
        return 0
    if not found:
        print("no pending proposals (on the current version)" if args.pending else "no proposals")
        return 0
    for p in found:
        state = f"deployed as {p.deployed_as}" if p.status == "deployed" else p.status
        checked = DRY_RUN_WORDS[p.dry_run]
        hazards = f"  hazards: {', '.join(p.hazards)}" if p.hazards else ""
        print(f"{p.proposal_id:<6} on v{p.base_version:<4} {state:<16} {checked:<17} {p.created_by}{hazards}")
        if p.note:
            print(f"       {p.note}")
    return 0


DRY_RUN_WORDS = {
    "passed": "dry-run passed",
    "failed": "dry-run failed",
    "stale": "dry-run stale",
    "not_dry_run": "not dry-run",
}
"""How ``buttress proposals`` and ``describe`` say where a proposal's dry-run stands."""


def cmd_diff(args: argparse.Namespace) -> int:
    """``buttress diff A B`` (``diff_versions``)."""
    with opened(args) as runtime:
        result = runtime.diff_versions(args.from_version, args.to_version)
    if emit(args, result):
        return 0
    print(f"version {result.from_version} -> {result.to_version}: {len(result.changes)} change(s)")
    for change in result.changes:
        detail = change.get("attributes") or change.get("attribute") or ""
        print(
            f"  {change['change']:<8} {change['kind']:<9} {change['name']}  {json.dumps(detail) if detail else ''}".rstrip()
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """``buttress query SQL`` (``query``)."""
    with opened(args) as runtime:
        result = runtime.query(args.sql, pairs(args.param, "param") or None, limit=args.limit)
    if emit(args, result):
        return 0
    table(result.columns, result.rows)
    print(
        f"({result.row_count} row{'s' if result.row_count != 1 else ''}{', truncated' if result.truncated else ''})"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``buttress run ACTION --arg k=v`` (``run_action``)."""
    with opened(args) as runtime:
        result = runtime.run_action(
            args.action, pairs(args.arg, "arg"), idempotency_key=args.idempotency_key, actor=args.actor
        )
    if emit(args, result):
        return 0
    if result.columns:
        table(result.columns, result.rows)
    replayed = " (replayed: the first result of this idempotency key)" if result.replayed else ""
    print(f"{result.action}: {result.rows_affected} row(s) affected at version {result.version}{replayed}")
    return 0


def read_operations(path: Path) -> list[Any]:
    """The operations in a JSON file: a list, or an object with an ``operations`` list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            Code.SPEC_INVALID,
            f"{path} is not a readable JSON file: {error}",
            hint="Pass a JSON file holding a list of operations.",
        ) from None
    operations = data.get("operations") if isinstance(data, dict) else data
    if not isinstance(operations, list):
        raise ConfigError(
            Code.SPEC_INVALID,
            f"{path} holds no list of operations",
            hint='Write [{"op": "add_entity", ...}, ...] or {"operations": [...]}.',
        )
    return operations


def cmd_propose(args: argparse.Namespace) -> int:
    """``buttress propose FILE.json`` (``propose_change``)."""
    operations = read_operations(Path(args.file))
    with opened(args) as runtime:
        result = runtime.propose(operations, base_version=args.base_version, note=args.note, actor=args.actor)
    if emit(args, result):
        return 0
    print(f"proposal {result.proposal_id} on version {result.base_version}")
    for step in result.steps:
        print(f"  step {step.index}: {step.summary} ({step.strategy})")
    for hazard in result.hazards:
        print(f"  hazard {hazard.code} [{hazard.severity}]: {hazard.message}\n    {hazard.hint}")
    print(f"next: buttress dry-run --project {args.project} {result.proposal_id}")
    return 0


def cmd_redeploy(args: argparse.Namespace) -> int:
    """``buttress redeploy N`` (``redeploy``): a proposal rolling forward to version N's spec."""
    with opened(args) as runtime:
        result = runtime.redeploy(args.version, note=args.note, actor=args.actor)
    if emit(args, result):
        return 0
    print(f"proposal {result.proposal_id} on version {result.base_version}: redeploy version {args.version}")
    for step in result.steps:
        print(f"  step {step.index}: {step.summary} ({step.strategy})")
    for hazard in result.hazards:
        print(f"  hazard {hazard.code} [{hazard.severity}]: {hazard.message}")
    print(f"next: buttress dry-run --project {args.project} {result.proposal_id}")
    return 0


def cmd_dry_run(args: argparse.Namespace) -> int:
    """``buttress dry-run ID`` (``dry_run``); exit 1 when the dry-run fails."""
    with opened(args) as runtime:
        report = runtime.dry_run(args.proposal_id, actor=args.actor, progress=progress)
    if emit(args, report):
        return 0 if report.passed else 1
    print(
        f"dry-run of {args.proposal_id} on version {report.base_version}: {'PASSED' if report.passed else 'FAILED'}"
    )
    for step in report.steps:
        print(f"  step {step.index}: {step.summary}: {step.rows_affected} rows")
        for loss in step.losses:
            print(f"    loss {loss.code}: {loss.count} {loss.message}")
    for check in report.checks:
        print(f"  check {check.name}: {'ok' if check.passed else 'FAILED'} {check.detail}".rstrip())
    for hazard in report.hazards:
        print(f"  hazard {hazard.code} [{hazard.severity}]: {hazard.message}")
    if report.error:
        print(
            f"error [{report.error['code']}]: {report.error['message']}\n  hint: {report.error['hint']}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """``buttress deploy ID`` (``deploy``; the operator needs no approval, an ``--actor`` agent may)."""
    with opened(args) as runtime:
        result = runtime.deploy(args.proposal_id, actor=args.actor, progress=progress)
    if emit(args, result):
        return 0
    print(f"deployed {args.proposal_id}: version {result.previous_version} -> {result.version}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """``buttress rollback [--to N]`` (``rollback``)."""
    with opened(args) as runtime:
        result = runtime.rollback(to_version=args.to_version, actor=args.actor, progress=progress)
    if emit(args, result):
        return 0
    print(f"rolled back to the spec of version {result.restored_version}: now version {result.version}")
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    """``buttress finalize --before N``: irreversible, so it asks first (``--yes`` does not)."""
    if not confirm(
        args,
        f"discard the data retained by versions before {args.before}? rollbacks that need it will be refused",
    ):
        print("nothing finalized (pass --yes to confirm non-interactively)")
        return 1
    with opened(args) as runtime:
        result = runtime.finalize(before_version=args.before, actor=args.actor)
    if emit(args, result):
        return 0
    print(
        f"finalized versions before {args.before}: {len(result.finalized_tables)} retained tables discarded"
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """``buttress approve REQUEST``: approve a pending approval request, signed with the operator secret.

    It reads the request the server wrote beside the database, then decides through the project's
    runtime (attached to its owner, or opening the file when none runs), exactly as the control room
    does: a request whose plan can no longer deploy (stale base, failed dry-run) is refused
    (``approval.stale``) before anything is asked, and the approval is audited.
    """
    from runtime.boundary import approvals
    from runtime.errors import Code, PolicyError

    project = projects.Project.load(args.project)
    with opened(args) as runtime:
        # filed beside the database file, or in the database several servers share
        filed = cast(Any, runtime).filing if project.engine == "postgres" else project.database
        request = approvals.pending(filed, args.request)
        answer = {
            "request": request["id"],
            "subject": approvals.subject(request),
            "proposal_id": request["proposal_id"],
            "requested_by": request["requested_by"],
            "plan_hash": request["plan_hash"],
            "expires_at": request["expires_at"],
            "hazards": request.get("hazards", []),
        }
        found = next((r for r in runtime.approval_requests(limit=1000) if r.request_id == args.request), None)
        if found is not None and found.status == "stale":
            raise PolicyError(
                Code.APPROVAL_STALE,
                f"request {args.request} cannot be approved: {found.reason}, so its plan cannot deploy",
                hint="Nothing to approve: the agent proposes (and dry-runs) the change again on the current "
                "version, and a deploy of that asks anew.",
                details={"approval_request": args.request, "status": "stale", "reason": found.reason},
            )
        if not args.json:
            print(f"request {request['id']}: {approvals.subject(request)} by {request['requested_by']}")
            print(f"  plan {request['plan_hash'][:16]}, expires {request['expires_at']}")
            for hazard in request.get("hazards", []):
                print(f"  hazard {hazard['code']} [{hazard['severity']}]: {hazard['message']}")
        if not confirm(args, "approve this exact plan?"):
            if not emit(args, {**answer, "approved": False}):
                print("not approved (pass --yes to approve non-interactively)")
            return 1
        runtime.approve_request(args.request)
    if not emit(args, {**answer, "approved": True, "approved_by": OPERATOR}):
        print(
            f"approved: the agent may now retry the {approvals.subject(request)} (once, until {request['expires_at']})"
        )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """``buttress token AGENT``: create an HTTP bearer token for an agent; only its sha256 is stored.

    ``--rotate`` replaces the token and keeps everything else of the agent's entry (its role, its
    actions, any other key); the role changes only when ``--role`` is given, and then the command says
    from what to what."""
    from runtime.boundary.policy import add_agent

    project = projects.Project.load(args.project)
    config = project.root / projects.CONFIG_NAME
    known = project.policy().agents.get(args.agent)
    before = known.role if known is not None else None
    token = add_agent(
        config, args.agent, args.role or (None if known is not None else DEFAULT_ROLE), rotate=args.rotate
    )
    after = project.policy().agents[args.agent].role
    if emit(
        args,
        {
            "agent": args.agent,
            "role": after,
            "previous_role": before,
            "token": token,
            "rotated": args.rotate,
            "config": str(config),
        },
    ):
        return 0
    done = "token replaced" if args.rotate else "token added" if known is not None else "added"
    print(f"agent {args.agent} ({after}) {done} in {config}")
    if before is not None and before != after:
        print(f"  role changed: {before} -> {after}")
    print(f"bearer token (shown once; store it in the client): {token}")
    print("a running `buttress serve --http` accepts it within a second (it follows buttress.toml)")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """``buttress audit verify``: recompute the hash chain and check the anchor; exit 1 if broken."""
    with opened(args) as runtime:
        result = runtime.verify_audit()
    if emit(args, result):
        return 0 if result.ok else 1
    if result.ok:
        anchored = f", anchored at {result.anchor['seq']}" if result.anchor else ""
        print(f"audit chain ok: {result.entries} entries{anchored}")
        return 0
    missing = f" (missing rows {result.missing[0]} to {result.missing[1]})" if result.missing else ""
    where = f" at seq {result.first_bad_seq}" if result.first_bad_seq else ""
    print(f"audit chain BROKEN{where}: {result.problem}{missing}", file=sys.stderr)
    return 1


def cmd_audit_show(args: argparse.Namespace) -> int:
    """``buttress audit show [--follow]`` (``read_audit``)."""
    with opened(args) as runtime:
        entries = runtime.read_audit(limit=args.limit, operation=args.operation)
        if emit(args, entries) and not args.follow:
            return 0
        for entry in entries:
            _print_entry(entry)
        last = entries[-1].seq if entries else 0
        while args.follow:
            time.sleep(0.5)
            for entry in runtime.read_audit(limit=1000, after_seq=last, operation=args.operation):
                _print_entry(entry)
                last = entry.seq
    return 0


def _print_entry(e: Any) -> None:
    versions = (
        f"v{e.version_before}->v{e.version_after}"
        if e.version_before != e.version_after
        else f"v{e.version_after}"
    )
    code = f" [{e.error_code}]" if e.error_code else ""
    print(
        f"{e.seq:>5}  {e.time[:19]}  {e.actor:<12}  {e.operation:<14}  {e.outcome}{code}  {versions}",
        flush=True,
    )


def cmd_audit_reanchor(args: argparse.Namespace) -> int:
    """``buttress audit reanchor``: accept the chain as it is now (the problem stays on record)."""
    if not confirm(
        args, "anchor the audit log as it is now? (the problem verify reports is written into it)"
    ):
        print("not re-anchored (pass --yes to confirm non-interactively)")
        return 1
    with opened(args) as runtime:
        result = runtime.reanchor_audit()
    print(f"audit chain re-anchored: {result.entries} entries")
    return 0
