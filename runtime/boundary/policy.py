"""The operator's policy: identities, capabilities, protected entities, approval rules, limits (pure).

The policy is read from the project's configuration file (and re-read by the process that owns the
project when the file changes: ``runtime.boundary.policyfile``); no tool can read its secrets or
change it. Decisions are pure functions of (policy, caller, request) and unknown means deny: an agent
not named in the policy has no capability at all. A policy read from a file carries its ``origin``
(the file's digest and when it was read), so a refusal can say which policy refused. The models
(``Policy`` and its parts) are ``runtime.boundary.policyspec``'s and importable from here; this module
holds the decisions and reading and writing the file.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from runtime.boundary.policyspec import (
    ALL,
    DEFAULT_ROLES,
    OPERATOR_ONLY,
    Acting,
    AgentPolicy,
    ApprovalPolicy,
    Capability,
    Connector,
    Grant,
    Limits,
    Policy,
    PolicyOrigin,
    ProtectedPolicy,
)
from runtime.errors import ButtressError, Code, ConfigError, PolicyError

if TYPE_CHECKING:
    from runtime.schema import changes
    from runtime.schema.spec import AppSpec


def require(policy: Policy, agent: str, capability: Capability, *, what: str) -> None:
    """Raise ``policy.denied`` unless the agent holds the capability; the message says what the policy in
    force gives the agent, and since when."""
    if not policy.may(agent, capability):
        raise PolicyError(
            Code.POLICY_DENIED,
            f"agent {agent!r} may not {what}: {policy.standing(agent)}",
            hint=denied_hint(policy, f"the {capability} capability"),
            details={
                "agent": agent,
                "capability": str(capability),
                "role": policy.agents[agent].role if agent in policy.agents else None,
                "capabilities": sorted(policy.capabilities(agent)),
                "policy_loaded_at": policy.origin.loaded_at if policy.origin else None,
            },
        )


def denied_hint(policy: Policy, missing: str) -> str:
    """What an agent refused by ``policy`` should do: nothing it can retry changes the answer; the
    operator's file does, and the server follows the file without a restart."""
    if policy.origin is None:
        return f"This is the operator's decision: {missing} is not granted. Do not retry; tell the operator."
    if policy.origin.problem:
        return (
            f"{policy.origin.file} has changed since {policy.origin.clock} but was not loaded "
            f"({policy.origin.problem}), so the policy above stays in force: tell the operator."
        )
    return (
        f"Decisions follow {policy.origin.file}, re-read within a second of each change. If {missing} "
        "should be granted, the operator grants it there; until then retrying gives the same answer."
    )


def check_protected(policy: Policy, spec: AppSpec, ops: Sequence[changes.Operation]) -> None:
    """Refuse a proposal any of whose operations touches a protected entity or field.

    An operation touches what it creates, alters, drops, renames, indexes or constrains: a protected
    field is touched by dropping or renaming its entity too, so no sequence of operations in one
    proposal (rename the entity, then drop the field) gets around the protection; renames of what is
    protected are refused, so protection cannot be shed between proposals either.
    """
    from runtime.schema import changes

    entities = set(policy.protected.entities)
    fields = set(policy.protected.fields)
    current = spec
    for index, op in enumerate(ops):
        touched = touched_objects(op, current)
        hit = sorted(t for t in touched if t in entities or t in fields or t.split(".")[0] in entities)
        if hit:
            raise PolicyError(
                Code.POLICY_PROTECTED,
                f"operation {index} ({op.op}) touches protected {', '.join(hit)}",
                hint="Protected entities and fields are changed by the operator only (buttress.toml "
                "[protected]); leave them out of the proposal.",
                details={"path": f"operations[{index}]", "protected": hit},
            )
        try:
            current = changes.apply_one(current, op)
        except ButtressError:
            return  # invalid: apply() reports it with its path; nothing after it is reached


def touched_objects(op: changes.Operation, spec: AppSpec) -> set[str]:
    """The entities (``name``) and fields (``entity.field``) an operation creates, changes or removes."""
    from runtime.schema import changes

    out: set[str] = set()

    def whole(name: str) -> None:
        out.add(name)
        entity = spec.entity(name)
        if entity is not None:
            out.update(f"{name}.{f}" for f in entity.field_names)

    if isinstance(op, changes.AddEntity):
        whole(op.entity.name)
        out.update(f"{op.entity.name}.{f.name}" for f in op.entity.fields)
    elif isinstance(op, changes.DropEntity):
        whole(op.entity)
    elif isinstance(op, changes.RenameEntity):
        whole(op.entity)
        out.add(op.new_name)
    elif isinstance(op, changes.AddField):
        out.update({op.entity, f"{op.entity}.{op.field.name}"})
    elif isinstance(op, changes.DropField | changes.AlterField):
        out.update({op.entity, f"{op.entity}.{op.field}"})
    elif isinstance(op, changes.RenameField):
        out.update({op.entity, f"{op.entity}.{op.field}", f"{op.entity}.{op.new_name}"})
    elif isinstance(op, changes.AddUnique | changes.DropUnique):
        out.add(op.entity)
        out.update(f"{op.entity}.{c}" for c in op.columns)
    elif isinstance(op, changes.AddIndex):
        out.add(op.entity)
        out.update(f"{op.entity}.{c}" for c in op.index.columns)
    elif isinstance(op, changes.DropIndex):
        out.add(op.entity)
        entity = spec.entity(op.entity)
        index = next((i for i in entity.indexes if i.name == op.name), None) if entity else None
        if index is not None:
            out.update(f"{op.entity}.{c}" for c in index.columns)
    return out


