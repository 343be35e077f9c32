"""Shared fixtures: a fresh runtime on a temporary DuckDB file, and a one-call deploy."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from runtime.migrate.deploy import DeployResult
from runtime.runtime import Runtime

# The operator secret of the test session: never the real one in the home directory. Subprocesses
# (servers, the CLI, crash workers) inherit it.
os.environ["BUTTRESS_OPERATOR_KEY"] = str(
    Path(tempfile.mkdtemp(prefix="buttress-operator-")) / "operator.key"
)

# The suite is deterministic: every property test runs the same derandomized examples on every machine
# (and keeps no example database). The long exploratory search is one flag away:
#     pytest --hypothesis-profile=explore
settings.register_profile("default", derandomize=True, database=None, max_examples=20)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile("default")


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on a new database file in ``tmp_path``, closed after the test."""
    runtime = Runtime.open(tmp_path / "app.duckdb")
    try:
        yield runtime
    finally:
        runtime.close()


def deploy_ops(
    runtime: Runtime, operations: Sequence[dict[str, Any]], *, note: str | None = None
) -> DeployResult:
    """Propose, dry-run (which must pass) and deploy ``operations`` on the current version."""
    proposal = runtime.propose(list(operations), note=note)
    report = runtime.dry_run(proposal.proposal_id)
    assert report.passed, report.error
    return runtime.deploy(proposal.proposal_id)


@pytest.fixture
def deploy() -> Callable[..., DeployResult]:
    """``deploy(rt, ops)``: propose, dry-run (must pass) and deploy in one call."""
    return deploy_ops


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop the project daemons a test's servers and commands started (a daemon outlives the agent
    sessions that started it, by design; not the test). Only daemons of projects under this test
    session's temporary directory are touched."""
    yield
    from tests.daemons import stop_daemons_under

    stop_daemons_under(tmp_path_factory.getbasetemp())
