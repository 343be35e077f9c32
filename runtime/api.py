"""The runtime's public surface: what the MCP tools, the server, the CLI and the control room may call.

The surface is the runtime's operations — the ``@operation`` methods of ``runtime.runtime.Runtime``,
collected in ``OPERATIONS`` (see ``runtime.registry``) — and the few members in ``FACADE`` a client
also uses (the current version, the limits, the version watch, the policy's decision, a refusal's
audit row). ``Runtime`` serves it over the database file it owns; ``mcp_server.channel.RemoteRuntime``
serves the same by asking the process that owns the file over the project's socket, with methods
built from the operations' signatures. Everything above the runtime is typed against ``RuntimeAPI``
and works the same either way; ``tests/test_registry.py`` checks that both present exactly this
surface.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from runtime.registry import OPERATOR, Progress, SpecCheck
from runtime.runtime import OPERATIONS, Runtime

RuntimeAPI: TypeAlias = Runtime
"""One application, whichever process owns its database file: its operations and ``FACADE``."""

FACADE: Final = frozenset(
    {"current", "limits", "spec_checks", "on_version_change", "authorize", "record_refusal", "close"}
)
"""The members of ``RuntimeAPI`` besides its operations."""

__all__ = ["FACADE", "OPERATIONS", "OPERATOR", "Progress", "RuntimeAPI", "SpecCheck"]
