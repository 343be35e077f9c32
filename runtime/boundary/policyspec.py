"""What the operator's policy declares, as models (pure): capabilities, agents and their grants, acting
on someone's behalf, protected entities, limits, approval rules, connectors, and where the policy in
force was read from (``PolicyOrigin``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.errors import Code, PolicyError
from runtime.migrate.hazards import Hazard, Severity, at_least
from runtime.schema.graph import KINDS, Kind, Reach


class Capability(StrEnum):
    READ = "read"
    QUERY = "query"
    RUN_ACTIONS = "run_actions"
    PROPOSE = "propose"
    DRY_RUN = "dry_run"
    DEPLOY = "deploy"
    DEPLOY_HAZARDOUS = "deploy_hazardous"
    ROLLBACK = "rollback"
    FINALIZE = "finalize"
    RUN_WORKFLOWS = "run_workflows"
    PUBLISH = "publish"
    CONSUME = "consume"
    RESOLVE_EFFECTS = "resolve_effects"
    MANAGE_RUNS = "manage_runs"


ALL: Final[frozenset[Capability]] = frozenset(Capability)


OPERATOR_ONLY: Final = frozenset({Capability.FINALIZE, Capability.RESOLVE_EFFECTS})
"""Irreversible, or a human's call about the outside world (did that payment go through?)."""

DEFAULT_ROLES: Final[dict[str, tuple[Capability, ...]]] = {
    "reader": (Capability.READ, Capability.QUERY),
    "operator": (
        Capability.READ,
        Capability.QUERY,
        Capability.RUN_ACTIONS,
        Capability.RUN_WORKFLOWS,
        Capability.PUBLISH,
        Capability.CONSUME,
    ),
    "maintainer": tuple(c for c in Capability if c not in {*OPERATOR_ONLY, Capability.DEPLOY_HAZARDOUS}),
    # manage_runs (cancel and signal runs another agent started) comes with maintainer and up
    "developer": tuple(c for c in Capability if c not in OPERATOR_ONLY),
    "owner": tuple(Capability),
}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AgentPolicy(_Strict):
    role: str
    token_sha256: str | None = Field(default=None, description="sha256 hex of the agent's HTTP bearer token")
    actions: tuple[str, ...] | None = Field(default=None, description="if set, the only actions it may run")
    workflows: tuple[str, ...] | None = Field(
        default=None,
        description="if set, the only workflows its calls may start (directly or through messages)",
    )
    topics: tuple[str, ...] | None = Field(
        default=None,
        description="if set, the only topics its calls may publish on (directly or through runs)",
    )
    connectors: tuple[str, ...] | None = Field(
        default=None, description="if set, the only connectors the effects its calls set in motion may use"
    )


class Grant(_Strict):
    """What one agent may set running, frozen when it makes a call: its capabilities and its lists.

    A run or a message carries the grant of the call that created it, so what runs later on that
    agent's behalf — a step, a compensation, a subscription's target — runs under the policy as it
    was when the call was decided (``None`` in a row: the operator, or a row from before grants).
    """

    agent: str
    capabilities: frozenset[Capability]
    actions: tuple[str, ...] | None = None
    workflows: tuple[str, ...] | None = None
    topics: tuple[str, ...] | None = None
    connectors: tuple[str, ...] | None = None

    def allows(self, kind: Kind, name: str) -> bool:
        needed = {
            "actions": Capability.RUN_ACTIONS,
            "workflows": Capability.RUN_WORKFLOWS,
            "topics": Capability.PUBLISH,
            "connectors": Capability.RUN_WORKFLOWS,
        }[kind]
        listed: tuple[str, ...] | None = getattr(self, kind)
        return needed in self.capabilities and (listed is None or name in listed)


class Acting(_Strict):
    """On whose behalf work runs, under what grant, how deep down a chain, at what rate.

    Carried by every run and message a call creates (``acting_for``, ``grant`` and ``depth`` columns),
    and by what they create in turn: a subscription's delivery runs for the agent whose message it
    delivers, a compensation for the agent whose run it undoes.
    """

    agent: str
    grant: Grant | None = None
    """None: unrestricted (the operator, or a run or message from before grants were recorded)."""
    depth: int = 0
    """Hops since the agent's own call: each delivery of a message by a subscription is one."""
    runs_per_minute: int | None = None
    """Most runs this agent's calls may start in a minute (``[limits] max_runs_per_minute``)."""
    max_depth: int | None = None
    """Most hops down a chain (``[limits] max_chain_depth``)."""

    def allows(self, kind: Kind, name: str) -> bool:
        return self.grant is None or self.grant.allows(kind, name)

    def deeper(self) -> Acting:
        return self.model_copy(update={"depth": self.depth + 1})

    def actor(self, via: str) -> str:
        """The audit's actor for work done through ``via`` (``workflow:<run>``, ``subscription:<name>``)."""
        return f"{self.agent} via {via}"


