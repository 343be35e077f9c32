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

# The README's `pytest` runs every kind of test, quickly; the long trials are one setting away (CI runs
# them as a second step):
#     BUTTRESS_STORY_KILLS=200 pytest tests/workflows tests/runtime/test_crash.py
#                                     the crash stories, 200 SIGKILLs (payment; by default each named
#                                     crash point once and one random kill)
#     BUTTRESS_SOAK_S=180 pytest tests/soak -s      clients over HTTP and stdio, the owner killed again and again
#     BUTTRESS_RACE_ITERATIONS=1000 pytest tests/security/test_race.py
#     BUTTRESS_EVAL_FULL=1 pytest tests/evals/test_hygiene.py   every scenario over real processes
#     BUTTRESS_CENSUS_FULL=1 pytest tests/security/test_function_census.py   every call of the census
#     BUTTRESS_FUZZ_FULL=1 pytest tests/security/test_boundary.py   every injection payload deployed too
#     pytest --hypothesis-profile=explore                  the long exploratory property search

# The suite is deterministic: every property test runs the same derandomized examples on every machine
# (and keeps no example database).
DEFAULT_EXAMPLES = 10
settings.register_profile("default", derandomize=True, database=None, max_examples=DEFAULT_EXAMPLES)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile("default")


def examples(count: int) -> int:
    """A property test's example count: ``count`` in the default profile, as many times more in another
    profile as that profile runs more than the default (``explore``: the long search)."""
    return max(1, count * settings.default.max_examples // DEFAULT_EXAMPLES)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (in addopts): two workers per core, at most four (``--maxprocesses``). Most tests
    spend much of their time waiting on server processes, the disk and the network; a second worker
    per core fills that time (measured on two cores: 8m55s with two workers, 7m27s with four)."""
    del config
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 * cores


ENGINE = os.environ.get("BUTTRESS_TEST_ENGINE", "duckdb")
"""The engine the ``rt`` fixture opens: ``duckdb`` (a file in ``tmp_path``), or ``postgres`` (a new
database on the test cluster) to run the runtime's tests on PostgreSQL."""


def open_runtime(tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> Runtime:
    """A runtime on a new database of the engine the suite runs on (``ENGINE``)."""
    if ENGINE == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        return Runtime.open_postgres(dsn, tmp_path / "app.postgres", **options)
    return Runtime.open(tmp_path / "app.duckdb", **options)


def constraint_kinds(runtime: Runtime, table: str) -> set[str]:
    """The kinds of constraint the engine's catalog holds on ``table`` (``CHECK``, ``FOREIGN KEY``,
    ``PRIMARY KEY``, ``UNIQUE``; PostgreSQL's NOT NULL columns are not counted as checks)."""
    with runtime.engine.snapshot() as reader:
        if reader.dialect.name == "duckdb":
            rows = reader.fetchall(
                "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = ?", [table]
            )
            return {str(r[0]) for r in rows}
        rows = reader.fetchall(
            "SELECT contype FROM pg_catalog.pg_constraint WHERE conrelid = CAST(? AS regclass)", [table]
        )
    names = {"c": "CHECK", "f": "FOREIGN KEY", "p": "PRIMARY KEY", "u": "UNIQUE"}
    return {names.get(str(r[0]), str(r[0])) for r in rows}


def index_names(runtime: Runtime, table: str) -> set[str]:
    """The names of the indexes on ``table`` in the engine's catalog."""
    with runtime.engine.snapshot() as reader:
        if reader.dialect.name == "duckdb":
            rows = reader.fetchall("SELECT index_name FROM duckdb_indexes() WHERE table_name = ?", [table])
        else:
            rows = reader.fetchall("SELECT indexname FROM pg_catalog.pg_indexes WHERE tablename = ?", [table])
    return {str(r[0]) for r in rows}


@pytest.fixture
def rt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A runtime on a new database (``ENGINE``), closed after the test."""
    runtime = open_runtime(tmp_path, request)
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


# --------------------------------------------------------------------------------------- PostgreSQL
# Tests that need PostgreSQL use `pg_dsn` (a new database on a cluster) or the `engine` fixture
# parametrised over both engines. The cluster is the one CI started (BUTTRESS_POSTGRES_DSN) or a
# private one this worker starts from Debian's server binaries. Without the binaries those tests are
# skipped with the reason shown, unless BUTTRESS_REQUIRE_POSTGRES is set (CI), where they fail.


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests import pg

    cluster = pg.shared()
    if cluster is not None:
        yield cluster
        return
    if pg.binaries() is None:
        if os.environ.get("BUTTRESS_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL's server binaries were not found (BUTTRESS_REQUIRE_POSTGRES is set)")
        pytest.skip("engine-specific: PostgreSQL's server binaries were not found (apt install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="buttress-pg-"))
    started = pg.start(root)
    try:
        yield started
    finally:
        pg.stop(root)


@pytest.fixture
def pg_dsn(pg_cluster: Any) -> Iterator[str]:
    """A new, empty database on the test cluster, dropped after the test."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.dsn(name)
    finally:
        pg_cluster.drop_database(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, the runtime's tests the port has not reached are expected to fail, each with its
    reason (``tests/engine_gaps.py``), strictly: one that starts passing must come off the list."""
    del config
    if ENGINE != "postgres":
        return
    from tests.engine_gaps import POSTGRES_GAPS

    for item in items:
        why = POSTGRES_GAPS.get(item.nodeid)
        if why is not None:
            item.add_marker(pytest.mark.xfail(reason=f"not yet on PostgreSQL: {why}", strict=True))


def pytest_report_header(config: pytest.Config) -> str | None:
    del config
    if ENGINE == "postgres":
        from tests.engine_gaps import POSTGRES_GAPS

        return (
            f"engine: postgres ({len(POSTGRES_GAPS)} tests listed in tests/engine_gaps.py expected to fail)"
        )
    return None
