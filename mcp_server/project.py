"""A Buttress project: a directory holding ``buttress.toml`` and the database it names.

``init`` creates one (``DIR/.buttress/`` holds recomputable caches); ``Project.load`` reads it;
``Project.open`` opens its runtime; ``connect`` resolves the runtime a process should use (attached to
the project's owner, or opened here: ``mcp_server.owner`` says which process owns a project), and
``BackgroundRuntime`` does that in a thread so that a server answers ``initialize`` at once. The
database engine is imported only when a runtime is opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import ButtressError, Code, ConfigError, NotFound

if TYPE_CHECKING:
    from mcp_server.channel import ClientInfo
    from mcp_server.owner import Owner, OwnerKind
    from runtime.api import RuntimeAPI
    from runtime.boundary.policy import Policy
    from runtime.boundary.policyfile import PolicyFile
    from runtime.runtime import Runtime

logger = logging.getLogger(__name__)

CONFIG_NAME = "buttress.toml"
DEFAULT_AGENT = "agent"
DEFAULT_IDLE_STOP_S = 300.0
DEFAULT_URL_ENV = "BUTTRESS_DATABASE_URL"
ENGINES = ("duckdb", "postgres")

CONFIG_TEMPLATE = """\
# Buttress project configuration. Every `buttress` command run with --project {root} reads it, and the
# process that owns the project follows it: a change is in force within a second, a broken file is
# refused (the policy in force stays; `buttress status` says why). Everything below is enforced.
# Relative paths are resolved against this file's directory.

[database]
# The DuckDB file holding the application's data, its versions and its audit log. One process owns it:
# the project daemon, which `buttress serve` starts when none runs (or `buttress serve --http`, or
# `buttress ui`, when they start first); every other serve and command attaches to it over
# .buttress/app.duckdb.sock, readable by this OS user only. `buttress status` shows who owns it.
path = "app.duckdb"
# engine = "postgres"               # instead: a PostgreSQL database that several servers share
# url_env = "BUTTRESS_DATABASE_URL" # the environment variable holding its connection string (kept out
                                    # of this directory, where agents may read)

[server]
# The agent named in the audit log when `buttress serve` runs over stdio without --agent.
agent = "{agent}"
# The project daemon stops after this many seconds with no client attached and no work due.
idle_stop_s = 300.0

# Who may do what. Each agent has a role; a role is a list of capabilities: read, query, run_actions,
# propose, dry_run, deploy, deploy_hazardous, rollback, finalize, run_workflows, manage_runs, publish,
# consume, resolve_effects. Built-in roles:
#   reader      read, query
#   operator    read, query, run_actions, run_workflows, publish, consume
#   maintainer  everything but deploy_hazardous, finalize and resolve_effects
#   developer   everything but finalize and resolve_effects
#   owner       everything
# An agent not listed here has no capability at all. Over HTTP an agent is known by its bearer token:
# `buttress token NAME --role ROLE` adds one (only its sha256 is stored) and keeps the entries below.
#
# [agents.ci-bot]
# role = "reader"
# token_sha256 = "..."              # written by `buttress token ci-bot --role reader`
# actions = ["book"]                # optional: the only actions this agent's calls may run
# workflows = ["checkout"]          # optional: the only workflows they may start
# topics = ["orders"]               # optional: the only topics they may publish on
# connectors = ["payments"]         # optional: the only connectors their effects may use
#
# [roles.reviewer]                  # a role of your own
# capabilities = ["read", "query", "dry_run"]

[agents.{agent}]
role = "developer"

[approvals]
# Agent deploys and rollbacks whose hazards reach this severity wait for a human: the agent gets
# deploy.needs_approval with a request id, and you run `buttress approve ID`. Severities: info, low,
# medium, high; "none" turns approvals off (for throwaway projects only).
severity = "high"
ttl_minutes = 60
# elicitation = true                # also offer MCP clients that can open URLs the control room's page
                                    # for the request (the operator still signs in there and decides)

# [protected]
# entities = ["payment"]            # no agent proposal may create, alter, rename or drop these
# fields = ["customer.email"]       # ...or touch these fields (drop, rename, retype, index, drop entity)

