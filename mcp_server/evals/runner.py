"""The runner: each run gets a fresh project made from the seed, a real server, the agent, and a
verdict on what it left behind.

``run`` is ``buttress eval run``: every scenario ``k`` times with one agent (a scripted one, in
this process, or an external command), faults injected as asked, into a ``Scorecard``.
``hygiene`` is ``buttress eval check``: for each scenario the reference must pass, the null agent
must fail (unless refusing is right), and every adversarial script's attempts must be refused
with the safety checks holding.

A run, in order: copy the scenario's template project; start its fake providers; give the agent
its token (HTTP); run the agent against ``buttress serve`` (scripted: the server starts on the
first connection, so an agent that never connects costs no server); stop the server; open the
project as the operator and evaluate the checks on the audit log and the end state.
"""

from __future__ import annotations

import datetime
import importlib.util
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio

from mcp_server import project as projects
from mcp_server.evals import external, providers, seeding
from mcp_server.evals.agent import Agent, Link, ScriptFailed, null_agent
from mcp_server.evals.approver import Approver
from mcp_server.evals.checks import Evidence, evaluate, usage
from mcp_server.evals.faults import FaultPlan, Injector
from mcp_server.evals.faults import check as check_fault
from mcp_server.evals.intercept import HttpTap, StdioTap
from mcp_server.evals.scenario import NULL, REFERENCE, Scenario
from mcp_server.evals.scorecard import (
    AttemptResult,
    CheckResult,
    FaultResult,
    RunResult,
    ScenarioResult,
    Scorecard,
    compare,
    exit_code,
    read_baseline,
)
from mcp_server.evals.servers import HttpServer, InProcessServer, StdioServers
from runtime.errors import ButtressError, Code, ConfigError, NotFound

Transport = Literal["stdio", "http", "memory"]
"""How the agent reaches the server: ``buttress serve`` over stdio or streamable HTTP, or (scripted
agents only; the test suite's fast path) the server object in this process over an in-memory
transport."""
Servers = HttpServer | StdioServers | InProcessServer
Script = Callable[[Agent], Awaitable[None]]


@dataclass(frozen=True)
class AgentChoice:
    """Who plays: a scripted agent of the scenario (by name) or an external command."""

    script: str | None = REFERENCE
    command: str | None = None

    @property
    def label(self) -> str:
        return f"command: {self.command}" if self.command is not None else f"scripted: {self.script}"

    def describe(self) -> dict[str, str]:
        kind = "command" if self.command is not None else "scripted"
        return {"kind": kind, "name": str(self.command or self.script), "label": self.label}


@dataclass(frozen=True)
class Options:
    """How to run."""

    agent: AgentChoice = AgentChoice()
    transport: Transport = "stdio"
    k: int = 1
    faults: tuple[str, ...] = ()
    seed: int = 0
    keep: Path | None = None
    """Keep each run's project, server log and agent log under this directory."""
    timeout_s: float | None = None
    logs: Path | None = None
    """Without ``keep``: where a failing run's logs are kept (``LOGS/runs/SCENARIO/AGENT-N``), so
    that what the scorecard points at exists; without either, a failure quotes the log's end."""


@dataclass
class _Outcome:
    """What happened while the agent ran (the verdict comes from the evidence, not from here)."""

    error: str | None = None
    log: Path | None = None
    """The log ``error`` is explained in."""
    exit_code: int | None = None
    link: Link | None = None
    calls: int = 0
    """The calls the runner saw the agent make (scripted agents, and external ones under faults)."""
    starts: int = 0
    attempts: list[AttemptResult] = field(default_factory=list)


# --------------------------------------------------------------------------------------- scripts


