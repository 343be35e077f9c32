"""The operator's policy as its file says now: read at start, read again when the file changes.

``PolicyFile.current()`` is the policy in force. ``refresh()`` looks at the file (its modification
time, inode and size: one ``stat``) and, when it changed, reads it whole and either puts the new
policy in force (one reference swap: a decision in progress keeps the policy it started with) or,
when the new file is refused, keeps the old policy and records why in its ``origin.problem``. Either
way the listeners hear of it (the owner audits the reload and hands the policy to its runtime).

Some settings cannot change under a running database (its memory, spill and thread settings): a file
that changes them is loaded, the running values stay, and ``origin.restart_needed`` names them.
``current()`` refreshes at most once a ``poll_s``, so a process that only asks (a server attached to
the owner) follows the file as well as one that polls it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runtime.boundary.policy import Limits, Policy, PolicyOrigin, parse
from runtime.errors import ButtressError, Code, ConfigError

logger = logging.getLogger(__name__)

RESTART_ONLY: Final = ("memory_limit_mb", "max_spill_mb", "threads")
"""Limits the database is opened with: a change takes effect when the owning process restarts."""


@dataclass(frozen=True)
class PolicyChange:
    """The file changed: the policy now in force, the digest of the file as read, and the error that
    refused it (None when the new file is in force)."""

    policy: Policy
    digest: str
    error: ButtressError | None = None


class PolicyFile:
    """The policy of one configuration file, followed as the file changes."""

    def __init__(self, path: Path, *, poll_s: float = 1.0) -> None:
        self.path = path
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._listeners: list[Callable[[PolicyChange], None]] = []
        self._stamp = self._stat()
        content = self._read()
        self._digest = hashlib.sha256(content).hexdigest()
        self._policy = parse(content, path.name)  # a file refused at start is refused loudly
        self._started: Limits = self._policy.limits
        self._checked = time.monotonic()

    def current(self) -> Policy:
        """The policy in force (the file is looked at again if it was not within ``poll_s``)."""
        if time.monotonic() - self._checked >= self.poll_s:
            self.refresh()
        return self._policy

    def on_change(self, listener: Callable[[PolicyChange], None]) -> None:
        """Call ``listener`` after each change of the file (loaded or refused), in the refreshing thread."""
        self._listeners.append(listener)

    def refresh(self) -> PolicyChange | None:
        """Read the file again if it changed; the change, or None."""
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                content = self._read()
            except ConfigError as error:
                change = self._refuse(error, digest="")
            else:
                digest = hashlib.sha256(content).hexdigest()
                if digest == self._digest:
                    return None  # touched, not changed
                self._digest = digest
                try:
                    change = self._load(parse(content, self.path.name), digest)
                except ButtressError as error:
                    change = self._refuse(error, digest)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                logger.exception("a listener of %s failed", self.path.name)
        return change

    def _load(self, policy: Policy, digest: str) -> PolicyChange:
        started = self._started
        pending = tuple(
            f"{name}: {getattr(policy.limits, name)} in the file, {getattr(started, name)} until the "
            "owner restarts"
            for name in RESTART_ONLY
            if getattr(policy.limits, name) != getattr(started, name)
        )
        running = policy.limits.model_copy(update={name: getattr(started, name) for name in RESTART_ONLY})
        assert policy.origin is not None
        origin = policy.origin.model_copy(update={"restart_needed": pending})
        self._policy = policy.model_copy(update={"limits": running, "origin": origin})
        logger.log(
            logging.WARNING if pending else logging.INFO,
            "%s reloaded (sha256 %s)%s",
            self.path.name,
            digest[:12],
            "; needs a restart to take effect: " + "; ".join(pending) if pending else "",
        )
        return PolicyChange(self._policy, digest)

    def _refuse(self, error: ButtressError, digest: str) -> PolicyChange:
        old = self._policy
        origin = old.origin or PolicyOrigin(file=self.path.name, digest="", loaded_at="")
        self._policy = old.model_copy(update={"origin": origin.model_copy(update={"problem": error.message})})
        logger.warning(
            "%s changed but was refused; the policy loaded at %s stays in force: %s",
            self.path.name,
            origin.loaded_at,
            error.message,
        )
        return PolicyChange(self._policy, digest, error)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_ino, found.st_size)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise ConfigError(
                Code.CONFIG_INVALID,
                f"{self.path.name} cannot be read: {error.strerror or error}",
                hint=f"Put {self.path.name} back; the server re-reads it when it changes.",
                details={"path": str(self.path)},
            ) from None
