"""The documentation is part of the contract: the README documents every tool, command, role, limit,
error code and hazard, and the buttress.toml that `buttress init` writes says exactly what the code
enforces. An undocumented one fails here, by name."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from mcp_server.cli import build_parser
from mcp_server.project import CONFIG_TEMPLATE
from runtime.boundary.policy import DEFAULT_ROLES, ApprovalPolicy, Capability, Limits, from_config
from runtime.errors import Code
from runtime.migrate.hazards import HazardCode
from tools.registry import REGISTRY

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8") if README.exists() else ""


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every subcommand, nested ones spelled out (``audit verify``)."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = commands(sub, f"{prefix}{name} ")
                found.extend(nested or [f"{prefix}{name}"])
    return found


def test_readme_documents_every_tool_and_command() -> None:
    missing = [f"tool `{spec.name}`" for spec in REGISTRY if f"`{spec.name}`" not in TEXT]
    missing += [
        f"command `buttress {name}`" for name in commands(build_parser()) if f"buttress {name}" not in TEXT
    ]
    assert not missing, f"{README.name} does not mention: " + ", ".join(missing)


def test_readme_documents_every_role_capability_limit_code_and_hazard() -> None:
    missing = [f"role `{role}`" for role in DEFAULT_ROLES if f"`{role}`" not in TEXT]
    missing += [f"capability `{c}`" for c in Capability if f"`{c}`" not in TEXT]
    missing += [f"limit `{key}`" for key in Limits.model_fields if key not in TEXT]
    missing += [f"error code `{code}`" for code in Code if f"`{code}`" not in TEXT]
    missing += [f"hazard `{code}`" for code in HazardCode if f"`{code}`" not in TEXT]
    assert not missing, f"{README.name} does not mention: " + ", ".join(missing)


def test_the_readme_names_no_role_that_does_not_exist() -> None:
    assert "`admin`" not in TEXT and "| admin" not in TEXT


def test_the_generated_configuration_states_the_enforced_defaults() -> None:
    text = CONFIG_TEMPLATE.format(root="/p", agent="claude")
    raw = tomllib.loads(text)
    policy = from_config(raw)
    assert policy.limits == Limits()  # every value written is the value enforced without it
    assert set(raw["limits"]) == set(Limits.model_fields) - {"threads"}
    assert "threads" in text  # documented, left to DuckDB by default
    assert policy.approvals.severity == ApprovalPolicy().severity == "high"
    assert policy.agents["claude"].role == "developer" and not policy.open_to_any_agent
    assert "placeholder" not in text and "not enforced" not in text
    for role in DEFAULT_ROLES:
        assert role in text


def test_readme_documents_every_operation() -> None:
    from runtime.schema.changes import OPERATION_NAMES

    assert "set_checked_by" in OPERATION_NAMES
    missing = [f"operation `{name}`" for name in OPERATION_NAMES if f"`{name}`" not in TEXT]
    assert not missing, f"{README.name} does not mention: " + ", ".join(missing)


def test_the_approval_handshake_reads_the_same_in_the_error_the_tools_and_the_readme() -> None:
    import re

    from runtime.boundary.approvals import HANDSHAKE, needs_approval_error
    from tools.change import deploy, rollback

    def flat(text: str) -> str:
        return re.sub(r"\s+", " ", text)

    assert needs_approval_error({"id": "r1", "expires_at": "x"}, []).hint == HANDSHAKE
    assert "details.approval_request" in HANDSHAKE
    readme = flat(TEXT)
    assert flat(HANDSHAKE) in readme
    for tool in (deploy, rollback):
        assert flat(HANDSHAKE) in flat(tool.__doc__ or "")