def load_script(scenario: Scenario, name: str) -> Script:
    """The ``run`` coroutine of the scenario's scripted agent ``name`` (``null``: the built-in one
    unless the scenario has its own)."""
    path = scenario.scripts.get(name)
    if path is None:
        if name == NULL:
            return null_agent
        raise NotFound(
            "scripted agent",
            name,
            hint=f"Scenario {scenario.id} has: {', '.join(sorted({NULL, *scenario.scripts}))}.",
        )
    module_name = f"buttress_eval_agent_{scenario.id.replace('-', '_')}_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise _script_error(scenario, name, "cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise _script_error(scenario, name, f"fails to import: {type(error).__name__}: {error}") from None
    script = getattr(module, "run", None)
    if script is None or not callable(script):
        raise _script_error(scenario, name, "defines no `async def run(agent)`")
    return script  # type: ignore[no-any-return]


def _script_error(scenario: Scenario, name: str, message: str) -> ConfigError:
    return ConfigError(
        Code.CONFIG_INVALID,
        f"scenario {scenario.id}: scripted agent {name!r} {message}",
        hint="A scripted agent is a module with `async def run(agent: Agent) -> None`.",
        details={"scenario": scenario.id, "agent": name},
    )


# ------------------------------------------------------------------------------------------- runs


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    directory = Path(tempfile.mkdtemp(prefix="buttress-eval-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def template(scenario: Scenario, workdir: Path) -> seeding.Template:
    """The scenario's seeded template project (built once per invocation)."""
    root = workdir / "templates" / scenario.id
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    return seeding.build(scenario, root)


def run_once(
    scenario: Scenario, seeded: seeding.Template, options: Options, index: int, workdir: Path
) -> RunResult:
    """One run of ``options.agent`` on ``scenario``, from a fresh copy of the template."""
    name = options.agent.script if options.agent.command is None else "command"
    directory = workdir / "runs" / scenario.id / f"{name}-{index}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    project = seeding.clone(seeded, directory / "project")
    started = time.perf_counter()
    servers, urls = providers.start(scenario, index, directory)
    try:
        token = seeding.prepare_run(scenario, project, token=options.transport == "http", providers=urls)
        plan = FaultPlan.of(
            [*scenario.manifest.faults, *options.faults],
            seed=options.seed + index - 1,
            horizon=scenario.manifest.fault_horizon,
        )
        approver = Approver(project.database, approves=scenario.manifest.operator.approves)
        outcome = anyio.run(_drive, scenario, project, options, index, directory, plan, approver, token)
    finally:
        providers.stop(servers)
    wall = time.perf_counter() - started
    runtime, _ = projects.connect(project)
    try:
        evidence = Evidence.gather(
            runtime,
            agent=scenario.manifest.agent.name,
            seed_invariants=seeded.invariants,
            providers={
                p.name: providers.state_file(directory, p.name) for p in scenario.manifest.seed.providers
            },
        )
        verdicts = evaluate(scenario.manifest.checks, evidence)
        used = usage(evidence)
    finally:
        runtime.close()
    checks = [CheckResult(**v.__dict__) for v in verdicts]
    faults = fault_results(plan, outcome, evidence, all(c.passed for c in checks))
    error, logs = _point_at_logs(outcome, options, directory, workdir)
    return RunResult(
        run=index,
        passed=all(c.passed for c in checks) and all(f.fired for f in faults),
        checks=checks,
        tool_calls=used.tool_calls,
        tool_calls_total=used.total,
        refusals=used.refusals,
        invariant_violations_prevented=used.invariant_violations_prevented,
        attempts=outcome.attempts,
        faults=faults,
        server_starts=outcome.starts,
        reconnects=outcome.link.reconnects if outcome.link else 0,
        steps=outcome.calls,
        agent_error=error,
        agent_exit_code=outcome.exit_code,
        wall_time_s=round(wall, 3),
        directory=str(directory) if options.keep is not None else None,
        logs=str(logs) if logs is not None else None,
    )


SUCCEEDED = frozenset({"ok", "passed", "replayed"})
"""Audit outcomes of a call that worked (a dry-run that found problems still answered: ``failed``
is not among them, nor ``refused``)."""
LOG_TAIL = 8


def fault_results(
    plan: FaultPlan, outcome: _Outcome, evidence: Evidence, checks_passed: bool
) -> list[FaultResult]:
    """Every planned kill: where it fired and whether the agent recovered (a call of its own
    succeeded after the kill, by the audit log, and every check passed); or why it did not fire."""
    entries = evidence.agent_entries()
    results = []
    for fired in plan.fired:
        at = datetime.datetime.fromisoformat(fired.at)
        later = any(e.outcome in SUCCEEDED and datetime.datetime.fromisoformat(e.time) > at for e in entries)
        recovered = later and checks_passed
        results.append(
            FaultResult(
                spec=fired.spec,
                fired=True,
                step=fired.step,
                tool=fired.tool,
                when=fired.when,
                killed=fired.killed,
                recovered=recovered,
                message=""
                if recovered
                else "no call of the agent succeeded after it"
                if not later
                else "the agent's calls went through after it, but checks failed",
            )
        )
    for kill in plan.missed():
        results.append(
            FaultResult(
                spec=kill.spec,
                fired=False,
                when=kill.when,
                message=f"did not fire: it was due at {kill.describe()}, and the agent made "
                f"{outcome.calls} call(s)",
            )
        )
    return results


def _point_at_logs(
    outcome: _Outcome, options: Options, directory: Path, workdir: Path
) -> tuple[str | None, Path | None]:
    """The agent's error, pointing at a log that exists after the run: kept with ``--keep``, copied
    to ``options.logs`` otherwise, or else quoted (its last lines)."""
    if outcome.error is None or outcome.log is None or not outcome.log.is_file():
        return outcome.error, None
    if options.keep is not None:
        return f"{outcome.error} (see {outcome.log})", outcome.log.parent
    if options.logs is not None:
        kept = options.logs / directory.relative_to(workdir)
        kept.mkdir(parents=True, exist_ok=True)
        for log in directory.glob("*.log"):
            shutil.copy2(log, kept / log.name)
        return f"{outcome.error} (see {kept / outcome.log.name})", kept
    lines = outcome.log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    return f"{outcome.error}; the end of {outcome.log.name}:\n" + "\n".join(lines), None


async def _drive(
    scenario: Scenario,
    project: projects.Project,
    options: Options,
    index: int,
    directory: Path,
    plan: FaultPlan,
    approver: Approver,
    token: str | None,
) -> _Outcome:
    agent_name = scenario.manifest.agent.name
    log = directory / "server.log"
    servers: Servers = (
        HttpServer(project.root, agent_name, log)
        if options.transport == "http"
        else InProcessServer(project.root, agent_name)
        if options.transport == "memory"
        else StdioServers(project.root, agent_name, log)
    )
    timeout = options.timeout_s or scenario.manifest.timeout_s
    outcome = _Outcome()
    try:
        if options.agent.command is not None:
            assert not isinstance(servers, InProcessServer)  # refused by _check_options
            await _drive_command(
                scenario,
                options.agent.command,
                servers,
                index,
                directory,
                plan,
                approver,
                token,
                timeout,
                outcome,
            )
        else:
            assert options.agent.script is not None
            await _drive_script(
                scenario,
                options.agent.script,
                servers,
                index,
                directory,
                plan,
                approver,
                token,
                timeout,
                outcome,
            )
    finally:
        await servers.stop()
    outcome.starts = servers.starts
    return outcome


async def _drive_script(
    scenario: Scenario,
    name: str,
    servers: Servers,
    index: int,
    directory: Path,
    plan: FaultPlan,
    approver: Approver,
    token: str | None,
    timeout: float,
    outcome: _Outcome,
) -> None:
    script = load_script(scenario, name)
    async with anyio.create_task_group() as tasks:
        link = Link(servers=servers, plan=plan, approve=approver.ask, tasks=tasks, token=token)
        outcome.link = link
        agent = Agent(link, scenario=scenario.id, prompt=scenario.prompt, run=index)
        try:
            with anyio.fail_after(timeout):
                await script(agent)
        except TimeoutError:
            outcome.error = f"the scripted agent ran out of time ({timeout:g}s)"
        except ButtressError:
            raise
        except Exception as error:  # reported on the run (and its log); the checks still judge
            outcome.error = _describe(error)
            outcome.log = directory / "agent.log"
            with outcome.log.open("a", encoding="utf-8") as log:
                traceback.print_exception(error, file=log)
        finally:
            await agent.close_all()
            outcome.calls = link.injector.calls
        outcome.attempts = [
            AttemptResult(**{**a.__dict__, "expected": list(a.expected)}) for a in link.attempts
        ]


def _describe(error: BaseException) -> str:
    """The message of a script's failure; an exception group is described by its first leaf."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, ScriptFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"


async def _drive_command(
    scenario: Scenario,
    command: str,
    servers: HttpServer | StdioServers,
    index: int,
    directory: Path,
    plan: FaultPlan,
    approver: Approver,
    token: str | None,
    timeout: float,
    outcome: _Outcome,
) -> None:
    """Run the agent's command to its end. With kills to inject, the runner stands between the agent
    and its server (``intercept``) and counts its calls; otherwise the agent reaches it directly."""
    workdir = directory / "agent"
    workdir.mkdir()
    prompt = workdir / "prompt.md"
    prompt.write_text(scenario.prompt, encoding="utf-8")
    injector = Injector(plan, servers.kill)
    async with AsyncExitStack() as stack:
        if isinstance(servers, HttpServer):
            await servers.ensure_running()
            url = servers.url
            if plan.kills:
                url = (await stack.enter_async_context(HttpTap(servers, injector).running())).url
            env = external.environment(
                scenario=scenario.id, run=index, prompt=prompt, workdir=workdir, url=url, token=token
            )
        else:
            argv = servers.argv
            if plan.kills:
                argv = (await stack.enter_async_context(StdioTap(servers, injector).running())).argv(
                    sys.executable
                )
            env = external.environment(
                scenario=scenario.id, run=index, prompt=prompt, workdir=workdir, argv=argv
            )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(approver.watch)
            code = await external.run(command, env=env, log=directory / "agent.log", timeout_s=timeout)
            tasks.cancel_scope.cancel()
    outcome.exit_code = code
    outcome.calls = injector.calls
    if code is None:
        outcome.error = f"the agent command ran out of time ({timeout:g}s)"
    elif code != 0:
        outcome.error = f"the agent command exited with {code}"
    outcome.log = directory / "agent.log"


def _check_options(scenarios: list[Scenario], options: Options) -> None:
    """Refuse before any run what cannot work: a bad -k, a fault that is malformed or can never fire,
    the in-process transport for an external command, a scripted agent a scenario lacks."""
    from tools.registry import REGISTRY

    if options.k < 1:
        raise ConfigError(Code.CONFIG_INVALID, "-k must be at least 1", hint="Pass -k 1 or more.")
    tools = [tool.name for tool in REGISTRY]
    for spec in options.faults:
        check_fault(spec, tools)
    for scenario in scenarios:
        for spec in scenario.manifest.faults:
            check_fault(spec, tools)
    if options.agent.command is not None and options.transport == "memory":
        raise ConfigError(
            Code.CONFIG_INVALID,
            "the in-process transport serves scripted agents; an external command needs a server it can reach",
            hint="Use --transport stdio or http with --agent-cmd.",
        )
    if options.agent.command is None:
        for scenario in scenarios:
            if options.agent.script not in scenario.scripts and options.agent.script != NULL:
                load_script(scenario, str(options.agent.script))  # raises not_found naming the scripts


def run_scenario(scenario: Scenario, options: Options, workdir: Path) -> ScenarioResult:
    """``options.k`` runs of one scenario."""
    seeded = template(scenario, workdir)
    runs = [run_once(scenario, seeded, options, index, workdir) for index in range(1, options.k + 1)]
    return ScenarioResult.of(
        id=scenario.id,
        title=scenario.manifest.title,
        tags=list(scenario.manifest.tags),
        agent=options.agent.label,
        runs=runs,
    )


def run(
    scenarios: list[Scenario],
    options: Options,
    *,
    baseline: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Scorecard:
    """``buttress eval run``: every scenario, ``k`` runs each, into a scorecard."""
    from mcp_server.cli import version

    _check_options(scenarios, options)
    entries = read_baseline(baseline) if baseline is not None else None
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    results = []
    with _workdir(options.keep) as workdir:
        for scenario in scenarios:
            if progress is not None:
                progress(f"{scenario.id}: {options.k} run(s), {options.agent.label}")
            results.append(run_scenario(scenario, options, workdir))
    compared = compare(results, entries, baseline) if entries is not None and baseline is not None else None
    code = exit_code(results, compared)
    return Scorecard(
        buttress_version=version(),
        started_at=started_at,
        agent=options.agent.describe(),
        transport=options.transport,
        k=options.k,
        seed=options.seed,
        faults=list(options.faults),
        scenarios=results,
        baseline=compared,
        passed=code == 0,
        exit_code=code,
        wall_time_s=round(time.perf_counter() - started, 3),
    )


# ---------------------------------------------------------------------------------------- hygiene


@dataclass(frozen=True)
class Hygiene:
    """Whether one scenario tells good agents from bad: reference passes, null fails (unless
    refusing is right), adversarial scripts are refused and the safety checks hold."""

    scenario: str
    reference: RunResult
    null: RunResult
    adversarial: dict[str, RunResult]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def judge_adversarial(name: str, result: RunResult) -> list[str]:
    """Why an adversarial run is not a clean refusal (empty when it is)."""
    problems = []
    if not result.attempts:
        problems.append(f"adversarial {name} made no attempt (agent.attempt)")
    problems += [f"adversarial {name}: {a.label}: {a.message}" for a in result.attempts if not a.refused]
    problems += [
        f"adversarial {name}: safety check {c.id} failed: {c.message}"
        for c in result.checks
        if c.safety and not c.passed
    ]
    return problems


def hygiene(scenario: Scenario, *, transport: Transport = "stdio", workdir: Path | None = None) -> Hygiene:
    """Run the reference, the null agent and every adversarial script once each, and judge them
    (also: ``kill@random`` must be able to land on one of the reference's calls)."""
    with _workdir(workdir) as directory:
        seeded = template(scenario, directory)

        def one(script: str) -> RunResult:
            options = Options(agent=AgentChoice(script=script), transport=transport)
            return run_once(scenario, seeded, options, 1, directory)

        reference, null = one(REFERENCE), one(NULL)
        adversarial = {name: one(name) for name in scenario.adversarial}
    problems = []
    if not reference.passed:
        failed = "; ".join(f"{c.id}: {c.message}" for c in reference.failed_checks)
        problems.append(f"the reference fails: {failed or reference.agent_error}")
    if reference.agent_error:
        problems.append(f"the reference stopped: {reference.agent_error}")
    horizon = scenario.manifest.fault_horizon
    if reference.steps < horizon:
        problems.append(
            f"fault_horizon is {horizon} but the reference makes {reference.steps} calls: kill@random "
            f"could miss every one of them (set fault_horizon to {reference.steps} or less)"
        )
    null_passes = scenario.manifest.null_agent == "passes"
    null_checks = all(c.passed for c in null.checks)  # its kills cannot fire: it makes no call
    if null_checks != null_passes:
        problems.append(
            "the null agent passes: the checks do not tell doing the task from doing nothing"
            if null_checks
            else "the null agent fails, but the scenario says refusing is the right answer"
        )
    for name, result in adversarial.items():
        problems += judge_adversarial(name, result)
    return Hygiene(scenario.id, reference, null, adversarial, problems)
