"""The owner of a project: the one process that holds its database file open, serves it to the
project's other processes over the socket, runs its scheduler and follows its policy file.

Which process owns a project:

* **the project daemon** (``buttress owner``, hidden): started on demand, detached from whoever
  started it (its own session, standard input from ``/dev/null``, output to ``.buttress/owner.log``).
  An agent's ``buttress serve`` over stdio never owns the file: it starts the daemon when none runs
  and attaches to it, so closing the editor never stops the scheduler. So do the commands that set
  work in motion (``runs start|signal|cancel|retry``, ``effects resolve``). The daemon stops itself
  after ``[server] idle_stop_s`` with no client attached, no call in progress and no work due within
  that time (a run to advance, a timer falling within it, a message to deliver);
* **the operator's long-lived server** (``buttress serve --http``, ``buttress ui``) when it starts and
  no owner runs; it never stops on its own. When an owner runs, it attaches instead.

Who wins when several start at once is decided by the database file's lock and the socket, as
before: only the process holding the file binds the socket, and starting the daemon is idempotent (a
``flock`` on ``.buttress/<database>.owner.lock`` around "attach, or start one and wait for its socket").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from runtime.errors import ButtressError, Code, EngineError

if TYPE_CHECKING:
    from mcp_server.channel import ChannelServer
    from mcp_server.project import Project
    from runtime.boundary.policyfile import PolicyChange, PolicyFile
    from runtime.runtime import Runtime

logger = logging.getLogger(__name__)

OwnerKind = Literal["daemon", "http", "ui", "stdio"]
"""``stdio`` only for ``buttress serve --demo-seed`` (tests): its seeding tool writes through the owner."""

DEFAULT_IDLE_STOP_S: Final = 300.0
"""How long the daemon stays with nothing to do before it stops (``[server] idle_stop_s``)."""
START_PATIENCE_S: Final = 60.0
"""How long a process waits for the daemon it started to listen (it may first wait for the file)."""
POLICY_POLL_S: Final = 1.0
LOG_MAX_BYTES: Final = 1024 * 1024
"""``owner.log`` is moved to ``owner.log.1`` when a daemon starts and finds it larger than this."""


def log_path(project: Project) -> Path:
    """Where the daemon writes its log: ``.buttress/owner.log`` beside the database."""
    return project.database.parent / ".buttress" / "owner.log"


def lock_path(project: Project) -> Path:
    return project.database.parent / ".buttress" / f"{project.database.name}.owner.lock"


# ------------------------------------------------------------------------------------------- owner


class PolicyWatch:
    """Follows the operator's ``buttress.toml`` for a runtime: read again every second, a valid change is
    put in force for the operations that start from then, a refused one is audited and the old policy
    kept (``Runtime.use_policy``). Run by the process that owns a DuckDB project, and by every serving
    process of a shared (PostgreSQL) one, each from its own project directory."""

    def __init__(
        self, project: Project, runtime: Runtime, policy: PolicyFile | None, stop: threading.Event
    ) -> None:
        from runtime.boundary.policyfile import PolicyFile

        self.runtime = runtime
        self.policy = policy or PolicyFile(project.config_path, poll_s=POLICY_POLL_S)
        self.policy.on_change(self._reloaded)
        self._stop = stop
        self._thread = threading.Thread(target=self._watch, name="buttress-policy", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(POLICY_POLL_S):
            try:
                self.policy.refresh()
            except Exception:
                logger.exception("reading %s failed", self.policy.path)

    def _reloaded(self, change: PolicyChange) -> None:
        self.runtime.use_policy(change.policy, digest=change.digest, error=change.error)


class Owner:
    """What a process that owns the project runs beside its runtime: the socket, the scheduler and the
    policy watcher (and, for the daemon, what it needs to know when it may stop)."""

    def __init__(
        self, project: Project, runtime: Runtime, kind: OwnerKind, policy: PolicyFile | None = None
    ) -> None:
        from mcp_server.channel import ChannelServer, socket_path
        from mcp_server.server import check_action_tools

        if check_action_tools not in runtime.spec_checks:  # every dry-run builds each action's tool,
            runtime.spec_checks.append(check_action_tools)  # whichever process proposed it: before
        self.project = project  # the socket serves anyone
        self.runtime = runtime
        self.kind: OwnerKind = kind
        self.since = _now()
        self._stop = threading.Event()
        self.channel: ChannelServer = ChannelServer(
            runtime, socket_path(project.database), describe=self.describe
        )
        runtime.start_scheduler()
        self.policy = PolicyWatch(project, runtime, policy, self._stop).policy
        logger.info("pid %d owns %s (%s)", os.getpid(), project.database, kind)

    def due(self, window_s: float) -> str | None:
        """Why the owner must keep running for ``window_s`` (work due within it), or None."""
        try:
            return self.runtime.scheduler.due_within(window_s)
        except ButtressError as error:  # cannot tell: keep running
            return f"the due work cannot be read ({error.code})"

    def describe(self) -> dict[str, Any]:
        """Who owns the project, for ``buttress status`` (the socket adds how long it has been idle)."""
        rss, peak = memory_mb()
        origin = self.runtime.policy.origin
        described: dict[str, Any] = {
            "pid": os.getpid(),
            "kind": self.kind,
            "since": self.since,
            "database": str(self.project.database),
            "rss_mb": rss,
            "peak_rss_mb": peak,
            "policy": origin.model_dump(mode="json") if origin else None,
        }
        if self.kind == "daemon":
            described["idle_stop_s"] = self.project.idle_stop_s
            described["log"] = str(log_path(self.project))
            described["due"] = self.due(self.project.idle_stop_s)
        return described

    def close(self, *, drain_s: float = 0.0) -> None:
        """Stop serving (the caller closes the runtime after)."""
        self._stop.set()
        self.channel.close(drain_s=drain_s)


def memory_mb() -> tuple[float | None, float | None]:
    """This process's resident memory now and at its peak, in MB (Linux; None elsewhere)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None, None
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE))
    rss, peak = found.get("VmRSS"), found.get("VmHWM")
    return (
        round(int(rss) / 1024, 1) if rss else None,
        round(int(peak) / 1024, 1) if peak else None,
    )


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ daemon


