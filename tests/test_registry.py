"""The operations are declared once (``@operation`` on ``Runtime``): every surface carries exactly what
the declarations say — the socket channel and ``RemoteRuntime``, the MCP tools and the policy's view
of them, the CLI's commands, the control room's acts — no operation missing from a surface it names,
nothing on a surface that no declaration accounts for."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from mcp import Client

from mcp_server.channel import PROGRESSING, RESULTS, RemoteRuntime
from mcp_server.cli import OWN_COMMANDS, build_parser, command_paths
from mcp_server.server import build_server
from mcp_server.ui.pages import ACTS
from runtime.api import FACADE, OPERATIONS
from runtime.boundary.policy import Capability
from runtime.registry import Kind
from runtime.runtime import Runtime
from tools.logic import ACTION_TOOL_PREFIX
from tools.registry import REGISTRY, TOOL_CAPABILITY

pytestmark = pytest.mark.anyio


def declared(surface: str) -> set[str]:
    return {name for op in OPERATIONS.values() for name in getattr(op.declaration, surface)}


def test_every_public_runtime_method_that_takes_an_actor_is_a_declared_operation() -> None:
    undeclared = {
        name
        for name, member in vars(Runtime).items()
        if callable(member)
        and not name.startswith("_")
        and "actor" in inspect.signature(member).parameters
        and name not in OPERATIONS
    }
    # authorize, record_refusal and the policy checks are the facade's and the operations' own plumbing
    assert undeclared <= {
        "authorize",
        "authorize_action",
        "record_refusal",
        "record_read",
        "reading",
        "refusing",
        "audited",
        "run_refusable",
        "policy_check_proposal",
        "policy_check_actions",
    }, undeclared
    assert len(OPERATIONS) >= 40


def test_the_channel_carries_every_operation_with_its_result_type_and_progress() -> None:
    assert set(RESULTS) == set(OPERATIONS)
    assert {name for name, op in OPERATIONS.items() if op.declaration.progress} == PROGRESSING
    assert {"dry_run", "deploy", "rollback"} == PROGRESSING
    for name, op in OPERATIONS.items():
        assert RESULTS[name].core_schema is not None, name
        assert "return" not in str(op.signature), name


def test_remote_runtime_presents_exactly_the_operations_and_the_facade_with_the_runtimes_signatures() -> None:
    for name in OPERATIONS:
        local = inspect.signature(getattr(Runtime, name))
        remote = inspect.signature(getattr(RemoteRuntime, name))
        assert list(remote.parameters.values())[1:] == list(local.parameters.values())[1:], name  # past self
    for name in FACADE:
        assert hasattr(Runtime, name) or name == "spec_checks", name
        assert hasattr(RemoteRuntime, name) or name == "spec_checks", name
    own = {"attach", "LIMITS_TTL_S"}  # how a remote runtime is made and how often it asks for the limits
    public = {name for name in dir(RemoteRuntime) if not name.startswith("_")}
    assert public == set(OPERATIONS) | (FACADE - {"spec_checks"}) | own, public ^ (
        set(OPERATIONS) | FACADE | own
    )


def test_a_remote_call_binds_its_arguments_like_the_runtime_before_anything_is_sent(tmp_path: Path) -> None:
    remote = RemoteRuntime(tmp_path / "nobody.sock", Runtime.open(tmp_path / "a.duckdb").limits)
    with pytest.raises(TypeError):
        remote.deploy()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        remote.get_run("r1", colour="red")  # type: ignore[call-arg]


async def test_tools_list_is_the_declared_tools_and_each_needs_its_operations_capability(
    tmp_path: Path,
) -> None:
    assert {spec.name for spec in REGISTRY} == declared("tools") == set(TOOL_CAPABILITY)
    rt = Runtime.open(tmp_path / "app.duckdb")
    try:
        async with Client(build_server(rt, agent="local")) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
    finally:
        rt.close()
    assert {n for n in listed if not n.startswith(ACTION_TOOL_PREFIX)} == declared("tools")
    for name, capability in TOOL_CAPABILITY.items():
        assert capability is not None, (
            f"{name} is offered to agents but its operation is the operator's alone"
        )


def test_the_cli_runs_the_declared_commands_and_its_own_and_nothing_else() -> None:
    commands = command_paths(build_parser())
    assert declared("cli").isdisjoint(OWN_COMMANDS)
    assert commands == declared("cli") | OWN_COMMANDS, commands ^ (declared("cli") | OWN_COMMANDS)


def test_the_control_rooms_acts_are_the_declared_ones() -> None:
    assert set(ACTS) == declared("acts")


def test_every_capability_the_policy_grants_is_checked_by_some_operation() -> None:
    checked = {op.declaration.capability for op in OPERATIONS.values()} | {
        c for op in OPERATIONS.values() for c in op.declaration.also
    }
    assert checked - {None} == set(Capability)


def test_reads_are_not_offered_as_changes_and_changes_not_as_reads() -> None:
    by_tool = {spec.name: spec for spec in REGISTRY}
    for op in OPERATIONS.values():
        for tool in op.declaration.tools:
            annotations = by_tool[tool].annotations
            assert annotations.read_only_hint == (op.declaration.kind is Kind.READ), tool
            if op.declaration.kind is Kind.DESTRUCTIVE:
                assert annotations.destructive_hint, tool


def test_an_operation_is_audited_under_the_name_it_declares(tmp_path: Path) -> None:
    """Every operation callable with no argument but its actor is refused to an agent the policy does
    not name; its refusal row carries the declared audit name (polled reads too: only their answers
    go unaudited)."""
    from runtime.boundary.policy import AgentPolicy, Policy

    policy = Policy(open_to_any_agent=False, agents={"local": AgentPolicy(role="developer")})
    rt = Runtime.open(tmp_path / "app.duckdb", policy=policy)
    try:
        called: dict[str, str] = {}
        for name, op in OPERATIONS.items():
            required = [
                p
                for p in op.signature.parameters.values()
                if p.default is inspect.Parameter.empty and p.name != "actor"
            ]
            if required or op.declaration.capability is None:
                continue
            with pytest.raises(Exception) as caught:
                getattr(rt, name)(actor="stranger")
            assert getattr(caught.value, "code", None) == "policy.denied", name
            called[name] = op.audited_as
        rt.flush_reads()
        audited = [(e.operation, e.error_code) for e in rt.read_audit(limit=200)]
    finally:
        rt.close()
    assert len(called) >= 15
    assert sorted(operation for operation, _ in audited) == sorted(called.values())
    assert {code for _, code in audited} == {"policy.denied"}