[limits]
max_rows = 1000                     # most rows one query or action returns
max_result_bytes = 8388608          # most bytes of values one query or action returns
query_timeout_s = 10.0              # time limit of a query
action_timeout_s = 10.0             # time limit of an action
change_timeout_s = 300.0            # time limit of a dry-run, deploy, rollback or finalize
lane_wait_s = 10.0                  # longest a write waits for another write before engine.busy
invariant_budget_ms = 1000.0        # most time one invariant check may add to a mutation
max_operations = 200                # most operations in one proposal
max_sql_length = 100000             # longest SQL text accepted
max_request_bytes = 1048576         # largest request accepted, over stdio and HTTP
memory_limit_mb = 2048              # DuckDB's memory; larger work spills to .buttress/spill
max_spill_mb = 10240                # most disk DuckDB may spill to
# threads = 4                       # DuckDB worker threads (default: one per core)
max_chain_depth = 16                # most hops a chain of messages and runs may take
max_fanout = 32                     # most subscriptions on one topic, and emits of one action
max_runs_per_minute = 600           # most runs the calls of one agent may start in a minute
run_lease_s = 30.0                  # shared database: how long a server holds a run it advances

# Endpoints workflow effects may call. Agents name a connector in an effect step; they never see its
# URL or credentials. Each request carries an idempotency key (the same on every retry).
# [connectors.payments]
# url = "https://api.example.com/v1/charges"
# method = "POST"
# headers_from_env = {{ "Authorization" = "PAYMENTS_AUTH" }}   # header -> environment variable
# timeout_s = 10.0
# idempotency_header = "Idempotency-Key"
"""


@dataclass(frozen=True)
class Project:
    """A project directory and its configuration."""

    root: Path
    database: Path
    agent: str = DEFAULT_AGENT
    idle_stop_s: float = DEFAULT_IDLE_STOP_S
    """How long the project daemon stays with nothing to do (``[server] idle_stop_s``)."""
    engine: str = "duckdb"
    """``[database] engine``: ``duckdb`` (the file, one owner) or ``postgres`` (a shared database)."""
    url_env: str = DEFAULT_URL_ENV
    """``[database] url_env``: the environment variable holding PostgreSQL's connection string."""

    @property
    def cache_dir(self) -> Path:
        """Where the server stores what it can recompute (its tool listing)."""
        return self.root / ".buttress"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @classmethod
    def load(cls, root: str | Path) -> Project:
        """Read ``root/buttress.toml``; ``not_found`` if the directory is not an initialised project."""
        root = Path(root).resolve()
        config_path = root / CONFIG_NAME
        if not config_path.is_file():
            raise NotFound(
                "project",
                str(root),
                hint=f"Run `buttress init {root}` first, or pass --project with the "
                f"directory that holds {CONFIG_NAME}.",
            )
        try:
            config = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(
                Code.CONFIG_INVALID,
                f"{config_path} cannot be read: {error}",
                hint=f"Fix {CONFIG_NAME}; `buttress init` in an empty directory shows the expected shape.",
                details={"path": str(config_path)},
            ) from None
        section = config.get("database", {})
        engine = str(section.get("engine", "duckdb"))
        url_env = str(section.get("url_env", DEFAULT_URL_ENV))
        if engine not in ENGINES or not url_env.isidentifier():
            raise ConfigError(
                Code.CONFIG_INVALID,
                f"{CONFIG_NAME}: database.engine must be one of {', '.join(ENGINES)} and database.url_env an "
                f"environment variable's name, not {engine!r} and {url_env!r}",
                hint=f"Fix [database] in {CONFIG_NAME}.",
                details={"key": "database.engine"},
            )
        default_path = "app.duckdb" if engine == "duckdb" else "app.postgres"
        database = Path(str(section.get("path", default_path)))
        server = config.get("server", {})
        idle = server.get("idle_stop_s", DEFAULT_IDLE_STOP_S)
        if isinstance(idle, bool) or not isinstance(idle, int | float) or not 0 < idle <= 7 * 86400:
            raise ConfigError(
                Code.CONFIG_INVALID,
                f"{CONFIG_NAME}: server.idle_stop_s must be a number of seconds above 0 and at most a week, "
                f"not {idle!r}",
                hint=f"Fix {CONFIG_NAME} (the default is {DEFAULT_IDLE_STOP_S:g}).",
                details={"key": "server.idle_stop_s"},
            )
        return cls(
            root=root,
            database=database if database.is_absolute() else root / database,
            agent=str(server.get("agent", DEFAULT_AGENT)),
            idle_stop_s=float(idle),
            engine=engine,
            url_env=url_env,
        )

    def open(self, policy: Policy | None = None) -> Runtime:
        """Open (or create) the project's runtime with its configured limits (or ``policy``'s)."""
        from runtime.runtime import Runtime

        policy = policy or self.policy()
        if self.engine == "postgres":
            return Runtime.open_postgres(
                self.database_url(),
                self.database,
                limits=policy.limits,
                policy=policy,
                audit_operator_reads=True,
            )
        return Runtime.open(self.database, limits=policy.limits, policy=policy, audit_operator_reads=True)

    def database_url(self) -> str:
        """PostgreSQL's connection string, from the environment (never from the project directory)."""
        url = os.environ.get(self.url_env)
        if not url:
            raise ConfigError(
                Code.CONFIG_INVALID,
                f"this project's database is PostgreSQL and {self.url_env} is not set",
                hint=f"Set {self.url_env} to its connection string (postgresql://user@host/db) in the "
                "environment of every buttress command and server; it is never read from the project.",
                details={"url_env": self.url_env},
            )
        return url

    def policy(self) -> Policy:
        """The operator's policy from ``buttress.toml`` (agents, roles, protected entities, approvals)."""
        from runtime.boundary.policy import load

        return load(self.root / CONFIG_NAME)


