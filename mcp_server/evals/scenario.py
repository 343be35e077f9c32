"""The scenario format: one directory per scenario.

::

    my-scenario/
      scenario.toml        the manifest: id, tags, the seed, the operator, the checks
      prompt.md            the task, as an agent is given it
      agents/reference.py  the oracle: a scripted agent that must pass
      agents/null.py       optional: the built-in null agent does nothing
      agents/<other>.py    adversarial scripts: they try unsafe paths, which must be refused

The manifest is TOML (``tomllib``). Its seed holds spec operations (deployed by the operator,
propose → dry-run → deploy), fixture rows, policy tables and connectors written into the run's
``buttress.toml``, and fake providers the runner starts. Its checks are SQL assertions on the end
state, assertions on the final spec, assertions on the audit log, on the tool calls, actions
run on the end state, what the fake providers recorded, and the messages of a topic. ``load`` reads
and validates a directory; ``builtin`` lists the suite shipped in ``mcp_server/evals/suite/``.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime.errors import Code, ConfigError, NotFound

MANIFEST = "scenario.toml"
PROMPT = "prompt.md"
AGENTS = "agents"
REFERENCE = "reference"
NULL = "null"
SUITE = Path(__file__).resolve().parent / "suite"

Json = Any
ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -------------------------------------------------------------------------------------------- seed


class SeedRows(_Strict):
    """Fixture rows: inserted into ``entity`` as they are (the operator's data), or passed one by one
    as the arguments of the deployed ``action`` (every check the action meets applies)."""

    entity: str | None = None
    action: str | None = None
    rows: tuple[dict[str, Json], ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_target(self) -> SeedRows:
        if (self.entity is None) == (self.action is None):
            raise ValueError("a [[seed.rows]] entry names exactly one of entity or action")
        return self


class Provider(_Strict):
    """A fake external provider the runner serves on 127.0.0.1 for each run (see ``providers``)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    factory: str = Field(
        description="'file.py:function' (relative to the scenario) or 'package.module:function', "
        "returning an ASGI application"
    )


class Seed(_Strict):
    """What every run starts from."""

    operations: tuple[dict[str, Json], ...] = ()
    operations_file: str | None = Field(default=None, description="a JSON file of operations, after these")
    rows: tuple[SeedRows, ...] = ()
    policy: dict[str, Json] = Field(
        default_factory=dict,
        description="tables merged into buttress.toml: approvals, protected, limits, roles, agents",
    )
    connectors: dict[str, dict[str, Json]] = Field(
        default_factory=dict,
        description="written as [connectors.NAME]; '{providers.NAME.url}' is replaced by that provider's URL",
    )
    providers: tuple[Provider, ...] = ()

    @model_validator(mode="after")
    def _policy_tables(self) -> Seed:
        allowed = {"approvals", "protected", "limits", "roles", "agents"}
        unknown = sorted(set(self.policy) - allowed)
        if unknown:
            raise ValueError(f"seed.policy may hold {sorted(allowed)}, not {unknown}")
        return self


class AgentIdentity(_Strict):
    """Who the agent is in the run's policy."""

    name: str = "eval-agent"
    role: str = "developer"


class OperatorStance(_Strict):
    """What the simulated operator does with approval requests (a hazardous deploy or rollback)."""

    approves: bool = False


# ------------------------------------------------------------------------------------------ checks


def _rows(value: Any) -> Any:
    """Expected rows may be written as a JSON string, for rows holding NULL (TOML has no null)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as error:
            raise ValueError(f"expected rows as JSON: {error}") from None
    return value


class _Check(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    description: str = ""
    safety: bool = Field(default=False, description="must hold after any agent, adversarial ones included")


class SqlCheck(_Check):
    """One read-only SELECT on the end state (through the same guard as the ``query`` tool)."""

    kind: Literal["sql"]
    sql: str
    params: dict[str, Json] = Field(default_factory=dict)
    expect: list[list[Json]] | None = Field(default=None, description="exactly these rows, in order")
    expect_count: int | None = Field(default=None, ge=0, description="this many rows")

    _expect_json = field_validator("expect", mode="before")(_rows)

    @model_validator(mode="after")
    def _one_expectation(self) -> SqlCheck:
        if (self.expect is None) == (self.expect_count is None):
            raise ValueError(f"sql check {self.id!r} needs exactly one of expect or expect_count")
        return self


class SpecCheck(_Check):
    """The final spec has (or, with ``exists = false``, lacks) an entity, a field, an action or an
    invariant, with the given attributes."""

    kind: Literal["spec"]
    entity: str | None = None
    field: str | None = None
    type: str | None = None
    nullable: bool | None = None
    default: Json | None = None
    action: str | None = None
    params: list[str] | None = None
    invariant: str | None = None
    exists: bool = True

    @model_validator(mode="after")
    def _one_subject(self) -> SpecCheck:
        subjects = [self.entity is not None, self.action is not None, self.invariant is not None]
        if sum(subjects) != 1:
            raise ValueError(f"spec check {self.id!r} names exactly one of entity, action or invariant")
        if self.field is not None and self.entity is None:
            raise ValueError(f"spec check {self.id!r}: field needs entity")
        return self


AuditRule = Literal[
    "dry_run_before_deploy",
    "no_invariant_violation",
    "invariants_kept",
    "chain_verifies",
    "never_succeeded",
    "succeeded",
    "refused",
]


class AuditCheck(_Check):
    """A rule over the hash-chained audit log (and, for invariants, the end state)."""

    kind: Literal["audit"]
    rule: AuditRule
    tool: str | None = Field(
        default=None, description="never_succeeded, succeeded: this tool (or audit operation)"
    )
    code: str | None = Field(default=None, description="refused: this error code")
    at_least: int = Field(default=1, ge=1, description="refused: at least this many refusals")

    @model_validator(mode="after")
    def _arguments(self) -> AuditCheck:
        if self.rule in ("never_succeeded", "succeeded") and self.tool is None:
            raise ValueError(f"audit check {self.id!r}: {self.rule} needs tool")
        if self.rule == "refused" and self.code is None:
            raise ValueError(f"audit check {self.id!r}: refused needs code")
        return self


class CallsCheck(_Check):
    """The agent's tool calls, as the audit log recorded them."""

    kind: Literal["calls"]
    max: int | None = Field(default=None, ge=1, description="at most this many calls")
    not_used: list[str] = Field(default_factory=list, description="tools never called")
    used: list[str] = Field(default_factory=list, description="tools called at least once")


class ActionCheck(_Check):
    """Run a deployed action on the end state as the operator: it changes the end state, so the
    checks after it see the change."""

    kind: Literal["action"]
    action: str
    args: dict[str, Json] = Field(default_factory=dict)
    expect: Literal["ok", "refused"] = "ok"
    code: str | None = Field(default=None, description="refused: with this error code")
    rows: list[list[Json]] | None = Field(default=None, description="ok: exactly these result rows")

    _rows_json = field_validator("rows", mode="before")(_rows)


class ProviderCheck(_Check):
    """What a fake provider of the seed recorded (its state file, JSON): the value at ``key``, a
    dotted path (``charges_by_order`` or ``mail.sent``), is exactly ``expect``. Evidence from outside
    the application: a charge is counted where it was made, not where the app says it was."""

    kind: Literal["provider"]
    provider: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    key: str = Field(min_length=1)
    expect: Json = Field(description="the JSON value expected at key (a JSON string is parsed)")

    _expect_json = field_validator("expect", mode="before")(_rows)


MESSAGE_COLUMNS = ("payload", "version", "key", "deliveries", "acked", "held", "lease_owner")
"""What a messages check can compare, besides ``payload.<field>``."""


class MessagesCheck(_Check):
    """The messages of a topic, read through the runtime after the run (they live in the runtime's
    own tables, which agent SQL cannot read), in the order they were published: all of them, or the
    ``undelivered`` ones (a consumer has still to receive them). Their payloads hold exactly
    ``fields`` (``"current"``: the topic's payload in the final spec), and/or their ``columns`` are
    exactly the rows of ``expect``, or there are ``expect_count`` of them."""

    kind: Literal["messages"]
    topic: str = Field(min_length=1)
    undelivered: bool = Field(default=False, description="only the messages still to be delivered")
    fields: list[str] | Literal["current"] | None = Field(
        default=None, description="every selected payload holds exactly these fields"
    )
    columns: list[str] = Field(
        default_factory=lambda: ["payload"],
        description=f"payload.<field>, or one of {', '.join(MESSAGE_COLUMNS)}",
    )
    expect: list[list[Json]] | None = Field(default=None, description="exactly these rows, in order")
    expect_count: int | None = Field(default=None, ge=0, description="this many messages")

    _expect_json = field_validator("expect", mode="before")(_rows)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: list[str]) -> list[str]:
        unknown = [c for c in columns if c not in MESSAGE_COLUMNS and not re.fullmatch(r"payload\.\w+", c)]
        if unknown or not columns:
            raise ValueError(f"columns are payload.<field> or {', '.join(MESSAGE_COLUMNS)}, not {unknown}")
        return columns

    @model_validator(mode="after")
    def _an_expectation(self) -> MessagesCheck:
        if self.expect is not None and self.expect_count is not None:
            raise ValueError(f"messages check {self.id!r} takes expect or expect_count, not both")
        if self.fields is None and self.expect is None and self.expect_count is None:
            raise ValueError(f"messages check {self.id!r} needs fields, expect or expect_count")
        return self


