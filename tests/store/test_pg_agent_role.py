"""Agent SQL on PostgreSQL reads as its own role (engine-specific: PostgreSQL), logged in as it
(``login``) or taking it on the owner's connection for the transaction (``set_role``, the default). Each
hostile statement here is one the SQL guard refuses first; these show the database refuses it too, or
makes it harmless."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.errors import ButtressError, Code
from runtime.sql.dialect import POSTGRES
from runtime.sql.render import render
from runtime.store.postgres import AGENT_ROLE, PgEngine, PgSettings, agent_conninfo, provision_agent_role


@pytest.fixture(params=["login", "set_role"])
def engine(request: pytest.FixtureRequest, pg_dsn: str) -> Iterator[PgEngine]:
    login = agent_conninfo(pg_dsn) if request.param == "login" else None
    eng = PgEngine(pg_dsn, settings=PgSettings(agent_statement_timeout_s=0.5, work_mem_mb=8), agent_dsn=login)
    with eng.transaction() as tx:
        tx.execute("CREATE TABLE booking (id INTEGER PRIMARY KEY, who TEXT)")
        tx.execute("INSERT INTO booking VALUES (1, 'ada')")
    provision_agent_role(eng)
    with eng.transaction() as tx:
        tx.execute("CREATE TABLE _buttress.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        tx.execute("INSERT INTO _buttress.meta VALUES ('secret', 'operator only')")
        tx.execute("CREATE TABLE later (id INTEGER)")  # created after provisioning: readable too
    yield eng
    eng.close()


def agent_scalar(engine: PgEngine, sql: str) -> object:
    with engine.snapshot(agent=True) as reader:
        return reader.scalar(sql)


def test_the_agent_reads_the_applications_tables_as_its_role(engine: PgEngine) -> None:
    assert agent_scalar(engine, "SELECT who FROM booking") == "ada"
    assert agent_scalar(engine, "SELECT count(*) FROM later") == 0
    assert agent_scalar(engine, "SELECT current_user") == AGENT_ROLE
    assert agent_scalar(engine, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    assert agent_scalar(engine, "SHOW search_path") == "public"


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT value FROM _buttress.meta", Code.SQL_FORBIDDEN),
        ("SELECT query_to_xml('SELECT * FROM _buttress.meta', true, true, '')", Code.SQL_FORBIDDEN),
        ("SELECT pg_read_file('/etc/hostname')", Code.SQL_FORBIDDEN),
        ("SELECT lo_import('/etc/hostname')", Code.SQL_FORBIDDEN),
        ("INSERT INTO booking VALUES (2, 'mallory')", Code.SQL_FORBIDDEN),
        ("CREATE TABLE planted (id INTEGER)", Code.SQL_FORBIDDEN),
        ("COPY (SELECT 1) TO PROGRAM 'id'", Code.SQL_FORBIDDEN),
        # not installed, and the role cannot install an extension
        ("SELECT dblink_exec('dbname=postgres', 'DROP TABLE booking')", Code.ENGINE_ERROR),
    ],
)
def test_hostile_statements_are_refused_by_the_database(engine: PgEngine, sql: str, code: str) -> None:
    with pytest.raises(ButtressError) as caught:
        agent_scalar(engine, sql)
    assert caught.value.code == code, caught.value.to_dict()
    assert agent_scalar(engine, "SELECT count(*) FROM booking") == 1


def test_a_logged_in_agent_cannot_take_the_owners_role_back(pg_dsn: str) -> None:
    """Logged in as the agent role, ``set_config('role', ...)`` is refused by the database; on the
    owner's connection the SQL guard is what refuses it (no function that is not proven portable gets
    through: ``render``)."""
    engine = PgEngine(pg_dsn, agent_dsn=agent_conninfo(pg_dsn))
    provision_agent_role(engine)
    with pytest.raises(ButtressError) as caught, engine.snapshot(agent=True) as reader:
        reader.scalar("SELECT set_config('role', 'postgres', false)")
    assert caught.value.code == Code.SQL_FORBIDDEN
    engine.close()
    for sql in ("select set_config('role', 'postgres', false)", "select pg_advisory_lock(1)"):
        with pytest.raises(ButtressError) as caught:
            render(sql, POSTGRES)
        assert caught.value.code == Code.SQL_FORBIDDEN


def test_the_roles_statement_timeout_bounds_agent_sql(engine: PgEngine) -> None:
    with pytest.raises(ButtressError) as caught:
        agent_scalar(engine, "SELECT pg_sleep(5)")
    assert caught.value.code == Code.QUERY_TIMEOUT


def test_what_an_agent_sets_ends_with_its_snapshot(engine: PgEngine) -> None:
    """``set_config`` and session advisory locks do not outlive the statement's snapshot on the
    pooled connection: the next agent read has the role's limits, and every server's lane is free."""
    with engine.snapshot(agent=True) as reader:
        reader.scalar("SELECT set_config('work_mem', '1GB', false)")
        reader.scalar(f"SELECT pg_advisory_lock({engine.lane_key})")
        assert reader.scalar("SHOW work_mem") == "1GB"
    assert agent_scalar(engine, "SHOW work_mem") == "8MB"
    other = PgEngine(engine.dsn)
    with other.transaction(wait=1) as tx:
        tx.execute("INSERT INTO booking VALUES (2, 'grace')")
    other.close()
