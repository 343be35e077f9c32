"""The ``buttress`` command line against real project directories: through ``main([...])`` in this
process (what the ``buttress`` script calls), and as a subprocess where the process itself matters —
attaching to a running server, the demo."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from mcp_server.cli import main
from tests.daemons import daemons_under
from tests.mcp_server.helpers import call, serve_command, source_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "booking"
EXAMPLE_FILES = ("entities.json", "room-and-rules.json", "destructive-change.json")  # in the order they apply


@dataclass(frozen=True)
class Done:
    """What one command printed."""

    stdout: str
    stderr: str


@pytest.fixture
def buttress(capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """``buttress(*ARGS, expect=0)``: run ``buttress ARGS`` through ``main``; assert its exit code."""

    def run(*args: str | Path, expect: int = 0) -> Done:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert code == expect, out + err
        return Done(out, err)

    return run


def subprocess_buttress(*args: str | Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``buttress ARGS`` as its own process; assert its exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", *map(str, args)],
        capture_output=True,
        text=True,
        env=source_env(),
        timeout=120,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    return done


def proposal_id(output: str) -> str:
    found = re.search(r"proposal (p\d+)", output)
    assert found, output
    return found.group(1)


def ship(buttress: Callable[..., Done], project: Path, operations: Path) -> Done:
    """propose, dry-run and deploy one operations file; returns the deploy's result."""
    pid = proposal_id(buttress("propose", "--project", project, operations).stdout)
    dry = buttress("dry-run", "--project", project, pid)
    assert "PASSED" in dry.stdout and "[1/" in dry.stderr  # progress goes to stderr
    return buttress("deploy", "--project", project, pid)


@pytest.fixture
def project(tmp_path: Path, buttress: Callable[..., Done]) -> Path:
    root = tmp_path / "bookings"
    buttress("init", root)
    return root


def test_init_creates_a_commented_config_and_a_database(project: Path) -> None:
    config_text = (project / "buttress.toml").read_text()
    config = tomllib.loads(config_text)
    assert config["database"]["path"] == "app.duckdb" and config["server"]["agent"] == "agent"
    assert set(config["limits"]) >= {"max_rows", "query_timeout_s", "max_operations"}
    assert "# [agents." in config_text and config_text.count("#") > 10
    assert (project / "app.duckdb").is_file()


def test_every_example_file_is_run_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXAMPLE_FILES)


def test_the_change_lifecycle_through_the_cli(project: Path, buttress: Callable[..., Done]) -> None:
    deployed = ship(buttress, project, EXAMPLES / "entities.json")
    assert "version 0 -> 1" in deployed.stdout
    assert "version 1 -> 2" in ship(buttress, project, EXAMPLES / "room-and-rules.json").stdout
    proposal = buttress(
        "propose", "--project", project, EXAMPLES / "destructive-change.json", "--note", "tidy"
    )
    assert "hazard data.drop_field [high]" in proposal.stdout and "compat.rename_field" in proposal.stdout
    pid = proposal_id(proposal.stdout)
    buttress("dry-run", "--project", project, pid)
    buttress("deploy", "--project", project, pid)
    rolled = buttress("rollback", "--project", project)
    assert "spec of version 2: now version 4" in rolled.stdout
    versions = buttress("versions", "--project", project).stdout.splitlines()
    assert [line.split()[:2] for line in versions] == [
        ["0", "init"],
        ["1", "deploy"],
        ["2", "deploy"],
        ["3", "deploy"],
        ["4", "rollback"],
    ]
    assert "tidy" in versions[3] and "restores 2" in versions[4]
    assert "audit chain ok" in buttress("audit", "verify", "--project", project).stdout
    shown = buttress("audit", "show", "--project", project, "--limit", "3").stdout.splitlines()
    assert len(shown) == 3
    assert "verify_audit" in shown[-1] and "operator" in shown[-1]  # the operator's reads are audited too
    rollbacks = buttress("audit", "show", "--project", project, "--operation", "rollback").stdout.splitlines()
    assert len(rollbacks) == 1 and "v3->v4" in rollbacks[0]


def test_finalize_discards_retained_data_so_rollback_is_refused(
    project: Path, buttress: Callable[..., Done]
) -> None:
    ship(buttress, project, EXAMPLES / "entities.json")
    ship(buttress, project, EXAMPLES / "destructive-change.json")
    refused = buttress("finalize", "--project", project, "--before", "3", expect=1)  # asks first
    assert "nothing finalized" in refused.stdout
    finalized = buttress("finalize", "--project", project, "--before", "3", "--yes")
    assert "finalized versions before 3: 1 retained tables discarded" in finalized.stdout
    refused = buttress("rollback", "--project", project, expect=1)
    assert refused.stderr.startswith("error [rollback.finalized]")


def test_errors_print_code_and_hint_and_exit_1(
    project: Path, tmp_path: Path, buttress: Callable[..., Done]
) -> None:
    missing = buttress("deploy", "--project", project, "p404", expect=1)
    assert missing.stderr.startswith("error [not_found]: no proposal named 'p404'\n  hint: ")
    not_dry = buttress(
        "deploy",
        "--project",
        project,
        proposal_id(buttress("propose", "--project", project, EXAMPLES / "entities.json").stdout),
        expect=1,
    )
    assert not_dry.stderr.startswith("error [deploy.not_dry_run]")
    bad_file = tmp_path / "bad.json"
    bad_file.write_text('[{"op": "add_entity", "entity": {"name": "Bad Name"}}]')
    assert buttress("propose", "--project", project, bad_file, expect=1).stderr.startswith(
        "error [spec.invalid]"
    )
    nowhere = buttress("versions", "--project", tmp_path / "nowhere", expect=1)
    assert (
        nowhere.stderr.startswith("error [not_found]: no project named") and "buttress init" in nowhere.stderr
    )


@pytest.mark.anyio
async def test_commands_against_a_running_server_attach_to_it_and_are_audited(project: Path) -> None:
    command, *args = serve_command(project)
    async with Client(StdioServerParameters(command=command, args=args, env=source_env())) as client:
        await call(client, "describe_app")  # the server owns the database
        attached = subprocess.run(
            [sys.executable, "-m", "mcp_server", "versions", "--project", str(project)],
            capture_output=True,
            text=True,
            env=source_env(),
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        audit = await call(client, "read_audit", limit=10)
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout.split()[:2] == ["0", "init"]
    assert ("operator", "list_versions") in {(e["actor"], e["operation"]) for e in audit["entries"]}


def test_the_installed_command_runs_a_command_and_reports_an_error_with_its_code(project: Path) -> None:
    versions = subprocess_buttress("versions", "--project", project)
    assert versions.stdout.split()[:2] == ["0", "init"]
    missing = subprocess_buttress("deploy", "--project", project, "p404", expect=1)
    assert missing.stderr.startswith("error [not_found]: no proposal named 'p404'\n  hint: ")


def test_demo_runs_end_to_end() -> None:
    demo = subprocess_buttress("demo")
    assert "hazard data.drop_field" in demo.stdout
    assert "audit chain ok" in demo.stdout and "demo finished" in demo.stdout
    assert "run late-42: waiting (sleep:hold)" in demo.stdout  # asleep when the owner stops
    assert "after the restart: run late-42 completed, steps hold, book" in demo.stdout
    project = Path(demo.stdout.split("demo project: ", 1)[1].split()[0])
    assert daemons_under(project) == {}  # the throwaway project's daemon stopped with it


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
