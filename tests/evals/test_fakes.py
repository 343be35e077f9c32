"""The built-in suite's fake providers behave as providers that honour idempotency keys do, and lose
the first answer to every key, over real HTTP (served by the runner's provider server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_server.evals import fakes
from mcp_server.evals.providers import ProviderContext, ProviderServer


@pytest.fixture
def payments(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    context = ProviderContext(name="payments", scenario="s", run=1, state=tmp_path / "payments.json")
    server = ProviderServer(fakes.payments(context), "payments")
    server.start()
    try:
        yield server.url, context.state
    finally:
        server.stop()


def post(url: str, body: dict[str, object], key: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_charge_is_made_once_per_key_and_its_first_answer_is_lost(payments: tuple[str, Path]) -> None:
    url, state = payments
    charge = {"order": "p1", "amount": 30}
    assert post(f"{url}/charges", charge, "k1") == (503, {"error": "answer_lost"})
    assert post(f"{url}/charges", charge, "k1") == (200, {"id": "ch_1", "order": "p1", "amount": 30})
    assert post(f"{url}/charges", {"order": "p1", "amount": 99}, "k1")[0] == 422
    assert post(f"{url}/charges", charge, None)[0] == 400
    recorded = json.loads(state.read_text())
    assert recorded["charges_by"] == {"p1": 1} and recorded["repeated"] == []
    assert (recorded["requests"], recorded["replays"], recorded["lost_answers"]) == (4, 1, 1)
    post(f"{url}/charges", charge, "k2")  # another key for the same order: a second charge
    recorded = json.loads(state.read_text())
    assert recorded["charges_by"] == {"p1": 2} and recorded["repeated"] == ["charges: p1"]