Check = Annotated[
    SqlCheck | SpecCheck | AuditCheck | CallsCheck | ActionCheck | ProviderCheck | MessagesCheck,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------------- manifest


class Manifest(_Strict):
    """``scenario.toml``."""

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    title: str
    description: str = ""
    tags: tuple[str, ...] = ()
    null_agent: Literal["fails", "passes"] = Field(
        default="fails", description="'passes' when doing nothing (refusing) is the right answer"
    )
    agent: AgentIdentity = AgentIdentity()
    operator: OperatorStance = OperatorStance()
    seed: Seed = Seed()
    faults: tuple[str, ...] = Field(default=(), description="faults injected in every run (faults.py)")
    fault_horizon: int = Field(default=20, ge=1, description="kill@random picks a call among the first N")
    timeout_s: float = Field(default=600.0, gt=0, description="most wall time one run's agent may take")
    checks: tuple[Check, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_check_ids(self) -> Manifest:
        seen: set[str] = set()
        providers = {provider.name for provider in self.seed.providers}
        for check in self.checks:
            if check.id in seen:
                raise ValueError(f"two checks are named {check.id!r}")
            seen.add(check.id)
            if isinstance(check, ProviderCheck) and check.provider not in providers:
                raise ValueError(
                    f"check {check.id!r} names provider {check.provider!r}, which the seed lacks"
                )
        return self


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: its manifest, its prompt, its scripted agents and where it lives."""

    root: Path
    manifest: Manifest
    prompt: str
    scripts: dict[str, Path]
    """Scripted agents by name: ``reference``, optionally ``null``, and the adversarial ones."""

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def prompt_path(self) -> Path:
        return self.root / PROMPT

    @property
    def adversarial(self) -> list[str]:
        """The adversarial scripts' names, sorted."""
        return sorted(name for name in self.scripts if name not in {REFERENCE, NULL})

    def operations(self) -> list[dict[str, Json]]:
        """The seed's operations: inline ones, then those of ``operations_file``."""
        ops = [dict(op) for op in self.manifest.seed.operations]
        if self.manifest.seed.operations_file:
            path = self.root / self.manifest.seed.operations_file
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise _invalid(self.root, f"seed.operations_file {path.name}: {error}") from None
            found = data.get("operations") if isinstance(data, dict) else data
            if not isinstance(found, list):
                raise _invalid(self.root, f"seed.operations_file {path.name} holds no list of operations")
            ops.extend(found)
        return ops


def _invalid(root: Path, message: str) -> ConfigError:
    return ConfigError(
        Code.CONFIG_INVALID,
        f"scenario {root}: {message}",
        hint="Fix the scenario; docs/eval.md describes the format.",
        details={"scenario": str(root)},
    )


def load(root: str | Path) -> Scenario:
    """Read and validate a scenario directory (``config.invalid`` names the key at fault)."""
    root = Path(root).resolve()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise NotFound("scenario", str(root), hint=f"A scenario is a directory holding {MANIFEST}.")
    try:
        raw = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise _invalid(root, f"{MANIFEST} cannot be read: {error}") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise _invalid(root, f"{MANIFEST}: {where + ': ' if where else ''}{message}") from None
    prompt_path = root / PROMPT
    if not prompt_path.is_file():
        raise _invalid(root, f"{PROMPT} is missing (the task as an agent is given it)")
    scripts = {
        path.stem.replace("_", "-"): path
        for path in sorted((root / AGENTS).glob("*.py"))
        if not path.name.startswith("_")
    }
    if REFERENCE not in scripts:
        raise _invalid(root, f"{AGENTS}/{REFERENCE}.py is missing (the oracle that must pass)")
    for name in scripts:
        if not re.fullmatch(ID_PATTERN, name):
            raise _invalid(root, f"scripted agent {name!r}: use lowercase letters, digits and '-' or '_'")
    return Scenario(
        root=root, manifest=manifest, prompt=prompt_path.read_text(encoding="utf-8"), scripts=scripts
    )


def builtin() -> list[Scenario]:
    """The suite shipped with Buttress, sorted by id."""
    return sorted(
        (load(path.parent) for path in SUITE.glob(f"*/{MANIFEST}")), key=lambda scenario: scenario.id
    )


def resolve(names: list[str], *, tags: list[str] | None = None) -> list[Scenario]:
    """Scenarios by built-in id or directory path; none named means the whole built-in suite.
    ``tags`` keeps those carrying any of them."""
    suite = {scenario.id: scenario for scenario in builtin()}
    found: list[Scenario] = []
    for name in names or sorted(suite):
        if name in suite:
            found.append(suite[name])
        elif Path(name).is_dir():
            found.append(load(name))
        else:
            raise NotFound(
                "scenario",
                name,
                hint=f"Built-in scenarios: {', '.join(sorted(suite))}; or pass a scenario directory.",
            )
    if tags:
        found = [s for s in found if set(s.manifest.tags) & set(tags)]
    return found
