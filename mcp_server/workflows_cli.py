"""The operator's commands for the work in flight: ``buttress runs``, ``buttress messages`` and
``buttress effects`` (registered by ``mcp_server.cli``; see ``FEATURE_COMMANDS``).

Those that only read work on the file directly when no process owns the project; those that set work
in motion (start, signal, cancel and retry a run, resolve an effect: ``needs_owner``) act through the
project's owner, starting the project daemon when none runs, so its scheduler carries the work on.
``runs retry`` and ``effects resolve`` are the operator's: they refuse ``--actor`` naming an agent.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mcp_server import cli
from runtime.workflows.status import StepStatus
from runtime.workflows.tables import RESOLUTIONS


def register(commands: Any, parents: cli.Parents) -> None:
    common = [parents.project, parents.output]
    runs = commands.add_parser("runs", help="list, show, start, signal, cancel and retry workflow runs")
    runs_commands = runs.add_subparsers(title="runs commands", metavar="COMMAND", required=True)
    listing = runs_commands.add_parser("list", parents=common, help="runs, newest first")
    listing.add_argument("--workflow", help="only runs of this workflow")
    listing.add_argument("--status", help="only runs in this status ('active': not finished)")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(command=cmd_runs_list)
    show = runs_commands.add_parser("show", parents=common, help="a run with its steps and effects")
    show.add_argument("run_id", metavar="RUN")
    show.set_defaults(command=cmd_runs_show)
    start = runs_commands.add_parser("start", parents=[*common, parents.actor], help="start a run")
    start.add_argument("workflow", metavar="WORKFLOW")
    start.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="an argument")
    start.add_argument("--run-id", help="an id for the run (starting it again returns the same run)")
    start.set_defaults(command=cmd_runs_start, needs_owner=True)
    signal = runs_commands.add_parser("signal", parents=[*common, parents.actor], help="send a run a signal")
    signal.add_argument("run_id", metavar="RUN")
    signal.add_argument("name", metavar="SIGNAL")
    signal.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="payload field")
    signal.set_defaults(command=cmd_runs_signal, needs_owner=True)
    cancel = runs_commands.add_parser(
        "cancel", parents=[*common, parents.actor], help="cancel a run (its completed steps are compensated)"
    )
    cancel.add_argument("run_id", metavar="RUN")
    cancel.add_argument("--reason")
    cancel.set_defaults(command=cmd_runs_cancel, needs_owner=True)
    retry = runs_commands.add_parser(
        "retry", parents=[*common, parents.operator], help="retry a failed or blocked run at its step"
    )
    retry.add_argument("run_id", metavar="RUN")
    retry.set_defaults(command=cmd_runs_retry, needs_owner=True, operator_only="runs retry")

    messages = commands.add_parser("messages", parents=common, help="messages on topics, newest first")
    messages.add_argument("--topic")
    messages.add_argument(
        "--undelivered", action="store_true", help="only those a consumer has yet to receive, and held ones"
    )
    messages.add_argument("--limit", type=int, default=50)
    messages.set_defaults(command=cmd_messages)

    effects = commands.add_parser("effects", help="external requests of runs, the unknown ones first")
    effects_commands = effects.add_subparsers(title="effects commands", metavar="COMMAND", required=True)
    effects_list = effects_commands.add_parser("list", parents=common, help="effects, unknown first")
    effects_list.add_argument(
        "--state", help="only this state (pending, succeeded, rejected, unknown, resolved)"
    )
    effects_list.add_argument("--run", dest="run_id", help="only this run's")
    effects_list.add_argument("--limit", type=int, default=50)
    effects_list.set_defaults(command=cmd_effects_list)
    resolve = effects_commands.add_parser(
        "resolve",
        parents=[*common, parents.operator],
        help="say what an effect with an unknown outcome did, after checking with the provider",
    )
    resolve.add_argument("effect_id", metavar="EFFECT")
    resolve.add_argument("--outcome", required=True, choices=RESOLUTIONS)
    resolve.add_argument("--response", help="the provider's response, as JSON (becomes the step's output)")
    resolve.add_argument("--yes", action="store_true", help="resolve without asking")
    resolve.set_defaults(command=cmd_effects_resolve, needs_owner=True, operator_only="effects resolve")


def _advancing(runtime: Any) -> str:
    """When the run acts on what was just done: at once when a server owns the project (its scheduler
    runs the run), else when one next does (nothing advances runs in between)."""
    from mcp_server.channel import RemoteRuntime

    if isinstance(runtime, RemoteRuntime):
        return "the server that owns the project advances it now"
    return "no server owns the project now: it advances when `buttress serve` next runs on it"


def _run_line(run: Any) -> str:
    where = run.step or "-"
    waiting = f" on {run.waiting_on}" if run.waiting_on else ""
    error = f"  [{run.error.get('code')}]" if run.error else ""
    return (
        f"{run.run_id:<36}  {run.workflow:<16}  v{run.version:<3}  {run.status:<12}  {where}{waiting}{error}"
    )


def cmd_runs_list(args: argparse.Namespace) -> int:
    """``buttress runs list`` (``list_runs``)."""
    with cli.opened(args) as runtime:
        found = runtime.list_runs(workflow=args.workflow, status=args.status, limit=args.limit)
    if cli.emit(args, found):
        return 0
    for run in found:
        print(_run_line(run))
    if not found:
        print("no runs")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    """``buttress runs show RUN`` (``get_run``)."""
    with cli.opened(args) as runtime:
        run = runtime.get_run(args.run_id)
    if cli.emit(args, run):
        return 0
    print(_run_line(run))
    print(f"  args: {json.dumps(run.args)}")
    for step in run.steps:
        outcome = json.dumps(step.output) if step.status == StepStatus.COMPLETED else json.dumps(step.error)
        print(
            f"  {step.seq:>3} {step.name:<24} {step.kind:<12} {step.status:<9} x{step.attempts}  v{step.version}  {outcome}"
        )
    for effect in run.effects:
        print(
            f"  effect {effect.effect_id} via {effect.connector}: {effect.state}, {effect.attempts} attempt(s), "
            f"age {effect.age_s:.0f}s"
        )
    return 0


def cmd_runs_start(args: argparse.Namespace) -> int:
    """``buttress runs start WORKFLOW --arg k=v`` (``start_workflow``)."""
    with cli.opened(args) as runtime:
        run = runtime.start_workflow(
            args.workflow, cli.pairs(args.arg, "arg"), run_id=args.run_id, actor=args.actor
        )
        advancing = _advancing(runtime)
    if not cli.emit(args, run):
        print(_run_line(run))
        print(f"  {advancing}")
    return 0


def cmd_runs_signal(args: argparse.Namespace) -> int:
    """``buttress runs signal RUN SIGNAL --arg k=v`` (``signal_run``)."""
    with cli.opened(args) as runtime:
        run = runtime.signal_run(args.run_id, args.name, cli.pairs(args.arg, "arg"), actor=args.actor)
        advancing = _advancing(runtime)
    if not cli.emit(args, run):
        print(_run_line(run))
        print(f"  {advancing}")
    return 0


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    """``buttress runs cancel RUN`` (``cancel_run``)."""
    with cli.opened(args) as runtime:
        run = runtime.cancel_run(args.run_id, reason=args.reason, actor=args.actor)
        advancing = _advancing(runtime)
    if not cli.emit(args, run):
        print(_run_line(run))
        print(f"its completed steps are compensated, newest first; then it is cancelled ({advancing})")
    return 0


def cmd_runs_retry(args: argparse.Namespace) -> int:
    """``buttress runs retry RUN`` (``retry_run``)."""
    with cli.opened(args) as runtime:
        run = runtime.retry_run(args.run_id, actor=cli.OPERATOR)
        advancing = _advancing(runtime)
    if not cli.emit(args, run):
        print(_run_line(run))
        print(f"  retried at its step: {advancing}")
    return 0


def cmd_messages(args: argparse.Namespace) -> int:
    """``buttress messages`` (``list_messages``)."""
    with cli.opened(args) as runtime:
        found = runtime.list_messages(topic=args.topic, undelivered=args.undelivered, limit=args.limit)
    if cli.emit(args, found):
        return 0
    for m in found:
        state = f"held: {m.held}" if m.held else ("acked" if m.acked_at else f"delivered x{m.deliveries}")
        print(
            f"{m.seq:>6}  {m.topic:<16}  v{m.version:<3}  {m.message_id:<36}  {state}  {json.dumps(m.payload)}"
        )
    if not found:
        print("no messages")
    return 0


def cmd_effects_list(args: argparse.Namespace) -> int:
    """``buttress effects list`` (``list_effects``): the unknown ones first."""
    with cli.opened(args) as runtime:
        found = runtime.list_effects(state=args.state, run_id=args.run_id, limit=args.limit)
    if cli.emit(args, found):
        return 0
    for e in found:
        error = f"  last error: {e.error.get('message')}" if e.error else ""
        print(
            f"{e.effect_id}  {e.state:<9}  run {e.run_id}  step {e.step}  via {e.connector}  "
            f"{e.attempts} attempt(s)  age {e.age_s:.0f}s{error}"
        )
    if not found:
        print("no effects")
    return 0


def cmd_effects_resolve(args: argparse.Namespace) -> int:
    """``buttress effects resolve EFFECT --outcome succeeded|rejected`` (``resolve_effect``)."""
    response = json.loads(args.response) if args.response else None
    if not cli.confirm(args, f"record that effect {args.effect_id} {args.outcome} at the provider?"):
        print("not resolved (pass --yes to resolve non-interactively)")
        return 1
    with cli.opened(args) as runtime:
        effect = runtime.resolve_effect(args.effect_id, args.outcome, response=response, actor=cli.OPERATOR)
        advancing = _advancing(runtime)
    if not cli.emit(args, effect):
        print(f"effect {effect.effect_id} is {effect.state}; its run continues at its next step: {advancing}")
    return 0