class ProtectedPolicy(_Strict):
    entities: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # "entity.field"
    actions_may_read: bool = True


class Limits(_Strict):
    """The operator's bounds on time, memory and size (``[limits]`` in ``buttress.toml``)."""

    max_rows: int = Field(default=1000, ge=1, le=1_000_000, description="most rows one query returns")
    max_result_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="most bytes of values one query or action returns"
    )
    query_timeout_s: float = Field(default=10.0, gt=0, le=3600, description="time limit of a query")
    action_timeout_s: float = Field(default=10.0, gt=0, le=3600, description="time limit of an action")
    change_timeout_s: float = Field(
        default=300.0, gt=0, le=86400, description="time limit of a dry-run, deploy, rollback or finalize"
    )
    lane_wait_s: float = Field(
        default=10.0, gt=0, le=3600, description="longest wait for the writer lane before engine.busy"
    )
    run_lease_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="on a shared database: how long a server holds a run it advances before another may "
        "take it over (an effect's request adds its connector's timeout)",
    )
    invariant_budget_ms: float = Field(
        default=1000.0, gt=0, description="most time one invariant check may take per mutation"
    )
    max_operations: int = Field(default=200, ge=1, description="most operations in one proposal")
    max_sql_length: int = Field(default=100_000, ge=100, description="longest SQL text accepted")
    max_request_bytes: int = Field(default=1_048_576, ge=1024, description="largest request accepted")
    memory_limit_mb: int = Field(default=2048, ge=64, description="DuckDB's memory limit; larger work spills")
    max_spill_mb: int = Field(default=10240, ge=0, description="most disk DuckDB may spill to")
    threads: int | None = Field(default=None, ge=1, le=256, description="DuckDB threads (default: cores)")
    max_chain_depth: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="most hops a chain of messages and runs may take (a subscription delivering one is a hop)",
    )
    max_fanout: int = Field(
        default=32, ge=1, le=10_000, description="most subscriptions on one topic, and emits of one action"
    )
    max_runs_per_minute: int = Field(
        default=600, ge=1, description="most runs the calls of one agent may start in a minute"
    )


class ApprovalPolicy(_Strict):
    """Which agent deploys and rollbacks wait for a human (``buttress approve``)."""

    severity: Severity | Literal["none"] = Field(
        default="high",
        description="hazards at or above this severity need an approval ('none': never)",
    )
    ttl_minutes: int = Field(default=60, ge=1, le=60 * 24 * 7)
    elicitation: bool = False


class Connector(_Strict):
    """An external endpoint effects may call, declared by the operator (``[connectors.<name>]``).

    Agents name a connector in a workflow step; they never see or choose where it points, nor its
    credentials: headers whose values are secrets are read from the environment of the server
    (``headers_from_env``) when the request is sent.
    """

    url: str = Field(pattern=r"^https?://", description="where requests go (http or https)")
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, description="headers sent as written")
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> environment variable holding its value"
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds the whole exchange may take (then the answer is lost)",
    )
    idempotency_header: str = Field(
        default="Idempotency-Key", description="the header carrying the effect's idempotency key"
    )
    max_response_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    description: str = ""


class PolicyOrigin(_Strict):
    """Where a policy in force came from: which file, its content's digest, when it was read; and what of
    the file as it is now is not in force."""

    file: str = Field(description="the configuration file's name")
    digest: str = Field(description="sha256 of the file's bytes as read")
    loaded_at: str = Field(description="when it was read (ISO 8601, UTC)")
    problem: str | None = Field(
        default=None, description="why the file as it is now was refused (this policy stays in force)"
    )
    restart_needed: tuple[str, ...] = Field(
        default=(), description="settings changed in the file that take effect when the owner restarts"
    )

    @property
    def clock(self) -> str:
        """``loaded_at`` as a time of day: ``12:03:01 UTC``."""
        return f"{self.loaded_at[11:19]} UTC"


