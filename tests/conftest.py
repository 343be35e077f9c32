"""Shared fixtures: a fresh runtime on a temporary DuckDB file, and a one-call deploy."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from runtime.deploy import DeployResult
from runtime.runtime import Runtime


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
