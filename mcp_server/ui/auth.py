"""Who gets into the control room: the operator, and nobody else.

    one-time login link ──redeem──> session (random id, server-side) ──cookie──> every page
                                        └── CSRF token ──hidden field──> every POST

* **Login links** carry a token signed with the operator secret (the key that signs approvals and
  the audit anchor): ``<expiry>.<nonce>.<hmac>``. ``buttress ui`` prints one when it starts, and
  ``buttress ui --login`` prints another for the running control room; only someone who can read
  the operator secret can make one. A token is redeemed once (its nonce is remembered until it
  expires) and expires after ``LOGIN_TTL_S``.
* **Sessions** are random ids kept in this process's memory, sent back in an ``HttpOnly``,
  ``SameSite=Strict`` cookie; they end after ``IDLE_S`` without a request, after ``MAX_AGE_S`` in
  any case, on sign-out, and when the process stops.
* **CSRF**: each session has its own random token; every POST must carry it in the ``csrf`` field.

Nothing else opens a page: an agent's ``Authorization: Bearer`` token is not a session.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from runtime.boundary import secret

LOGIN_TTL_S: Final = 600.0
IDLE_S: Final = 12 * 3600.0
MAX_AGE_S: Final = 7 * 24 * 3600.0
MAX_SESSIONS: Final = 64
_PURPOSE: Final = b"buttress-ui-login\n"


class LoginTokens:
    """Issues and redeems one-time login tokens signed with the operator secret."""

    def __init__(self, key_path: Path | None = None, *, ttl_s: float = LOGIN_TTL_S) -> None:
        self._key_path = key_path
        self._ttl_s = ttl_s
        self._used: dict[str, float] = {}  # nonce -> expiry, forgotten once expired
        self._lock = threading.Lock()

    def issue(self) -> str:
        """A new token, valid once, for ``ttl_s`` seconds."""
        return issue_token(self._key_path, ttl_s=self._ttl_s)

    def redeem(self, token: str) -> bool:
        """True (once) for a token signed with the operator secret, unexpired and never redeemed."""
        expires, nonce = _verified(token, self._key_path)
        if nonce is None:
            return False
        now = time.time()
        with self._lock:
            for used, until in list(self._used.items()):
                if until < now:
                    del self._used[used]
            if nonce in self._used:
                return False
            self._used[nonce] = expires
        return True


def issue_token(key_path: Path | None = None, *, ttl_s: float = LOGIN_TTL_S) -> str:
    """A login token any control room holding the same operator secret accepts once."""
    body = f"{int(time.time() + ttl_s)}.{secrets.token_urlsafe(18)}"
    return f"{body}.{secret.mac(_PURPOSE + body.encode(), key_path)}"


def _verified(token: str, key_path: Path | None) -> tuple[float, str | None]:
    """(expiry, nonce) of a well-signed, unexpired token; (0, None) otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(token) > 200:
        return 0.0, None
    expires, nonce, mac = parts
    try:
        expected = secret.mac(_PURPOSE + f"{expires}.{nonce}".encode(), key_path)
    except Exception:  # no operator secret on this machine: nothing is valid
        return 0.0, None
    if not hmac.compare_digest(expected, mac) or float(expires) < time.time():
        return 0.0, None
    return float(expires), nonce


@dataclass
class Session:
    """One signed-in browser."""

    id: str
    csrf: str
    created: float
    seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)
    """Messages for the next page (kind, text): the outcome of an act, shown after its redirect."""
    drafts: dict[str, dict[str, str]] = field(default_factory=dict)
    """What was typed in a form whose act failed, by the form's key, for the next page to show again
    (with ``_error``: why it failed)."""

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken

    def keep_draft(self, key: str, fields: dict[str, str]) -> None:
        self.drafts[key] = fields

    def take_drafts(self) -> dict[str, dict[str, str]]:
        taken, self.drafts = self.drafts, {}
        return taken

    def csrf_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())


class Sessions:
    """Server-side sessions, in memory: a restart signs everyone out."""

    def __init__(self, *, idle_s: float = IDLE_S, max_age_s: float = MAX_AGE_S) -> None:
        self._idle_s = idle_s
        self._max_age_s = max_age_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> Session:
        now = time.time()
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, seen=now)
        with self._lock:
            self._sweep(now)
            while len(self._sessions) >= MAX_SESSIONS:  # the oldest makes room
                del self._sessions[min(self._sessions.values(), key=lambda s: s.seen).id]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (and mark it seen), or None."""
        if not session_id:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.seen > self._idle_s or now - session.created > self._max_age_s:
                del self._sessions[session_id]
                return None
            session.seen = now
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _sweep(self, now: float) -> None:
        for key, session in list(self._sessions.items()):
            if now - session.seen > self._idle_s or now - session.created > self._max_age_s:
                del self._sessions[key]