class Policy(_Strict):
    """The whole operator policy. The default (no configuration) trusts one local agent as developer."""

    default_agent: str = "local"
    # With no [agents] table the operator trusts whichever agent it starts the server for, as a developer.
    open_to_any_agent: bool = True
    roles: dict[str, tuple[Capability, ...]] = Field(default_factory=lambda: dict(DEFAULT_ROLES))
    agents: dict[str, AgentPolicy] = Field(default_factory=lambda: {"local": AgentPolicy(role="developer")})
    protected: ProtectedPolicy = ProtectedPolicy()
    approvals: ApprovalPolicy = ApprovalPolicy()
    limits: Limits = Limits()
    connectors: dict[str, Connector] = Field(default_factory=dict)
    origin: PolicyOrigin | None = None

    @model_validator(mode="after")
    def _known_roles(self) -> Policy:
        unknown = {name: agent.role for name, agent in self.agents.items() if agent.role not in self.roles}
        if unknown:
            name, role = next(iter(unknown.items()))
            raise ValueError(
                f"agent {name!r} has role {role!r}, which does not exist; roles: {', '.join(sorted(self.roles))}"
            )
        return self

    def capabilities(self, agent: str) -> frozenset[Capability]:
        found = self.agents.get(agent)
        if found is None:
            return frozenset(self.roles.get("developer", ())) if self.open_to_any_agent else frozenset()
        return frozenset(self.roles.get(found.role, ()))

    def may(self, agent: str, capability: Capability) -> bool:
        return capability in self.capabilities(agent)

    def tools_for(
        self, agent: str, tool_names: Sequence[str], needs: Mapping[str, Capability | None]
    ) -> list[str]:
        """The tools an agent may see: generic tools by the capability each ``needs`` (derived from
        the operation each projects: ``tools.registry.TOOL_CAPABILITY``; a tool it does not name, or
        that needs no capability an agent can hold, is not shown), ``app_<action>`` tools by action."""
        out = []
        for name in tool_names:
            if name.startswith("app_"):
                if self.may_run_action(agent, name.removeprefix("app_")):
                    out.append(name)
            elif (capability := needs.get(name)) is not None and self.may(agent, capability):
                out.append(name)
        return out

    def may_run_action(self, agent: str, action: str) -> bool:
        if not self.may(agent, Capability.RUN_ACTIONS):
            return False
        found = self.agents.get(agent)
        return found is None or found.actions is None or action in found.actions

    def grant(self, agent: str) -> Grant:
        """What ``agent`` may set running now (``Grant``)."""
        found = self.agents.get(agent)
        lists = {kind: getattr(found, kind) for kind in KINDS} if found is not None else {}
        return Grant(agent=agent, capabilities=self.capabilities(agent), **lists)

    def acting(self, agent: str, *, operator: bool = False) -> Acting:
        """The context of work an agent's call sets running (the operator's: unrestricted)."""
        return Acting(
            agent=agent,
            grant=None if operator else self.grant(agent),
            runs_per_minute=None if operator else self.limits.max_runs_per_minute,
            max_depth=self.limits.max_chain_depth,
        )

    def decide(self, agent: str, reach: Reach, what: str) -> None:
        """The one decision on everything a call sets in motion (``graph.Reach``): every action, workflow,
        topic and connector it may make run, transitively, must be covered by the agent's grant
        (``policy.denied`` naming each that is not). Callers skip it for the operator."""
        denied = reach.denied(self.grant(agent))
        if not denied:
            return
        named = ", ".join(f"{kind[:-1]} {name}" for kind, name in denied)
        raise PolicyError(
            Code.POLICY_DENIED,
            f"agent {agent!r} may not {what}: it would run {named}, which its policy does not allow",
            hint="What a call sets in motion (a workflow's steps and compensations, a message's "
            "subscriptions, an action's emits) is decided with it; the operator's buttress.toml names what "
            "this agent may run (capabilities, and actions/workflows/topics/connectors lists). Ask them "
            "rather than retrying.",
            details={"agent": agent, "denied": [{"kind": kind, "name": name} for kind, name in denied]},
        )

    def agent_for_token(self, token: str) -> str | None:
        """The agent whose stored token hash matches (constant-time comparison)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        for name, agent in self.agents.items():
            if agent.token_sha256 and hmac.compare_digest(agent.token_sha256, digest):
                return name
        return None

    def standing(self, agent: str) -> str:
        """What this policy gives ``agent``, naming the file and when it was read: ``buttress.toml as
        loaded at 12:03:01 UTC gives agent 'x' role reader (read, query)``."""
        source = f"{self.origin.file} as loaded at {self.origin.clock}" if self.origin else "the policy"
        found = self.agents.get(agent)
        if found is None and not self.open_to_any_agent:
            return f"{source} does not name agent {agent!r} (an agent not named has no capability)"
        role = found.role if found is not None else "developer"
        granted = ", ".join(c for c in Capability if c in self.capabilities(agent)) or "nothing"
        return f"{source} gives agent {agent!r} role {role} ({granted})"

    def needs_approval(self, hazards: Sequence[Hazard]) -> list[Hazard]:
        if self.approvals.severity == "none":
            return []
        return at_least(list(hazards), self.approvals.severity)
