"""A connector's credentials never come back through its answers.

A provider that echoes the request (many do, in errors and test modes) put the value of a
``headers_from_env`` secret into the run's output, where ``get_run`` showed it to the agent. Answers
are now redacted before they are stored: checked here against a real HTTP server on 127.0.0.1 that
echoes every request header into its JSON body, through a workflow's effect step.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runtime.boundary.policy import Connector, Policy
from runtime.runtime import Runtime
from runtime.store.engine import Engine, Settings
from tests.runtime.conftest import deploy

ENV_TOKEN = "sk_live_" + secrets.token_hex(12)
STATIC_KEY = "static-" + secrets.token_hex(12)
SECRETS = (ENV_TOKEN, STATIC_KEY)


class Echo(BaseHTTPRequestHandler):
    """Answers every POST with the request's headers and body, in several shapes a provider might use;
    ``/reject`` answers 402 (a final refusal) with the same echo."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        answer = {
            "id": "echo-1",
            "headers": headers,
            "header_list": [[k, v] for k, v in headers.items()],
            "debug": f"received Authorization={headers.get('Authorization')} from you",
            "quoted": urllib.parse.quote(headers.get("Authorization", ""), safe=""),
            "nested": json.dumps({"auth": headers.get("Authorization")}),
            "by_value": {headers.get("X-Api-Key", ""): "the key as a JSON key"},
            "request": json.loads(body or b"null"),
        }
        data = json.dumps(answer).encode()
        self.send_response(402 if self.path.endswith("/reject") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def workflow(path: str) -> list[dict[str, Any]]:
    return [
        {
            "op": "add_workflow",
            "workflow": {
                "name": "ping",
                "params": [{"name": "note", "type": "text"}],
                "steps": [
                    {
                        "name": "call",
                        "kind": "effect",
                        "connector": path,
                        "args": {"note": {"from": "input.note"}},
                        "retry": {"attempts": 1},
                    }
                ],
            },
        }
    ]


@pytest.fixture
def app(echo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Runtime, Path]]:
    monkeypatch.setenv("BUTTRESS_TEST_ECHO_TOKEN", f"Bearer {ENV_TOKEN}")
    common: dict[str, Any] = {
        "headers": {"X-Api-Key": STATIC_KEY, "X-Tenant": "acme"},
        "headers_from_env": {"Authorization": "BUTTRESS_TEST_ECHO_TOKEN"},
        "timeout_s": 5,
    }
    policy = Policy(
        connectors={
            "echo": Connector(url=f"{echo}/echo", **common),
            "reject": Connector(url=f"{echo}/reject", **common),
        }
    )
    path = tmp_path / "app.duckdb"
    rt = Runtime.open(path, policy=policy, audit_reads=False)
    yield rt, path
    rt.close()


def shown(value: Any) -> str:
    return json.dumps(value, default=str)


@pytest.mark.parametrize(("connector", "status"), [("echo", "completed"), ("reject", "compensated")])
def test_an_echoing_provider_returns_no_secret_to_get_run_list_effects_or_the_database(
    app: tuple[Runtime, Path], connector: str, status: str
) -> None:
    rt, path = app
    deploy(rt, workflow(connector))
    rt.start_workflow("ping", {"note": "hello"}, run_id="r1")
    for _ in range(50):
        rt.scheduler.drain()
        if rt.get_run("r1").status not in {"running", "waiting"}:
            break
    detail = rt.get_run("r1")
    assert detail.status == status, detail
    effects = rt.list_effects(run_id="r1")
    response = effects[0].response
    # the echo arrived, redacted where the secrets were, and the rest untouched
    assert response["headers"]["Authorization"] == "[redacted]"
    assert response["headers"]["X-Api-Key"] == "[redacted]"
    assert response["headers"]["X-Tenant"] == "acme"
    assert response["headers"]["Idempotency-Key"] == effects[0].effect_id
    assert response["debug"] == "received Authorization=[redacted] from you"
    assert "[redacted]" in response["by_value"] and "[redacted]" in response["nested"]
    for secret in SECRETS:
        for place, value in (
            ("get_run", detail.model_dump()),
            ("list_effects", [e.model_dump() for e in effects]),
        ):
            assert secret not in shown(value), place
    rt.close()
    engine = Engine(path, settings=Settings(memory_limit_mb=256))
    try:
        with engine.snapshot() as reader:
            stored = {
                table: reader.fetchall(f"SELECT * FROM _buttress.{table}")
                for table in ("effects", "steps", "runs", "audit")
            }
    finally:
        engine.close()
    assert stored["effects"] and stored["runs"]
    for secret in SECRETS:
        assert secret not in shown(stored), [t for t, rows in stored.items() if secret in shown(rows)]
