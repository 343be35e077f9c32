"""Fake external providers for the built-in suite: a payment API and a mail sink, as ASGI apps.

They behave as providers that honour idempotency keys do (Stripe's rules): the first request with a
key is executed and its answer saved; a repeat with the same key and the same body gets the saved
answer; the same key with another body is refused (422); a request without a key is refused (400).
And they misbehave the way the stories need: the first time a key is seen the work is done and then
the answer is lost (a 503 after the charge), so only a sender that resends with the same key
charges once.

Everything is recorded in the run's provider state file (``kind = "provider"`` checks read it)::

    {"requests": 7, "replays": 3, "lost_answers": 3,
     "charges": [{"id": "ch_1", "order": "p1", "amount": 30}, ...],
     "charges_by": {"p1": 1, ...},          # a collection's records counted by its key fields
     "repeated": []}                        # keys recorded more than once, in any collection

A scenario names them in its seed: ``factory = "mcp_server.evals.fakes:payments"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_server.evals.providers import ProviderContext

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

KEY_HEADER = b"idempotency-key"


@dataclass
class Collection:
    """What one path records: ``/charges`` keeps charges, counted by ``order``."""

    name: str
    prefix: str
    by: tuple[str, ...]


@dataclass
class Ledger:
    """One provider's memory for one run, written to its state file after every request."""

    context: ProviderContext
    collections: dict[str, Collection]
    lose_first_answer: bool
    saved: dict[str, tuple[bytes, int, dict[str, Any]]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = {"requests": 0, "replays": 0, "lost_answers": 0, "repeated": []}
        for collection in self.collections.values():
            self.state[collection.name] = []
            self.state[f"{collection.name}_by"] = {}
        self.write()

    def write(self) -> None:
        temporary = self.context.state.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state, indent=1), encoding="utf-8")
        os.replace(temporary, self.context.state)

    def handle(self, path: str, key: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and answer of one request (recorded before it is answered)."""
        self.state["requests"] += 1
        try:
            return self._handle(path, key, body)
        finally:
            self.write()

    def _handle(self, path: str, key: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        collection = self.collections.get(path.strip("/"))
        if collection is None:
            return 404, {"error": "not_found"}
        if not key:
            return 400, {"error": "missing_idempotency_key"}
        saved = self.saved.get(f"{path} {key}")
        if saved is not None:
            if saved[0] != body:
                return 422, {"error": "idempotency_key_reused"}
            self.state["replays"] += 1
            return saved[1], saved[2]
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "not_json"}
        if not isinstance(request, dict):
            return 400, {"error": "not_an_object"}
        records: list[dict[str, Any]] = self.state[collection.name]
        record = {"id": f"{collection.prefix}_{len(records) + 1}", **request}
        records.append(record)
        counted = " ".join(str(request.get(name)) for name in collection.by)
        counts: dict[str, int] = self.state[f"{collection.name}_by"]
        counts[counted] = counts.get(counted, 0) + 1
        if counts[counted] == 2:
            self.state["repeated"].append(f"{collection.name}: {counted}")
        self.saved[f"{path} {key}"] = (body, 200, record)
        if self.lose_first_answer:
            self.state["lost_answers"] += 1
            return 503, {"error": "answer_lost"}
        return 200, record


def app(ledger: Ledger) -> App:
    """The ASGI application serving ``ledger``."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope.get("headers") or [])
        key = headers.get(KEY_HEADER)
        if scope["method"] == "GET":
            status, answer = 200, ledger.state
        else:
            status, answer = ledger.handle(scope["path"], key.decode() if key else None, body)
        payload = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return serve


def payments(context: ProviderContext) -> App:
    """A payment API: ``POST /charges {"order", "amount", …}`` and ``POST /refunds {"charge"}``;
    the first answer for each key is lost."""
    collections = {
        "charges": Collection("charges", "ch", ("order",)),
        "refunds": Collection("refunds", "re", ("charge",)),
    }
    return app(Ledger(context, collections, lose_first_answer=True))


def mail(context: ProviderContext) -> App:
    """A mail sink: ``POST /mail {"to", "stage", …}``, counted by recipient and stage; the first
    answer for each key is lost."""
    return app(Ledger(context, {"mail": Collection("mail", "mail", ("to", "stage"))}, lose_first_answer=True))
