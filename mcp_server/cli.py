"""The ``buttress`` command line: the operator's projection of the same runtime operations the tools
project for agents. Each command opens the project's runtime, calls one ``Runtime`` method, prints
a human-readable result and exits 0, or prints ``error [code]: message`` with a hint and exits 1.

    buttress init DIR                      create a project (buttress.toml + app.duckdb)
    buttress serve --project DIR           serve the MCP tools (stdio, or --http --port N)
    buttress demo                          run the scripted agent demo in a throwaway project
    buttress versions --project DIR        list versions
    buttress audit verify|show --project DIR
    buttress propose --project DIR FILE.json
    buttress dry-run|deploy --project DIR ID
    buttress rollback --project DIR [--to N]
    buttress finalize --project DIR --before N
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_server import project as projects
from runtime.errors import ButtressError, Code, SpecError

if TYPE_CHECKING:
    from runtime.runtime import Runtime
    from tools.base import ToolSpec

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``buttress`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except ButtressError as error:
        print_error(error)
        return 1
    except KeyboardInterrupt:
        return 130


def print_error(error: ButtressError) -> None:
    """Print ``error [code]: message`` and its hint (and details) on stderr."""
    lines = [f"error [{error.code}]: {error.message}", f"  hint: {error.hint}"]
    if error.code == Code.ENGINE_LOCKED:
        lines.append(
            "  note: DuckDB lets one process open a database file at a time; a `buttress serve` for this "
            "project is probably running. Stop it, or make the change through its MCP tools."
        )
    elif error.details:
        lines.append("  details: " + json.dumps(error.details, default=str)[:2000])
    print("\n".join(lines), file=sys.stderr)


# -------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``buttress`` argument parser; each command sets ``command`` to its function."""
    parser = argparse.ArgumentParser(
        prog="buttress",
        description="Typed, transactional tools for coding agents over an embedded DuckDB runtime.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("--project", default=".", metavar="DIR", help="the project directory (default: .)")
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument(
        "--actor", default="operator", help="name written to the audit log (default: operator)"
    )

    init = commands.add_parser("init", help="create a project: DIR/buttress.toml and DIR/app.duckdb")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--agent", default=projects.DEFAULT_AGENT, help="default agent name for `serve`")
    init.set_defaults(command=cmd_init)

    serve = commands.add_parser("serve", parents=[project], help="serve the MCP tools (stdio by default)")
    serve.add_argument("--agent", help="agent name for the audit log (default: from buttress.toml)")
    serve.add_argument(
        "--http", action="store_true", help="serve streamable HTTP on 127.0.0.1 instead of stdio"
    )
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    serve.add_argument("--demo-seed", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(command=cmd_serve)

    approve = commands.add_parser(
        "approve", parents=[project, actor], help="approve a pending hazardous deploy (works while serving)"
    )
    approve.add_argument("request", metavar="REQUEST", help="the request id from deploy.needs_approval")
    approve.add_argument("--yes", action="store_true", help="approve without asking")
    approve.set_defaults(command=cmd_approve)

    token = commands.add_parser("token", parents=[project], help="create an HTTP bearer token for an agent")
    token.add_argument("agent", metavar="AGENT")
    token.add_argument("--role", default="developer", help="the agent's role (default: developer)")
    token.add_argument("--rotate", action="store_true", help="replace the agent's existing token")
    token.set_defaults(command=cmd_token)

    commands.add_parser("demo", help="run a scripted agent against a throwaway project").set_defaults(
        command=cmd_demo
    )

    commands.add_parser("versions", parents=[project], help="list versions").set_defaults(
        command=cmd_versions
    )

    audit = commands.add_parser("audit", help="verify or show the audit log")
    audit_commands = audit.add_subparsers(title="audit commands", required=True, metavar="COMMAND")
    audit_commands.add_parser("verify", parents=[project], help="recompute the hash chain").set_defaults(
        command=cmd_audit_verify
    )
    show = audit_commands.add_parser("show", parents=[project], help="print recent entries")
    show.add_argument("--limit", type=int, default=50)
    show.set_defaults(command=cmd_audit_show)

    propose = commands.add_parser(
        "propose", parents=[project, actor], help="propose operations from a JSON file"
    )
    propose.add_argument(
        "file", metavar="FILE.json", help='a JSON list of operations (or {"operations": [...]})'
    )
    propose.add_argument("--base-version", type=int)
    propose.add_argument("--note")
    propose.set_defaults(command=cmd_propose)

    for name, command, text in (
        ("dry-run", cmd_dry_run, "dry-run a proposal (nothing changes)"),
        ("deploy", cmd_deploy, "deploy a proposal whose dry-run passed"),
    ):
        sub = commands.add_parser(name, parents=[project, actor], help=text)
        sub.add_argument("proposal_id", metavar="ID")
        sub.set_defaults(command=command)

    rollback = commands.add_parser(
        "rollback", parents=[project, actor], help="roll back to an earlier version"
    )
    rollback.add_argument(
        "--to", type=int, dest="to_version", metavar="N", help="default: the previous version"
    )
    rollback.set_defaults(command=cmd_rollback)

    finalize = commands.add_parser(
        "finalize",
        parents=[project, actor],
        help="discard data retained by versions before N (no rollback past it)",
    )
    finalize.add_argument("--before", type=int, required=True, metavar="N")
    finalize.set_defaults(command=cmd_finalize)
    return parser


# ------------------------------------------------------------------------------------------ commands


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[Runtime]:
    """The project's runtime, closed (and checkpointed) when the command is done."""
    runtime = projects.Project.load(args.project).open()
    try:
        yield runtime
    finally:
        runtime.close()


def progress(done: int, total: int, message: str) -> None:
    """Show a runtime progress report on stderr."""
    print(f"  [{done}/{total}] {message}", file=sys.stderr, flush=True)


def cmd_init(args: argparse.Namespace) -> int:
    """``buttress init DIR``: create the configuration and the database."""
    project = projects.init(args.dir, agent=args.agent)
    print(
        f"initialised {project.root}\n  config:   {project.root / projects.CONFIG_NAME}\n  database: {project.database}"
    )
    print(f"next: buttress serve --project {project.root}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``buttress serve``: serve the tools over stdio or streamable HTTP; the database opens in the background."""
    from mcp_server.server import build_server

    project = projects.Project.load(args.project)
    policy = project.policy()
    agent = args.agent or project.agent
    if not policy.open_to_any_agent and agent not in policy.agents and not args.http:
        raise SpecError(
            Code.POLICY_DENIED,
            f"agent {agent!r} is not named in the policy of {project.root}",
            hint=f"Add an [agents.{agent}] table with a role to buttress.toml, or pass --agent with a named agent.",
        )
    runtime = projects.BackgroundRuntime(project)
    extra: tuple[ToolSpec, ...] = ()
    if args.demo_seed:
        from mcp_server.demo import DEMO_TOOLS

        extra = DEMO_TOOLS
    server = build_server(
        runtime,
        agent=agent,
        extra_tools=extra,
        policy=policy,
        require_tokens=args.http,
    )
    try:
        if args.http:
            server.run(
                "streamable-http",
                host="127.0.0.1",
                port=args.port,
                max_request_body_size=policy.limits.max_request_bytes,
            )
        else:
            server.run("stdio")
    finally:
        runtime.close()
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """``buttress approve``: sign a pending approval request with the operator secret.

    Works while the server runs: it reads the request the server wrote beside the database and
    writes the signed approval there; it never opens the database.
    """
    import json

    from runtime.boundary import approvals

    project = projects.Project.load(args.project)
    folder = approvals.folder(project.database)
    path = folder / "requests" / f"{args.request}.json"
    if not path.is_file():
        raise SpecError(
            Code.NOT_FOUND,
            f"no approval request {args.request!r} in {folder / 'requests'}",
            hint="The agent's deploy.needs_approval error names the request id.",
        )
    request = json.loads(path.read_text())
    print(
        f"request {request['id']}: deploy of proposal {request['proposal_id']} by {request['requested_by']}"
    )
    print(f"  plan {request['plan_hash'][:16]}, expires {request['expires_at']}")
    for hazard in request.get("hazards", []):
        print(f"  hazard {hazard['code']} [{hazard['severity']}]: {hazard['message']}")
    if not args.yes:
        answer = input("approve this exact plan? [y/N] ") if sys.stdin.isatty() else ""
        if answer.strip().lower() not in {"y", "yes"}:
            print("not approved (pass --yes to approve non-interactively)")
            return 1
    approvals.ensure_operator_key()
    (folder / "approvals").mkdir(parents=True, exist_ok=True)
    signed = approvals.sign(request, approved_by=args.actor)
    (folder / "approvals" / f"{request['id']}.json").write_text(json.dumps(signed, indent=2))
    print(
        f"approved: the agent may now deploy {request['proposal_id']} (once, until {request['expires_at']})"
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """``buttress token AGENT``: create an HTTP bearer token for an agent; only its sha256 is stored."""
    from runtime.boundary.policy import add_agent

    project = projects.Project.load(args.project)
    config = project.root / projects.CONFIG_NAME
    token = add_agent(config, args.agent, args.role, rotate=args.rotate)
    print(f"agent {args.agent} ({args.role}) {'token replaced' if args.rotate else 'added'} in {config}")
    print(f"bearer token (shown once; store it in the client): {token}")
    print("the server reads tokens when it starts: restart `buttress serve --http` for it to take effect")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``buttress demo``: the scripted agent demo."""
    from mcp_server.demo import run_demo

    return run_demo()


def cmd_versions(args: argparse.Namespace) -> int:
    """``buttress versions``: one line per version (``Runtime.versions``)."""
    with opened(args) as runtime:
        versions = runtime.versions()
    for v in versions:
        origin = f"restores {v.restores}" if v.kind == "rollback" else (v.proposal_id or "")
        print(
            f"{v.number:>4}  {v.kind:<8}  {v.deployed_at[:19]}  {v.deployed_by:<12}  {origin}  {v.note or ''}".rstrip()
        )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """``buttress audit verify``: recompute the hash chain (``Runtime.verify_audit``); exit 1 if broken."""
    with opened(args) as runtime:
        result = runtime.verify_audit()
    if result.ok:
        print(f"audit chain ok: {result.entries} entries")
        return 0
    print(f"audit chain BROKEN at seq {result.first_bad_seq}: {result.problem}", file=sys.stderr)
    return 1


def cmd_audit_show(args: argparse.Namespace) -> int:
    """``buttress audit show``: recent entries (``Runtime.read_audit``)."""
    with opened(args) as runtime:
        entries = runtime.read_audit(limit=args.limit)
    for e in entries:
        versions = (
            f"v{e.version_before}->v{e.version_after}"
            if e.version_before != e.version_after
            else f"v{e.version_after}"
        )
        code = f" [{e.error_code}]" if e.error_code else ""
        print(f"{e.seq:>5}  {e.time[:19]}  {e.actor:<12}  {e.operation:<12}  {e.outcome}{code}  {versions}")
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    """``buttress propose FILE.json``: plan and store a proposal (``Runtime.propose``)."""
    operations = read_operations(Path(args.file))
    with opened(args) as runtime:
        result = runtime.propose(operations, base_version=args.base_version, note=args.note, actor=args.actor)
    print(f"proposal {result.proposal_id} on version {result.base_version}")
    for step in result.steps:
        print(f"  step {step.index}: {step.summary} ({step.strategy})")
    for hazard in result.hazards:
        print(f"  hazard {hazard.code} [{hazard.severity}]: {hazard.message}\n    {hazard.hint}")
    print(f"next: buttress dry-run --project {args.project} {result.proposal_id}")
    return 0


def read_operations(path: Path) -> list[Any]:
    """The operations in a JSON file: a list, or an object with an ``operations`` list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SpecError(
            Code.SPEC_INVALID,
            f"{path} is not a readable JSON file: {error}",
            hint="Pass a JSON file holding a list of operations.",
        ) from None
    operations = data.get("operations") if isinstance(data, dict) else data
    if not isinstance(operations, list):
        raise SpecError(
            Code.SPEC_INVALID,
            f"{path} holds no list of operations",
            hint='Write [{"op": "add_entity", ...}, ...] or {"operations": [...]}.',
        )
    return operations


def cmd_dry_run(args: argparse.Namespace) -> int:
    """``buttress dry-run ID`` (``Runtime.dry_run``); exit 1 when the dry-run fails."""
    with opened(args) as runtime:
        report = runtime.dry_run(args.proposal_id, actor=args.actor, progress=progress)
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
    """``buttress deploy ID`` (``Runtime.deploy``)."""
    with opened(args) as runtime:
        result = runtime.deploy(args.proposal_id, actor=args.actor, progress=progress)
    print(f"deployed {args.proposal_id}: version {result.previous_version} -> {result.version}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """``buttress rollback [--to N]`` (``Runtime.rollback``)."""
    with opened(args) as runtime:
        result = runtime.rollback(to_version=args.to_version, actor=args.actor, progress=progress)
    print(f"rolled back to the spec of version {result.restored_version}: now version {result.version}")
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    """``buttress finalize --before N`` (``Runtime.finalize``): no rollback past N afterwards."""
    with opened(args) as runtime:
        result = runtime.finalize(before_version=args.before, actor=args.actor)
    tables = result.finalized_tables
    print(f"finalized versions before {args.before}: {len(tables)} retained tables discarded")
    return 0