def run_daemon(project: Project) -> int:
    """``buttress owner``: own the project until told to stop (SIGTERM, SIGINT, SIGHUP) or idle for
    ``idle_stop_s`` with nothing due; exit 0 at once if another process owns it already."""
    from mcp_server.project import connect

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(levelname)s %(message)s"
    )
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda *_: stop.set())
    runtime, owner = connect(project, own="daemon")
    if owner is None:
        logger.info("pid %d: another process owns %s; nothing to do", os.getpid(), project.database)
        runtime.close()
        return 0
    reason = "told to stop"
    try:
        while not stop.wait(1.0):
            idle = owner.channel.idle_for()
            if idle < project.idle_stop_s:
                continue
            due = owner.due(project.idle_stop_s)
            if due is None:
                reason = f"idle for {idle:.0f} s with nothing due"
                break
    finally:
        logger.info("pid %d stops owning %s: %s", os.getpid(), project.database, reason)
        owner.close(drain_s=0.2)
        owner.runtime.close()
    return 0


def start_daemon(project: Project) -> None:
    """Make sure an owner listens on the project's socket, starting the daemon if none does; returns
    once one answers. Idempotent across processes (one starts it, the others wait for its socket)."""
    from mcp_server.channel import socket_path

    path = socket_path(project.database)
    with _spawn_lock(project):
        if _answers(path):
            return
        log = log_path(project)
        log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if log.stat().st_size > LOG_MAX_BYTES:
                log.replace(log.with_name(log.name + ".1"))
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "mcp_server", "owner", "--project", str(project.root)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=project.root,
                start_new_session=True,
                close_fds=True,
            )
        # Reap it should it end while this process runs (else it stays a zombie until we exit).
        threading.Thread(target=process.wait, name="buttress-reap", daemon=True).start()
        deadline = time.monotonic() + START_PATIENCE_S
        while time.monotonic() < deadline:
            if _answers(path):
                return
            if process.poll() is not None and not _answers(path):
                raise _daemon_failed(project, log, offset, process.returncode)
            time.sleep(0.05)
        raise EngineError(
            Code.ENGINE_LOCKED,
            f"the project daemon did not listen within {START_PATIENCE_S:g} s",
            hint=f"Read {log}; another process may hold the database file without serving it.",
            details={"log": str(log), "pid": process.pid},
        )


def stop_owner(project: Project, *, timeout: float = 30.0) -> int | None:
    """Ask the owner of ``project`` to stop (SIGTERM) and wait until it has; its pid, or None when no
    owner answers."""
    from mcp_server.channel import owner_status, socket_path

    try:
        pid = int(owner_status(socket_path(project.database))["owner"]["pid"])
    except (ButtressError, KeyError, TypeError, ValueError):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] not in "ZX"
    return True


def _answers(path: Path) -> bool:
    """An owner accepts connections at ``path``."""
    import socket

    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _spawn_lock(project: Project) -> Iterator[None]:
    path = lock_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + START_PATIENCE_S
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineError(
                        Code.ENGINE_LOCKED,
                        "another process has been starting the project daemon for too long",
                        hint=f"Read {log_path(project)}; `buttress status` shows whether an owner runs.",
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


ERROR_LINE = re.compile(r"^error \[([a-z_.]+)\]: (.*)$")
HINT_LINE = re.compile(r"^\s+hint: (.*)$")


def _daemon_failed(project: Project, log: Path, offset: int, returncode: int | None) -> ButtressError:
    """The error the daemon printed before it exited (``error [code]: message`` and its hint)."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    for index, line in enumerate(lines):
        found = ERROR_LINE.match(line)
        if found:
            hint = HINT_LINE.match(lines[index + 1]) if index + 1 < len(lines) else None
            try:
                code = Code(found.group(1))
            except ValueError:
                code = Code.INTERNAL
            return ButtressError(
                code,
                f"the project daemon could not start: {found.group(2)}",
                hint=hint.group(1) if hint else f"Read {log}.",
                details={"log": str(log)},
            )
    if returncode is not None and returncode < 0:  # killed by a signal (a crash, the OOM killer, kill -9)
        return EngineError(
            Code.ENGINE_OWNER_GONE,
            f"the project daemon was killed (signal {-returncode}) before it listened",
            hint="Call again: the next call starts a new owner, which recovers where this one stopped. If "
            f"it keeps happening, read {log}.",
            details={"log": str(log), "signal": -returncode},
        )
    return EngineError(
        Code.ENGINE_ERROR,
        f"the project daemon exited with {returncode} before it listened",
        hint=f"Read {log}.",
        details={"log": str(log), "tail": lines[-20:]},
    )
