"""docs/eval.md is executable: its example scenario is written out and checked, the commands it
shows are run, and every scorecard field, environment variable, check kind, audit rule and
option of `buttress eval run` is documented."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import get_args

import pytest

from mcp_server.cli import build_parser, main
from mcp_server.evals.external import ENV_VARS
from mcp_server.evals.scenario import AuditRule, Check, Manifest
from mcp_server.evals.scorecard import (
    AttemptResult,
    BaselineResult,
    CheckResult,
    FaultResult,
    RunResult,
    ScenarioResult,
    Scorecard,
)
from tests.evals.conftest import DOC, ROOT, doc_files

TEXT = DOC.read_text(encoding="utf-8")

COMMANDS = [
    ("buttress eval check ./todo-done", 0),
    ("buttress eval run ./todo-done", 0),
    ('buttress eval run ./todo-done --agent-cmd "python examples/eval_agent.py todo-done/playbook.json"', 0),
    (
        'buttress eval run ./todo-done --transport http --agent-cmd "python examples/eval_agent.py todo-done/playbook.json"',
        0,
    ),
    ("buttress eval run ./todo-done --scripted null --expected-failures expected-failures.txt", 0),
    ("buttress eval list", 0),
]


def test_the_doc_holds_a_complete_scenario() -> None:
    files = doc_files()
    assert {
        "todo-done/scenario.toml",
        "todo-done/seed.json",
        "todo-done/prompt.md",
        "todo-done/agents/reference.py",
        "todo-done/agents/skip_dry_run.py",
        "todo-done/playbook.json",
        "expected-failures.txt",
    } <= set(files)


@pytest.mark.parametrize(("line", "code"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_the_commands_of_the_doc_run_as_it_says(
    example: Path, monkeypatch: pytest.MonkeyPatch, line: str, code: int
) -> None:
    assert line in TEXT
    root = example.parent
    (root / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "eval_agent.py", root / "examples" / "eval_agent.py")
    monkeypatch.chdir(root)
    argv = shlex.split(line.replace('"python ', f'"{sys.executable} '))[1:]
    assert main(argv) == code
    if "run" in argv:
        assert (root / "eval-results" / "scorecard.json").is_file()


def test_a_stale_baseline_entry_fails_as_the_doc_says(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "the same baseline with `--scripted reference` exits 1" in TEXT
    monkeypatch.chdir(example.parent)
    argv = [
        "eval",
        "run",
        "./todo-done",
        "--scripted",
        "reference",
        "--expected-failures",
        "expected-failures.txt",
    ]
    assert main(argv) == 1


def test_every_scorecard_field_is_documented() -> None:
    models = (Scorecard, ScenarioResult, RunResult, CheckResult, AttemptResult, FaultResult, BaselineResult)
    missing = sorted(
        {f for model in models for f in model.model_fields if f"`{f}`" not in TEXT and f"`{f}[]`" not in TEXT}
    )
    assert missing == []


def test_every_manifest_key_check_kind_audit_rule_and_variable_is_documented() -> None:
    spelled = ("`{}`", "`[{}]`", "`[[{}]]`")
    missing = [key for key in Manifest.model_fields if not any(form.format(key) in TEXT for form in spelled)]
    missing += [f"`{rule}`" for rule in get_args(AuditRule) if f"`{rule}`" not in TEXT]
    kinds = [get_args(model.model_fields["kind"].annotation)[0] for model in get_args(get_args(Check)[0])]
    assert {"sql", "messages"} <= set(kinds)
    missing += [f"`{kind}`" for kind in kinds if f"| `{kind}` |" not in TEXT]
    missing += [f"`{name}`" for name in ENV_VARS if f"`{name}`" not in TEXT]
    assert missing == []


def test_every_option_of_eval_run_is_documented() -> None:
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["eval"]._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr,index]
    options = [
        o for action in run._actions for o in action.option_strings if o.startswith("--") and o != "--help"
    ]
    missing = [o for o in options if f"`{o}" not in TEXT]
    assert missing == []
