"""Calling an operator's connector: one HTTP request with the effect's idempotency key.

The answer is classified so the run knows what to do next:

* 2xx — ``succeeded``: the response (JSON, or its text) is the step's output;
* 408, 409, 425, 429, 5xx, a connection error or a timeout — ``unavailable``: nothing is known, the
  same request with the same key is sent again (a provider that honours keys answers a repeat with
  its first result, so the effect happens once);
* any other 4xx — ``rejected``: the provider's final answer (a declined card); the run compensates.

Redirects are not followed: a connector points exactly where the operator said.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from runtime.boundary.policy import Connector
from runtime.errors import Code, WorkflowError

Outcome = Literal["succeeded", "rejected", "unavailable"]
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    status_code: int | None
    body: Any
    error: str | None = None


def send(name: str, connector: Connector, request: Any, key: str) -> Answer:
    """Send ``request`` as JSON through ``connector`` with ``key`` as its idempotency key."""
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
    url = urllib.parse.urlsplit(connector.url)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    connection: http.client.HTTPConnection
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=connector.timeout_s, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=connector.timeout_s)
    try:
        connection.request(connector.method, path, body=json.dumps(request).encode(), headers=headers)
        response = connection.getresponse()
        raw = response.read(connector.max_response_bytes)
        code = response.status
    except (OSError, http.client.HTTPException) as error:
        return Answer("unavailable", None, None, f"{type(error).__name__}: {error}"[:500])
    finally:
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
