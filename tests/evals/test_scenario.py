"""The scenario format: what the loader accepts, and what it refuses with ``config.invalid`` naming
the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.evals import scenario as scenarios
from runtime.errors import ButtressError


def refusal(root: Path) -> ButtressError:
    with pytest.raises(ButtressError) as caught:
        scenarios.load(root)
    return caught.value


def test_the_example_scenario_loads_with_its_scripts(example: Path) -> None:
    loaded = scenarios.load(example)
    assert loaded.id == "todo-done" and loaded.adversarial == ["skip-dry-run"]
    assert sorted(loaded.scripts) == ["reference", "skip-dry-run"]
    assert [c.kind for c in loaded.manifest.checks] == [
        "spec",
        "sql",
        "sql",
        "audit",
        "audit",
        "action",
        "calls",
    ]
    assert [op["op"] for op in loaded.operations()] == ["add_entity", "add_action"]
    assert loaded.prompt.startswith("You maintain a task list")


def test_a_scenario_is_found_by_builtin_id_or_by_directory(example: Path) -> None:
    assert [s.id for s in scenarios.resolve(["rename-field", str(example)])] == ["rename-field", "todo-done"]
    assert len(scenarios.resolve([])) == len(scenarios.builtin())
    with pytest.raises(ButtressError) as caught:
        scenarios.resolve(["no-such-scenario"])
    assert caught.value.code == "not_found" and "double-booking" in str(caught.value.hint)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('kind = "spec"', 'kind = "vibes"', 1), "checks.0"),
        (
            lambda t: t.replace("expect = [[1, true], [2, false]]", ""),
            "exactly one of expect or expect_count",
        ),
        (lambda t: t.replace('id = "tasks-kept"', 'id = "done-field"'), "two checks are named 'done-field'"),
        (
            lambda t: t.replace('rule = "chain_verifies"', 'rule = "never_succeeded"'),
            "never_succeeded needs tool",
        ),
        (lambda t: t + '\n[seed.policy.server]\nagent = "x"\n', "seed.policy may hold"),
        (lambda t: t.replace('id = "todo-done"', 'id = "Todo Done"'), "id"),
        (
            lambda t: t.replace('entity = "task"\nrows', 'entity = "task"\naction = "add_task"\nrows'),
            "exactly one of entity or action",
        ),
        (lambda t: t + "\n[[checks]\n", "cannot be read"),
        (
            lambda t: (
                t
                + '\n[[checks]]\nid = "paid"\nkind = "provider"\nprovider = "payments"\nkey = "x"\nexpect = 1\n'
            ),
            "names provider 'payments', which the seed lacks",
        ),
        (
            lambda t: t + '\n[[checks]]\nid = "m"\nkind = "messages"\ntopic = "events"\nundelivered = true\n',
            "needs fields, expect or expect_count",
        ),
        (
            lambda t: (
                t + '\n[[checks]]\nid = "m"\nkind = "messages"\ntopic = "events"\n'
                'columns = ["payload.user", "acked_by"]\nexpect = []\n'
            ),
            "not ['acked_by']",
        ),
        (
            lambda t: t.replace('rule = "chain_verifies"', 'rule = "succeeded"'),
            "succeeded needs tool",
        ),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_key(example: Path, edit: object, message: str) -> None:
    manifest = example / "scenario.toml"
    manifest.write_text(edit(manifest.read_text(encoding="utf-8")), encoding="utf-8")  # type: ignore[operator]
    error = refusal(example)
    assert error.code == "config.invalid" and message in error.message, error.message


def test_a_scenario_needs_a_prompt_and_a_reference(example: Path) -> None:
    (example / "agents" / "reference.py").unlink()
    assert "agents/reference.py is missing" in refusal(example).message
    (example / "prompt.md").unlink()
    assert "prompt.md is missing" in refusal(example).message
    (example / "scenario.toml").unlink()
    assert refusal(example).code == "not_found"


def test_a_seed_the_runtime_refuses_is_reported_before_any_run(example: Path, tmp_path: Path) -> None:
    from mcp_server.evals.runner import template

    (example / "seed.json").write_text('[{"op": "add_entity", "entity": {"name": "t"}}]', encoding="utf-8")
    with pytest.raises(ButtressError) as caught:
        template(scenarios.load(example), tmp_path / "work")
    assert caught.value.code == "config.invalid" and "the seed cannot be applied" in caught.value.message
    assert caught.value.details["error"]["code"] == "spec.invalid"