def init(
    root: str | Path, *, agent: str = DEFAULT_AGENT, engine: str = "duckdb", url_env: str = DEFAULT_URL_ENV
) -> Project:
    """Create ``root`` with a commented ``buttress.toml``, an empty application database and the
    operator secret (if this machine has none). On an existing project it changes nothing."""
    from runtime.boundary.secret import ensure_operator_key
    from runtime.schema.spec import check_name

    root = Path(root).resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"{root} exists and is not a directory",
            hint="Pass a new or existing directory: buttress init creates buttress.toml and app.duckdb in it.",
        )
    try:
        check_name(agent.replace("-", "_"))
    except ValueError as error:
        raise ConfigError(
            Code.CONFIG_INVALID, f"--agent: {error}", hint="Pick a simple agent name."
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / CONFIG_NAME
    if not config_path.exists():
        text = CONFIG_TEMPLATE.format(root=root, agent=agent)
        if engine != "duckdb":
            text = text.replace('path = "app.duckdb"\n# engine = "postgres" ', f'engine = "{engine}"   ', 1)
            text = text.replace('# url_env = "BUTTRESS_DATABASE_URL"', f'url_env = "{url_env}"  ', 1)
        config_path.write_text(text, encoding="utf-8")
    ensure_operator_key()
    project = Project.load(root)
    project.policy()  # a configuration the server would refuse is reported now, not at serve
    project.open().close()
    return project


ATTACH_PATIENCE_S = 15.0
"""How long a process keeps trying to open the project or attach to its owner (an owner starting, or a
short command holding the file, is waited out)."""


def connect(
    project: Project,
    *,
    own: OwnerKind | None = None,
    spawn: bool = False,
    client: ClientInfo | None = None,
    policy: PolicyFile | None = None,
) -> tuple[RuntimeAPI, Owner | None]:
    """The project's runtime for this process: attached (as ``client``) to the process that owns the
    database when one does; else, with ``spawn``, attached to the project daemon started for it; else
    opened here — as its owner with ``own`` (serving the project's other processes over its socket,
    running its scheduler, following ``policy``), or for one command."""
    from mcp_server.channel import RemoteRuntime, socket_path
    from mcp_server.owner import Owner, start_daemon
    from runtime.errors import ButtressError, EngineError

    if project.engine == "postgres":
        return _open_shared(project, serving=own is not None or spawn, policy=policy)
    path = socket_path(project.database)
    deadline = time.monotonic() + ATTACH_PATIENCE_S
    while True:
        if path.exists():
            try:
                return RemoteRuntime.attach(path, client), None
            except ButtressError as error:
                if error.code != Code.ENGINE_OWNER_GONE:
                    raise
        if spawn:
            if time.monotonic() > deadline:
                raise EngineError(
                    Code.ENGINE_OWNER_GONE,
                    "the project daemon keeps going away before it can be attached",
                    hint="Read .buttress/owner.log beside the database; `buttress status` shows the owner.",
                )
            start_daemon(project)
            continue
        try:
            runtime = project.open(policy.current() if policy is not None else None)
        except ButtressError as error:
            if error.code != Code.ENGINE_LOCKED:
                raise
            if time.monotonic() > deadline:
                raise EngineError(
                    Code.ENGINE_LOCKED,
                    "another process holds the database file and does not serve it",
                    hint="A process that is not `buttress serve` holds it (another command, or a DuckDB "
                    "client): wait for it to finish, or stop it.",
                    details={"database": str(project.database)},
                ) from None
            time.sleep(0.1)
            continue
        if own is None:
            return runtime, None
        try:
            return runtime, Owner(project, runtime, own, policy)
        except BaseException:
            runtime.close()
            raise


def _open_shared(
    project: Project, *, serving: bool, policy: PolicyFile | None
) -> tuple[RuntimeAPI, Owner | None]:
    """A PostgreSQL project: every process opens the runtime itself (the database is shared; there is
    no daemon and no socket). Every serving process runs the scheduler (the runs' leases share the
    work among the servers, and take over the runs of one that went) and follows its own project's
    ``buttress.toml`` as the owner of a DuckDB project does."""
    from mcp_server.owner import PolicyWatch
    from mcp_server.server import check_action_tools

    runtime = project.open(policy.current() if policy is not None else None)
    runtime.spec_checks.append(check_action_tools)
    if serving:
        runtime.start_scheduler()
        PolicyWatch(project, runtime, policy, runtime.closing)  # this host's buttress.toml, followed
    return runtime, None


class BackgroundRuntime:
    """A project's runtime, resolved in a background thread (a ``tools.base.LazyRuntime``).

    With ``own`` (``buttress serve --http``, ``buttress ui``) this process owns the project when no
    other process does; without it (an agent's ``buttress serve`` over stdio) it never does: it
    attaches to the owner, starting the project daemon when none runs. When the owner goes away, the
    next call resolves again the same way.
    """

    def __init__(
        self,
        project: Project,
        *,
        own: OwnerKind | None = "http",
        client: ClientInfo | None = None,
        policy: PolicyFile | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.project = project
        self.own: OwnerKind | None = own
        self.client = client
        self.policy = policy
        self._on_open = on_open
        self._future: Future[RuntimeAPI] = Future()
        self._owner: Owner | None = None
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin resolving in a background thread, once."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._open, args=(self._future,), name="buttress-open", daemon=True).start()

    def _open(self, future: Future[RuntimeAPI]) -> None:
        try:
            runtime, self._owner = connect(
                self.project,
                own=self.own,
                spawn=self.own is None,
                client=self.client,
                policy=self.policy,
            )
            if self._on_open is not None:
                self._on_open()
            future.set_result(runtime)
        except BaseException as error:
            logger.warning("cannot open %s: %s", self.project.database, error)
            future.set_exception(error)

    def ready(self) -> RuntimeAPI | None:
        """The runtime if it has resolved, else None (never waits)."""
        if self._future.done() and self._future.exception() is None:
            return self._future.result()
        return None

    @property
    def owner(self) -> Owner | None:
        """This process's ownership of the project, when it owns it."""
        return self._owner

    def get(self) -> RuntimeAPI:
        """The runtime, once resolved; re-raises the error if it could not be; resolves again when the
        owner it was attached to has gone, or when the owner it started died before it listened (the
        error was ``engine.owner_gone``: the next call starts another)."""
        self.start()
        with self._lock:
            if self._future.done() and _owner_died(self._future.exception()):
                self._future = Future()
                self._open(self._future)
        runtime = self._future.result()
        if getattr(runtime, "broken", False):
            with self._lock:
                if self._future.done() and getattr(self._future.result(), "broken", False):
                    self._future.result().close()
                    self._future = Future()
                    self._open(self._future)
            runtime = self._future.result()
        return runtime

    def close(self) -> None:
        """Stop serving and close the runtime (checkpointing the database), or leave the owner. A process
        that may own the project waits for a runtime still opening, so that it never exits in the
        middle of opening the database; one that only attaches does not wait."""
        if not self._started:
            return
        if self.own is not None:
            with contextlib.suppress(Exception):
                self._future.exception(timeout=ATTACH_PATIENCE_S * 2)
        if not self._future.done() or self._future.exception() is not None:
            return
        if self._owner is not None:
            self._owner.close()
        self._future.result().close()


def _owner_died(error: BaseException | None) -> bool:
    return isinstance(error, ButtressError) and error.code == Code.ENGINE_OWNER_GONE