def check_action_access(policy: Policy, reads: frozenset[str], writes: frozenset[str], action: str) -> None:
    """Actions may not write protected entities, and read them only if the policy allows."""
    protected = set(policy.protected.entities)
    bad_writes = sorted(writes & protected)
    bad_reads = sorted(reads & protected) if not policy.protected.actions_may_read else []
    if bad_writes or bad_reads:
        raise PolicyError(
            Code.POLICY_PROTECTED,
            f"action {action!r} touches protected entities {bad_writes or bad_reads}",
            hint="Actions may not write protected entities.",
            details={"action": action, "writes": bad_writes, "reads": bad_reads},
        )


def load(path: Path | None) -> Policy:
    """Read the policy tables of a project configuration file (TOML); ``config.invalid`` names the key
    at fault (an unknown role, a misspelt limit) when the file is wrong."""
    if path is None or not path.exists():
        return Policy()
    return parse(path.read_bytes(), path.name)


def parse(content: bytes, name: str = "buttress.toml") -> Policy:
    """The policy of a configuration file's bytes, with its ``origin`` (digest, read now)."""
    import datetime

    try:
        raw = tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"{name} is not valid TOML: {error}",
            hint="Fix the configuration file; the server re-reads it when it changes.",
            details={"path": name},
        ) from None
    policy = from_config(raw, name)
    origin = PolicyOrigin(
        file=name,
        digest=hashlib.sha256(content).hexdigest(),
        loaded_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    return policy.model_copy(update={"origin": origin})


def from_config(raw: dict[str, Any], name: str = "buttress.toml") -> Policy:
    """The policy of a parsed configuration file."""
    data: dict[str, Any] = {}
    if "agent" in raw.get("server", {}):
        data["default_agent"] = raw["server"]["agent"]
    if "roles" in raw:
        data["roles"] = {
            **DEFAULT_ROLES,
            **{k: tuple(v.get("capabilities", ())) for k, v in raw["roles"].items()},
        }
    if "agents" in raw:
        data["agents"] = raw["agents"]
        data["open_to_any_agent"] = False
    for key in ("protected", "approvals", "limits", "connectors"):
        if key in raw:
            data[key] = raw[key]
    try:
        return Policy.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"{name}: {where + ': ' if where else ''}{str(first['msg']).removeprefix('Value error, ')}",
            hint="Fix the configuration file; the server re-reads it when it changes.",
            details={"key": where},
        ) from None


def add_agent(path: Path, agent: str, role: str | None = None, *, rotate: bool = False) -> str:
    """Give ``agent`` an HTTP bearer token in the configuration file; returns the token (shown once).

    Only the token's sha256 is stored. The file is edited in place, comments and layout kept. An agent
    already in the file keeps its entry — its role, its actions and any other key — and only its token
    changes (``rotate`` replaces an existing one); ``role`` changes its role only when given. A new
    agent needs a ``role``. When the file had no ``[agents]`` table (every local agent trusted), the
    server's own agent is written into it with its implicit role first, so that adding a token never
    locks out an agent that worked.
    """
    import secrets

    import tomlkit

    text = path.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    current = load(path)
    if role is not None and role not in current.roles:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"role {role!r} does not exist",
            hint=f"Use one of: {', '.join(sorted(current.roles))} (or define it under [roles.{role}]).",
            details={"roles": sorted(current.roles)},
        )
    agents = document.get("agents")
    if agents is None:
        agents = tomlkit.table(is_super_table=True)
        document["agents"] = agents
        default = current.default_agent
        if default != agent:
            entry = tomlkit.table()
            entry["role"] = "developer"
            agents[default] = entry  # it worked before the first token: it keeps working after
    existing = agents.get(agent)
    if existing is not None and existing.get("token_sha256") and not rotate:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"agent {agent!r} already has a token",
            hint="Pass --rotate to replace it (the old token stops working), or pick another agent name.",
        )
    if existing is None and role is None:
        raise ConfigError(
            Code.CONFIG_INVALID,
            f"agent {agent!r} is new: it needs a role",
            hint=f"Pass a role: one of {', '.join(sorted(current.roles))}.",
            details={"roles": sorted(current.roles)},
        )
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    if existing is None:
        created = tomlkit.table()
        created["role"] = role
        created["token_sha256"] = digest
        created.add(tomlkit.nl())
        agents[agent] = created
    else:
        if role is not None:
            existing["role"] = role
        existing["token_sha256"] = digest
    updated = tomlkit.dumps(document)
    from_config(tomllib.loads(updated), path.name)  # never write a file the server would refuse
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(updated, encoding="utf-8")
    temporary.replace(path)
    return token


__all__ = [
    "ALL",
    "DEFAULT_ROLES",
    "OPERATOR_ONLY",
    "Acting",
    "AgentPolicy",
    "ApprovalPolicy",
    "Capability",
    "Connector",
    "Grant",
    "Limits",
    "Policy",
    "PolicyOrigin",
    "ProtectedPolicy",
    "add_agent",
    "check_action_access",
    "check_protected",
    "denied_hint",
    "from_config",
    "load",
    "parse",
    "require",
    "touched_objects",
]
