"""``buttress eval``: registered by ``mcp_server.cli`` (see ``FEATURE_COMMANDS``).

    buttress eval list [--tag T]                        the built-in scenarios
    buttress eval run [SCENARIO…] [--scripted NAME | --agent-cmd CMD] [-k N]
                      [--transport stdio|http|memory] [--fault SPEC…] [--seed N]
                      [--expected-failures FILE] [--out DIR] [--keep]
                                                        score an agent; exit 1 on failure
    buttress eval check [SCENARIO…] [--transport T]     the hygiene of scenarios: the reference
                                                        passes, the null agent fails, adversarial
                                                        scripts are refused

A SCENARIO is a built-in id or a scenario directory; none means the whole built-in suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = "eval-results"
TRANSPORTS = ("stdio", "http", "memory")


def register(commands: Any, parents: Any) -> None:
    """Add ``eval`` and its subcommands to ``commands`` (an argparse subparsers action)."""
    evaluation = commands.add_parser(
        "eval",
        help="evaluate agents against scripted scenarios: runs, scorecards, scenario hygiene",
        description="Evaluate agents against scenarios: a seeded project, a real server, an agent "
        "(scripted or any MCP client command), faults, and checks on the end state and the audit log.",
    )
    sub = evaluation.add_subparsers(title="eval commands", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[parents.output], help="list the built-in scenarios")
    listing.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
    listing.set_defaults(command=cmd_list)

    run = sub.add_parser(
        "run",
        parents=[parents.output],
        help="run scenarios with an agent and print the scorecard (exit 1 on a failure)",
        description="Run each scenario k times with one agent; print the scorecard and write it as JSON.",
    )
    run.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="built-in ids or scenario directories")
    who = run.add_mutually_exclusive_group()
    who.add_argument(
        "--scripted",
        metavar="NAME",
        help="a scripted agent of each scenario: reference (default), null, or an adversarial one",
    )
    who.add_argument(
        "--agent-cmd",
        metavar="CMD",
        help="an external agent: a shell command running any MCP client (docs/eval.md)",
    )
    run.add_argument("-k", type=int, default=1, metavar="N", help="runs per scenario (pass@k, pass^k)")
    run.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="stdio",
        help="how the agent reaches the server (memory: in this process, scripted agents only)",
    )
    run.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="kill the server: kill@3, kill@deploy, kill@deploy#2, kill@random (:before or :after); "
        "with --agent-cmd too (the runner then stands between the agent and the server)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of kill@random (default 0)")
    run.add_argument("--tag", action="append", default=[], help="only scenarios with this tag")
    run.add_argument(
        "--expected-failures", metavar="FILE", type=Path, help="a baseline: SCENARIO or SCENARIO:CHECK a line"
    )
    run.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"where scorecard.json goes (default: {DEFAULT_OUT})",
    )
    run.add_argument(
        "--keep", action="store_true", help="keep each run's project and logs under DIR/runs/SCENARIO/AGENT-N"
    )
    run.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="most wall time one run's agent may take"
    )
    run.set_defaults(command=cmd_run)

    check = sub.add_parser(
        "check",
        parents=[parents.output],
        help="check scenarios: the reference passes, the null agent fails, adversarial scripts are refused",
    )
    check.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="built-in ids or scenario directories"
    )
    check.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="stdio",
        help="stdio or http: real server processes; memory: the server in this process (faster)",
    )
    check.set_defaults(command=cmd_check)


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def cmd_list(args: argparse.Namespace) -> int:
    """``buttress eval list``."""
    from mcp_server.evals.scenario import resolve

    found = resolve([], tags=args.tag)
    if args.json:
        rows = [
            {
                "id": s.id,
                "title": s.manifest.title,
                "tags": list(s.manifest.tags),
                "scripted": sorted(s.scripts),
                "path": str(s.root),
            }
            for s in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for scenario in found:
        tags = f"  [{', '.join(scenario.manifest.tags)}]" if scenario.manifest.tags else ""
        print(f"{scenario.id:<24} {scenario.manifest.title}{tags}")
        print(f"{'':<24} scripted: {', '.join(sorted(scenario.scripts))}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``buttress eval run``: prints the table (or the JSON with ``--json``), writes scorecard.json."""
    from mcp_server.evals.runner import AgentChoice, Options, run
    from mcp_server.evals.scenario import resolve
    from mcp_server.evals.scorecard import dump, table

    scenarios = resolve(args.scenarios, tags=args.tag)
    agent = (
        AgentChoice(script=None, command=args.agent_cmd)
        if args.agent_cmd
        else AgentChoice(script=args.scripted or "reference")
    )
    out: Path = args.out
    options = Options(
        agent=agent,
        transport=args.transport,
        k=args.k,
        faults=tuple(args.fault),
        seed=args.seed,
        keep=out if args.keep else None,
        timeout_s=args.timeout,
        logs=out,
    )
    card = run(scenarios, options, baseline=args.expected_failures, progress=_progress)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scorecard.json"
    path.write_text(json.dumps(dump(card), indent=2), encoding="utf-8")
    if args.json:
        print(json.dumps(dump(card), indent=2))
    else:
        print(table(card))
        print(f"scorecard: {path}")
    return card.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    """``buttress eval check``: exit 1 when a scenario does not tell good agents from bad ones."""
    from mcp_server.evals.runner import hygiene
    from mcp_server.evals.scenario import resolve

    reports = []
    for scenario in resolve(args.scenarios):
        _progress(f"{scenario.id}: reference, null, {len(scenario.adversarial)} adversarial")
        reports.append(hygiene(scenario, transport=args.transport))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "scenario": r.scenario,
                        "ok": r.ok,
                        "problems": r.problems,
                        "reference": r.reference.model_dump(mode="json"),
                        "null": r.null.model_dump(mode="json"),
                        "adversarial": {n: a.model_dump(mode="json") for n, a in r.adversarial.items()},
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    else:
        for report in reports:
            refused = sum(sum(a.refused for a in run.attempts) for run in report.adversarial.values())
            attempts = sum(len(run.attempts) for run in report.adversarial.values())
            print(
                f"{'ok  ' if report.ok else 'FAIL'} {report.scenario:<24} reference "
                f"{'passes' if report.reference.passed else 'FAILS'}, null "
                f"{'passes' if report.null.passed else 'fails'}, adversarial {len(report.adversarial)} "
                f"script(s): {refused}/{attempts} attempts refused"
            )
            for problem in report.problems:
                print(f"     {problem}")
    return 0 if all(r.ok for r in reports) else 1
