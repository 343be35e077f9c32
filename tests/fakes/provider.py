"""A fake payment provider and mail sink: a real HTTP server on 127.0.0.1, run as its own process so
it outlives the Buttress servers a test kills.

It honours idempotency keys the way payment APIs do (Stripe's rules): the first request with a key is
executed and its response saved — successes and declines alike; a repeat with the same key and the
same body gets the saved response; the same key with a different body is refused (422). It can also
misbehave on purpose, at seeded random: answer 503 before doing anything (``--fail-rate``), or do the
work and then drop the connection without answering (``--drop-rate``, the lost answer that makes an
effect's outcome unknown).

    POST /charges  {"customer", "amount", "order"}   -> {"id", "customer", "amount", "order"} | 402
    POST /refunds  {"charge"}                         -> {"id", "charge"}
    POST /mail     {"to", "stage"}                    -> {"id"}
    GET  /state                                        -> everything recorded, for the test's checks
                                                          ("reused": keys sent with another body)

Run: python -m tests.fakes.provider [--port 0] [--seed 1] [--fail-rate 0.1] [--drop-rate 0.1]
It prints "listening on http://127.0.0.1:PORT" once ready.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class State:
    def __init__(self, seed: int, fail_rate: float, drop_rate: float, decline_over: int) -> None:
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self.fail_rate = fail_rate
        self.drop_rate = drop_rate
        self.decline_over = decline_over
        self.saved: dict[str, tuple[str, int, dict[str, Any]]] = {}  # key -> (body, status, response)
        self.charges: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self.mail: list[dict[str, Any]] = []
        self.requests = 0
        self.replays = 0
        self.dropped = 0
        self.failed = 0
        self.reused = 0

    def handle(self, path: str, key: str | None, body: str) -> tuple[int, dict[str, Any], bool]:
        """Status, response, and whether to drop the connection instead of answering."""
        with self.lock:
            self.requests += 1
            if key is None:
                return 400, {"error": "missing_idempotency_key"}, False
            if self.random.random() < self.fail_rate:
                self.failed += 1
                return 503, {"error": "try_again"}, False
            saved = self.saved.get(f"{path} {key}")
            if saved is not None:
                if saved[0] != body:
                    self.reused += 1
                    return 422, {"error": "idempotency_key_reused"}, False
                self.replays += 1
                return saved[1], saved[2], False
            request = json.loads(body or "{}")
            status, response = self._execute(path, request)
            self.saved[f"{path} {key}"] = (body, status, response)
            drop = self.random.random() < self.drop_rate
            if drop:
                self.dropped += 1
            return status, response, drop

    def _execute(self, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/charges":
            if int(request.get("amount", 0)) > self.decline_over:
                return 402, {"error": "card_declined"}
            charge = {
                "id": f"ch_{len(self.charges) + 1}",
                "customer": request.get("customer"),
                "amount": request.get("amount"),
                "order": request.get("order"),
            }
            self.charges.append(charge)
            return 200, charge
        if path == "/refunds":
            refund = {"id": f"re_{len(self.refunds) + 1}", "charge": request.get("charge")}
            self.refunds.append(refund)
            return 200, refund
        if path == "/mail":
            mail = {"id": f"m_{len(self.mail) + 1}", "to": request.get("to"), "stage": request.get("stage")}
            self.mail.append(mail)
            return 200, {"id": mail["id"]}
        return 404, {"error": "no_such_endpoint"}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "charges": list(self.charges),
                "refunds": list(self.refunds),
                "mail": list(self.mail),
                "requests": self.requests,
                "replays": self.replays,
                "dropped": self.dropped,
                "failed": self.failed,
                "reused": self.reused,
            }


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/state":
                self._send(404, {"error": "no_such_endpoint"})
                return
            self._send(200, state.snapshot())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            status, response, drop = state.handle(self.path, self.headers.get("Idempotency-Key"), body)
            if drop:  # the work is done; the answer is lost
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self._send(status, response)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a dropped answer or a client killed mid-request is part of the game, not news


def serve(port: int, state: State) -> ThreadingHTTPServer:
    server = _Server(("127.0.0.1", port), make_handler(state))
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--decline-over", type=int, default=10_000)
    args = parser.parse_args()
    state = State(args.seed, args.fail_rate, args.drop_rate, args.decline_over)
    server = serve(args.port, state)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    main()
