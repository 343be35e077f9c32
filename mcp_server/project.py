"""A Buttress project: a directory holding ``buttress.toml`` and the database it names.

``init`` creates one (``DIR/.buttress/`` holds recomputable caches); ``Project.load`` reads it; ``Project.open`` opens its runtime, and
``BackgroundRuntime`` does that in a thread so that a server answers ``initialize`` while the
database opens. The database engine is imported only when a runtime is opened.
"""

from __future__ import annotations

import logging
import threading
import tomllib
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import Code, NotFound, SpecError

if TYPE_CHECKING:
    from runtime.boundary.policy import Policy
    from runtime.runtime import Runtime

logger = logging.getLogger(__name__)

CONFIG_NAME = "buttress.toml"
DEFAULT_AGENT = "agent"

CONFIG_TEMPLATE = """\
# Buttress project configuration, read by every `buttress` command run with --project {root}.
# Relative paths are resolved against this file's directory.

[database]
# The DuckDB file holding the application's data, its versions and its audit log.
# DuckDB lets one process open it at a time: while `buttress serve` runs, other commands
# on this project fail with engine.locked.
path = "app.duckdb"

[server]
# The agent named in the audit log when `buttress serve` runs without --agent.
agent = "{agent}"

[limits]
# Most rows one query may return (the query tool's limit cannot exceed it).
max_rows = 1000
# Seconds before a query or an action is interrupted.
query_timeout_s = 10.0
action_timeout_s = 10.0
# Most operations in one proposal, and the longest SQL text accepted.
max_operations = 200
max_sql_length = 100000

# Operator policy: who may do what. A placeholder: these tables show the intended shape and are
# not enforced yet. Uncomment and adapt them when they are.
#
# [agents.{agent}]
# role = "developer"              # reader | operator | developer | admin | owner
#
# [protected]
# entities = ["payment"]          # no proposal may create, alter or drop these
# fields = ["customer.email"]
#
# [approvals]
# severity = "high"               # hazardous deploys at or above wait for a human approval
# ttl_minutes = 60
"""


@dataclass(frozen=True)
class Project:
    """A project directory and its configuration."""

    root: Path
    database: Path
    agent: str = DEFAULT_AGENT

    @property
    def cache_dir(self) -> Path:
        """Where the server stores what it can recompute (its tool listing)."""
        return self.root / ".buttress"

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
            raise SpecError(
                Code.SPEC_INVALID,
                f"{config_path} cannot be read: {error}",
                hint=f"Fix {CONFIG_NAME}; `buttress init` in an empty directory shows the expected shape.",
                details={"path": str(config_path)},
            ) from None
        database = Path(str(config.get("database", {}).get("path", "app.duckdb")))
        return cls(
            root=root,
            database=database if database.is_absolute() else root / database,
            agent=str(config.get("server", {}).get("agent", DEFAULT_AGENT)),
        )

    def open(self) -> Runtime:
        """Open (or create) the project's runtime with its configured limits."""
        from runtime.runtime import Runtime

        policy = self.policy()
        return Runtime.open(self.database, limits=policy.limits, policy=policy)

    def policy(self) -> Policy:
        """The operator's policy from ``buttress.toml`` (agents, roles, protected entities, approvals)."""
        from runtime.boundary.policy import load

        return load(self.root / CONFIG_NAME)


def init(root: str | Path, *, agent: str = DEFAULT_AGENT) -> Project:
    """Create ``root`` with a commented ``buttress.toml`` and an empty application database."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / CONFIG_NAME
    if not config_path.exists():
        config_path.write_text(CONFIG_TEMPLATE.format(root=root, agent=agent), encoding="utf-8")
    project = Project.load(root)
    project.open().close()
    return project


class BackgroundRuntime:
    """Opens a project's runtime in a background thread (a ``tools.base.LazyRuntime``)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._future: Future[Runtime] = Future()
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin opening in a background thread, once."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._open, name="buttress-open", daemon=True).start()

    def _open(self) -> None:
        try:
            self._future.set_result(self.project.open())
        except BaseException as error:
            logger.warning("cannot open %s: %s", self.project.database, error)
            self._future.set_exception(error)

    def ready(self) -> Runtime | None:
        """The runtime if it has opened, else None (never waits)."""
        if self._future.done() and self._future.exception() is None:
            return self._future.result()
        return None

    def get(self) -> Runtime:
        """The open runtime, once opened; re-raises the error if opening failed."""
        self.start()
        return self._future.result()

    def close(self) -> None:
        """Close the runtime once it has opened (checkpointing the database); nothing if it failed to open."""
        if not self._started or self._future.exception() is not None:
            return
        self._future.result().close()
