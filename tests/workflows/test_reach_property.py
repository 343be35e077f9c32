"""Property: for random apps of actions with emits, topics, subscriptions, workflows with effects and
compensations, and random agents with random policy lists, whatever an agent's call sets running —
now or later, directly or through messages, runs, compensations and emits — is within what its policy
allowed when it made the call, and no chain of messages and runs goes past its bound.

Every action writes a row naming itself and the call that caused it (the call's number travels in
every argument and payload); every effect sends the call's number to a recording HTTP server; so what
*actually* ran for each call is read from the data, independently of how the runtime decides.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.boundary.policy import AgentPolicy, Connector, Limits, Policy
from runtime.errors import ButtressError
from runtime.runtime import Runtime
from tests.conftest import deploy_ops

ACTIONS = ("a0", "a1", "a2", "a3")
TOPICS = ("t0", "t1")
WORKFLOWS = ("w0", "w1")
CONNECTORS = ("mailer", "pager")
DEPTH = 5


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[str, Recorder]]:
    record = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with record.lock:
                record.requests.append((self.path.strip("/"), json.loads(body or b"{}")))
            answer = b'{"id": "ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", record
    server.shutdown()
    server.server_close()


def ref(path: str) -> dict[str, str]:
    return {"from": path}


@st.composite
def apps(draw: st.DrawFn) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [
        {
            "op": "add_entity",
            "entity": {
                "name": "log",
                "primary_key": ["n"],
                "fields": [
                    {"name": "n", "type": "bigint", "default": {"expr": "autoincrement"}},
                    {"name": "call", "type": "text"},
                    {"name": "what", "type": "text"},
                ],
            },
        }
    ]
    ops += [
        {"op": "add_topic", "topic": {"name": t, "payload": [{"name": "call", "type": "text"}]}}
        for t in TOPICS
    ]
    for name in ACTIONS:
        emits = []
        target = draw(st.sampled_from([None, *TOPICS, *WORKFLOWS]))
        if target in TOPICS:
            emits.append({"publish": target, "args": {"call": ref("args.call")}})
        elif target in WORKFLOWS:
            emits.append({"start": target, "args": {"call": ref("args.call")}})
        ops.append(
            {
                "op": "add_action",
                "action": {
                    "name": name,
                    "kind": "mutation",
                    "params": [{"name": "call", "type": "text"}],
                    "statements": [f"insert into log (call, what) values ($call, '{name}')"],
                    "emits": emits,
                },
            }
        )
    for name in WORKFLOWS:
        steps: list[dict[str, Any]] = []
        for index in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["action", "effect", "publish"]))
            step: dict[str, Any] = {"name": f"s{index}", "kind": kind, "args": {"call": ref("input.call")}}
            if kind == "action":
                step["action"] = draw(st.sampled_from(ACTIONS))
                if draw(st.booleans()):
                    step["compensation"] = {
                        "action": draw(st.sampled_from(ACTIONS)),
                        "args": {"call": ref("input.call")},
                    }
            elif kind == "effect":
                step["connector"] = draw(st.sampled_from(CONNECTORS))
                if draw(st.booleans()):
                    step["compensation"] = {
                        "connector": draw(st.sampled_from(CONNECTORS)),
                        "args": {"call": ref("input.call")},
                    }
            else:
                step["topic"] = draw(st.sampled_from(TOPICS))
            steps.append(step)
        steps.append({"name": "hold", "kind": "wait", "signal": "go"})
        ops.append(
            {
                "op": "add_workflow",
                "workflow": {"name": name, "params": [{"name": "call", "type": "text"}], "steps": steps},
            }
        )
    for index, topic in enumerate(TOPICS):
        target = draw(st.sampled_from([*ACTIONS, *WORKFLOWS]))
        subscription: dict[str, Any] = {
            "name": f"sub{index}",
            "topic": topic,
            "args": {"call": ref("message.call")},
            "max_depth": DEPTH,  # cycles are allowed, bounded
        }
        subscription["action" if target in ACTIONS else "workflow"] = target
        ops.append({"op": "add_subscription", "subscription": subscription})
    return ops


def lists(names: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...] | None]:
    return st.one_of(
        st.none(), st.lists(st.sampled_from(names), unique=True).map(lambda xs: tuple(sorted(xs)))
    )


agents = st.fixed_dictionaries(
    {
        "actions": lists(ACTIONS),
        "workflows": lists(WORKFLOWS),
        "topics": lists(TOPICS),
        "connectors": lists(CONNECTORS),
    }
)
calls = st.lists(
    st.tuples(
        st.sampled_from(["x", "y"]),
        st.sampled_from(["run_action", "start_workflow", "publish", "cancel"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=6,
)


def allowed(lists_of: dict[str, tuple[str, ...] | None], kind: str, name: str) -> bool:
    listed = lists_of[kind]
    return listed is None or name in listed


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(app=apps(), x=agents, y=agents, sequence=calls)
def test_what_a_call_sets_running_is_within_the_callers_policy_and_every_chain_is_bounded(
    recorder: tuple[str, Recorder],
    app: list[dict[str, Any]],
    x: dict[str, Any],
    y: dict[str, Any],
    sequence: list[Any],
) -> None:
    base, record = recorder
    grants = {"x": x, "y": y}
    policy = Policy(
        agents={name: AgentPolicy(role="operator", **g) for name, g in grants.items()},
        open_to_any_agent=False,
        limits=Limits(max_chain_depth=DEPTH),
        connectors={c: Connector(url=f"{base}/{c}", timeout_s=2) for c in CONNECTORS},
    )
    rt = Runtime.open(
        Path(tempfile.mkdtemp(prefix="buttress-reach-")) / "app.duckdb", policy=policy, audit_reads=False
    )
    try:
        try:
            deploy_ops(rt, app)
        except ButtressError as error:
            # a cycle through emits and workflow steps alone has no subscription to bound it: refused
            assert error.code == "spec.invalid" and "comes back to itself" in error.message, error
            for op in app:
                if op["op"] == "add_action":
                    op["action"]["emits"] = [e for e in op["action"]["emits"] if "start" not in e]
            deploy_ops(rt, app)
        runs: dict[str, str] = {}  # run id -> the agent that started it
        for number, (agent, kind, target) in enumerate(sequence):
            call, owner = f"c{number}-{id(rt)}", agent
            try:
                if kind == "run_action":
                    rt.run_action(ACTIONS[target], {"call": call}, actor=agent)
                elif kind == "start_workflow":
                    started = rt.start_workflow(WORKFLOWS[target % 2], {"call": call}, actor=agent)
                    runs[started.run_id] = agent
                elif kind == "publish":
                    rt.publish_message(TOPICS[target % 2], {"call": call}, actor=agent)
                elif runs:
                    run_id = sorted(runs)[target % len(runs)]
                    run = rt.get_run(run_id)
                    call, owner = str(run.args["call"]), runs[run_id]  # its rows are its starter's call
                    rt.cancel_run(run_id, actor=agent)
            except ButtressError as error:
                assert error.code in {
                    "policy.denied",
                    "limit.rate",
                    "workflow.not_active",
                    "workflow.blocked",
                }, error
            rt.scheduler.drain(timeout=60)
            # what ran for this call (or for the run a cancel undoes), read from the data
            ran = {row[0] for row in rt.query("select what from log where call = $c", {"c": call}).rows}
            with record.lock:
                sent = {path for path, body in record.requests if body.get("call") == call}
            for name in ran:
                assert allowed(grants[owner], "actions", name), (owner, kind, name, grants[owner])
            for connector in sent:
                assert allowed(grants[owner], "connectors", connector), (
                    owner,
                    kind,
                    connector,
                    grants[owner],
                )
        with rt.engine.snapshot() as reader:
            run_depth = reader.scalar("SELECT coalesce(max(depth), 0) FROM _buttress.runs")
            message_depth = reader.scalar("SELECT coalesce(max(depth), 0) FROM _buttress.messages")
        assert run_depth <= DEPTH and message_depth <= DEPTH
    finally:
        rt.close()
