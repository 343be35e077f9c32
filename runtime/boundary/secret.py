"""The operator secret: a random key kept outside the project, readable by the operator only.

It signs approvals (``approvals``) and the audit anchor (``runtime.store.audit``): a party that can
write the project directory but cannot read this key can neither approve a deploy nor re-anchor a
truncated audit log. It lives in ``$BUTTRESS_OPERATOR_KEY`` or ``~/.config/buttress/operator.key``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from runtime.errors import Code, PolicyError


def operator_key_path() -> Path:
    """Where the operator secret lives: ``$BUTTRESS_OPERATOR_KEY`` or ``~/.config/buttress/operator.key``."""
    override = os.environ.get("BUTTRESS_OPERATOR_KEY")
    if override:
        return Path(override)
    return Path.home() / ".config" / "buttress" / "operator.key"


def ensure_operator_key(path: Path | None = None) -> Path:
    """Create the operator secret (mode 0600) if it does not exist yet; returns its path."""
    path = path or operator_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created concurrently by another process
            return path
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def operator_key(path: Path | None = None) -> bytes:
    """The secret's bytes; ``approval.invalid`` when it does not exist on this machine."""
    path = path or operator_key_path()
    if not path.exists():
        raise PolicyError(
            Code.APPROVAL_INVALID,
            "no operator secret exists on this machine",
            hint="Run `buttress init` (or `buttress approve`) as the operator to create it.",
        )
    return path.read_text().strip().encode()


def mac(message: bytes, path: Path | None = None) -> str:
    """HMAC-SHA256 of ``message`` under the operator secret, hex."""
    return hmac.new(operator_key(path), message, hashlib.sha256).hexdigest()
