"""The project daemons (``buttress owner``) running on projects under a directory: found by their
command line (Linux ``/proc``), so a test can stop or kill exactly the daemons of its own projects."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def daemons_under(base: Path) -> dict[int, Path]:
    """pid -> project of every ``buttress owner --project DIR`` with DIR under ``base``."""
    base = base.resolve()
    found: dict[int, Path] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if b"mcp_server" not in argv or b"owner" not in argv or b"--project" not in argv:
            continue
        project = Path(os.fsdecode(argv[argv.index(b"--project") + 1]))
        if project.is_relative_to(base):
            found[int(entry)] = project
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[-1][:1] not in "ZX"
    except OSError:
        return False


def stop_daemons_under(base: Path, *, grace_s: float = 15.0) -> list[int]:
    """SIGTERM the daemons of projects under ``base``, wait for them (SIGKILL after ``grace_s``)."""
    pids = list(daemons_under(base))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids
