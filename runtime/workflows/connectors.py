"""Calling an operator's connector: one HTTP request with the effect's idempotency key.

The answer is classified so the run knows what to do next:

* 2xx — ``succeeded``: the response (JSON, or its text) is the step's output;
* 408, 409, 425, 429, 5xx, a connection error or a timeout — ``unavailable``: nothing is known, the
  same request with the same key is sent again (a provider that honours keys answers a repeat with
  its first result, so the effect happens once);
* any other 4xx — ``rejected``: the provider's final answer (a declined card); the run compensates.

Redirects are not followed: a connector points exactly where the operator said.

An answer is redacted before anything stores or shows it: a provider that echoes the request (many
do, in errors and test modes) would otherwise hand the connector's credentials to whoever reads the
run. Every value of a ``headers_from_env`` header, and of any header whose name says it is secret
(authorization, cookies, tokens, secrets, keys, passwords; the idempotency key excepted), is replaced
by ``[redacted]`` wherever it appears in the body: JSON values and keys, strings that contain it, its
URL-encoded form, and the credential after an auth scheme (``Bearer <token>``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from runtime.boundary.policy import Connector
from runtime.errors import Code, WorkflowError

Outcome = Literal["succeeded", "rejected", "unavailable"]
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})

REDACTED: Final = "[redacted]"
SECRET_HEADER: Final = re.compile(
    r"authorization|cookie|token|secret|key|passw|credential|session|signature|auth", re.IGNORECASE
)
"""Header names whose values are secrets, wherever they occur in the name (``X-Api-Key``)."""


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    status_code: int | None
    body: Any
    error: str | None = None


def send(name: str, connector: Connector, request: Any, key: str) -> Answer:
    """Send ``request`` as JSON through ``connector`` with ``key`` as its idempotency key; the answer
    comes back with the secret header values redacted (``redact``)."""
    headers = {"Content-Type": "application/json", **connector.headers, connector.idempotency_header: key}
    for header, variable in connector.headers_from_env.items():
        value = os.environ.get(variable)
        if value is None:
            raise WorkflowError(
                Code.CONNECTOR_UNKNOWN,
                f"connector {name!r} needs the environment variable {variable} (header {header}), which is not set",
                hint="The operator sets it in the environment of `buttress serve`, then retries the run.",
                details={"connector": name, "variable": variable},
            )
        headers[header] = value
    hidden = secrets(headers, from_env=connector.headers_from_env, keep=connector.idempotency_header)
    answer = _exchange(connector, request, headers)
    return Answer(
        answer.outcome,
        answer.status_code,
        redact(answer.body, hidden),
        None if answer.error is None else redact(answer.error, hidden),
    )


def _exchange(connector: Connector, request: Any, headers: dict[str, str]) -> Answer:
    url = urllib.parse.urlsplit(connector.url)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    connection: http.client.HTTPConnection
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=connector.timeout_s, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=connector.timeout_s)
    # the socket's timeout bounds each wait; this bounds the whole exchange (a provider answering a
    # byte at a time would otherwise hold it for as long as it likes), which a run's lease relies on
    deadline = threading.Timer(connector.timeout_s, _cut, args=(connection,))
    deadline.daemon = True
    deadline.start()
    try:
        connection.request(connector.method, path, body=json.dumps(request).encode(), headers=headers)
        response = connection.getresponse()
        raw = response.read(connector.max_response_bytes)
        code = response.status
    except (OSError, http.client.HTTPException) as error:
        return Answer("unavailable", None, None, f"{type(error).__name__}: {error}"[:500])
    finally:
        deadline.cancel()
        connection.close()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = {"text": raw.decode("utf-8", errors="replace")[:2000]}
    if 200 <= code < 300:
        return Answer("succeeded", code, body)
    if code >= 500 or code in RETRYABLE_STATUS:
        return Answer("unavailable", code, body, f"HTTP {code}")
    return Answer("rejected", code, body, f"HTTP {code}")


def _cut(connection: http.client.HTTPConnection) -> None:
    """End an exchange that outlived its connector's timeout: a blocked read returns at once."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def secrets(headers: dict[str, str], *, from_env: Collection[str], keep: str) -> list[str]:
    """The strings to hide in an answer: the values of the headers taken from the environment and of
    headers named like secrets (except ``keep``, the idempotency key), with the credential after an
    auth scheme and the URL-encoded forms; longest first, so a longer secret is replaced whole.

    >>> secrets({"Authorization": "Bearer t0k3n-abc", "Accept": "x"}, from_env=(), keep="Idempotency-Key")
    ['Bearer%20t0k3n-abc', 'Bearer t0k3n-abc', 't0k3n-abc']
    """
    env = {header.lower() for header in from_env}
    found: set[str] = set()
    for header, value in headers.items():
        if header.lower() == keep.lower() or not value:
            continue
        if header.lower() in env or SECRET_HEADER.search(header):
            scheme, _, credential = value.partition(" ")
            for secret in (value, credential.strip() if scheme and credential else ""):
                if secret:
                    found.update({secret, urllib.parse.quote(secret, safe="")})
    return sorted(found, key=lambda s: (-len(s), s))


def redact(value: Any, hidden: Iterable[str]) -> Any:
    """``value`` (JSON: dicts, lists, strings, numbers) with every occurrence of a hidden string
    replaced by ``[redacted]``, in strings, keys and numbers written the same way.

    >>> redact({"headers": {"Authorization": "Bearer t0k3n"}, "note": "sent t0k3n", "n": 7}, ["t0k3n"])
    {'headers': {'Authorization': 'Bearer [redacted]'}, 'note': 'sent [redacted]', 'n': 7}
    """
    hidden = [h for h in hidden if h]
    if not hidden:
        return value
    pattern = re.compile("|".join(re.escape(h) for h in hidden))

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            return pattern.sub(REDACTED, item)
        if isinstance(item, dict):
            return {clean(str(k)): clean(v) for k, v in item.items()}
        if isinstance(item, list):
            return [clean(v) for v in item]
        if isinstance(item, (int, float)) and not isinstance(item, bool) and pattern.fullmatch(str(item)):
            return REDACTED
        return item

    return clean(value)


def require(connectors: dict[str, Connector], name: str) -> Connector:
    found = connectors.get(name)
    if found is None:
        known = ", ".join(sorted(connectors)) or "none configured"
        raise WorkflowError(
            Code.CONNECTOR_UNKNOWN,
            f"no connector named {name!r} in the operator's configuration",
            hint=f"Connectors are declared by the operator in buttress.toml ([connectors.{name}]); known: {known}.",
            details={"connector": name, "known": sorted(connectors)},
        )
    return found
