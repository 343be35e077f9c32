"""runtime.sql.sqlcheck: which agent SQL is accepted, what it is found to do, and how the rest is refused.

The cases are tables: each row is one input and its expected outcome. Accepted statements are
also run on a real DuckDB holding the same schema, so the allow-list never drifts into SQL that
DuckDB itself would reject.
"""

from __future__ import annotations

import doctest
from collections.abc import Iterator, Sequence
from types import ModuleType

import duckdb
import pytest

from runtime.errors import ButtressError, Code
from runtime.sql import facts, parsing, sizes, sqlcheck
from runtime.sql.facts import Analysis
from runtime.sql.parsing import MAX_DEPTH, MAX_SQL_LENGTH, split_statements
from runtime.sql.sqlcheck import analyze_expression, analyze_query, analyze_statement
from runtime.store.engine import connect

SCHEMA = {
    "users": ["id", "name", "email"],
    "orders": ["id", "user_id", "total", "status", "created_at"],
    "items": ["id", "order_id", "sku", "qty"],
    "big_spenders": ["user_id", "spent"],
}
VIEWS = frozenset({"big_spenders"})
PARAM_VALUES = {"id": 1, "n": 1, "min": 1, "pattern": "a%", "name": "a", "email": "a@b"}

DDL = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR, email VARCHAR);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total DOUBLE, status VARCHAR, created_at TIMESTAMP);
CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER, sku VARCHAR, qty INTEGER);
CREATE VIEW big_spenders AS SELECT user_id, sum(total) AS spent FROM orders GROUP BY user_id;
"""


def refused(call: object, code: Code) -> ButtressError:
    """Assert that calling ``call`` raises a ButtressError with ``code``; return the error."""
    assert callable(call)
    with pytest.raises(ButtressError) as info:
        call()
    assert info.value.code == code, f"{info.value.code}: {info.value.message}"
    return info.value


# ---------------------------------------------------------------------------------------------
# Accepted queries
# ---------------------------------------------------------------------------------------------

ALLOWED_QUERIES = [
    "SELECT id, name FROM users WHERE id = $id",
    "SELECT u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id",
    "SELECT name, total FROM users LEFT JOIN orders USING (id)",
    "SELECT * FROM users NATURAL JOIN orders",
    "SELECT * FROM users CROSS JOIN items",
    "SELECT * FROM users u FULL OUTER JOIN orders o ON u.id = o.user_id",
    "SELECT * FROM users u SEMI JOIN orders o ON u.id = o.user_id",
    "SELECT * FROM users u ANTI JOIN orders o ON u.id = o.user_id",
    "SELECT * FROM users POSITIONAL JOIN orders",
    "SELECT u.name, o.total, i.sku FROM users u JOIN orders o ON o.user_id = u.id JOIN items i ON i.order_id = o.id",
    "WITH spend AS (SELECT user_id, sum(total) AS spent FROM orders GROUP BY user_id) SELECT * FROM spend WHERE spent > 10",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT y FROM b",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT n FROM r",
    "WITH a AS MATERIALIZED (SELECT 1 AS x) SELECT x FROM a",
    "WITH orders AS (SELECT * FROM orders WHERE total > 0) SELECT count(*) FROM orders",
    "SELECT name, row_number() OVER (PARTITION BY email ORDER BY id DESC) AS rn FROM users",
    "SELECT id, sum(total) OVER w FROM orders WINDOW w AS (PARTITION BY user_id ORDER BY created_at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
    "SELECT id, lag(total, 1) OVER (ORDER BY id) FROM orders",
    "SELECT id FROM users QUALIFY row_number() OVER (PARTITION BY name ORDER BY id) = 1",
    "SELECT user_id, count(*) AS n, avg(total) FROM orders GROUP BY user_id HAVING count(*) > 1 ORDER BY n DESC NULLS LAST LIMIT 10 OFFSET 5",
    "SELECT count(*) FILTER (WHERE total > 10), count(DISTINCT user_id) FROM orders",
    "SELECT user_id, string_agg(sku, ',' ORDER BY sku) FROM orders JOIN items ON items.order_id = orders.id GROUP BY ALL ORDER BY ALL",
    "SELECT quantile_cont(total, 0.5), median(total), arg_max(id, total), list(id) FROM orders",
    "SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE total > 100)",
    "SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)",
    "SELECT (SELECT max(total) FROM orders o WHERE o.user_id = u.id) AS top FROM users u",
    "SELECT name FROM users UNION SELECT sku FROM items",
    "SELECT name FROM users UNION ALL SELECT sku FROM items ORDER BY name LIMIT 3",
    "SELECT name FROM users INTERSECT SELECT sku FROM items",
    "SELECT name FROM users EXCEPT SELECT sku FROM items",
    "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(k, label)",
    "SELECT n FROM range(10) r(n)",
    "SELECT * FROM generate_series(1, 10) g(n)",
    "SELECT x FROM unnest([1, 2, 3]) AS u(x)",
    "SELECT * FROM users, LATERAL (SELECT users.id * 2 AS k) l",
    "SELECT * FROM users, LATERAL unnest([users.id, 2]) AS t(v)",
    "SELECT CASE WHEN total > 10 THEN 'big' ELSE 'small' END AS size, CAST(total AS DECIMAL(10, 2)), total::INTEGER FROM orders",
    "SELECT coalesce(name, 'x'), nullif(name, ''), lower(name) || '@' || upper(email), length(name) FROM users",
    "SELECT * FROM orders WHERE total BETWEEN 1 AND 10 AND status IN ('a', 'b') AND created_at IS NOT NULL",
    "SELECT date_trunc('month', created_at), date_part('year', created_at), created_at + INTERVAL 1 DAY FROM orders",
    "SELECT list_transform([1, 2], lambda x: x + 1), [x * 2 FOR x IN [1, 2, 3] IF x > 1], {'a': 1}, [1, 2][1]",
    "SELECT * EXCLUDE (email) FROM users",
    "SELECT u.* FROM users u WHERE u.name ILIKE $pattern",
    "SELECT DISTINCT ON (user_id) user_id, total FROM orders ORDER BY user_id, total DESC",
    "FROM users SELECT name",
    "SELECT name AS n FROM users WHERE n = 'a' ORDER BY n",
    "SELECT * FROM main.users",
    'SELECT "Name" FROM "USERS"',
    "SELECT user_id, spent FROM big_spenders ORDER BY spent DESC",
    "SELECT id FROM users LIMIT $n",
    "SELECT 'ünïcode ✓' AS label",
    "SELECT 1;",
    "SELECT name.lower() FROM users",
    "SELECT users FROM users",
]


@pytest.mark.parametrize("sql", ALLOWED_QUERIES)
def test_allowed_query_is_accepted(sql: str) -> None:
    analysis = analyze_query(sql, SCHEMA)
    assert analysis.kind == "select"
    assert analysis.reads <= set(SCHEMA)


@pytest.fixture(scope="module")
def database() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(":memory:")
    connection.execute(DDL)
    yield connection
    connection.close()


@pytest.mark.parametrize("sql", ALLOWED_QUERIES)
def test_allowed_query_runs_on_duckdb(sql: str, database: duckdb.DuckDBPyConnection) -> None:
    analysis = analyze_query(sql, SCHEMA)
    database.execute(analysis.sql, {name: PARAM_VALUES[name] for name in analysis.params} or None).fetchall()


# ---------------------------------------------------------------------------------------------
# Refused queries
# ---------------------------------------------------------------------------------------------

REFUSED_QUERIES = [
    # statement families
    ("CREATE TABLE x (a INT)", Code.SQL_FORBIDDEN),
    ("ALTER TABLE users ADD COLUMN b INT", Code.SQL_FORBIDDEN),
    ("DROP TABLE users", Code.SQL_FORBIDDEN),
    ("TRUNCATE users", Code.SQL_FORBIDDEN),
    ("COMMENT ON TABLE users IS 'x'", Code.SQL_FORBIDDEN),
    ("PRAGMA table_info('users')", Code.SQL_FORBIDDEN),
    ("SET threads = 1", Code.SQL_FORBIDDEN),
    ("RESET threads", Code.SQL_FORBIDDEN),
    ("ATTACH 'other.db' AS other", Code.SQL_FORBIDDEN),
    ("DETACH other", Code.SQL_FORBIDDEN),
    ("COPY users TO 'users.csv'", Code.SQL_FORBIDDEN),
    ("EXPORT DATABASE 'dump'", Code.SQL_FORBIDDEN),
    ("IMPORT DATABASE 'dump'", Code.SQL_FORBIDDEN),
    ("INSTALL httpfs", Code.SQL_FORBIDDEN),
    ("LOAD httpfs", Code.SQL_FORBIDDEN),
    ("CALL pragma_version()", Code.SQL_FORBIDDEN),
    ("CHECKPOINT", Code.SQL_FORBIDDEN),
    ("FORCE CHECKPOINT", Code.SQL_FORBIDDEN),
    ("VACUUM", Code.SQL_FORBIDDEN),
    ("USE main", Code.SQL_FORBIDDEN),
    ("DESCRIBE users", Code.SQL_FORBIDDEN),
    ("SHOW TABLES", Code.SQL_FORBIDDEN),
    ("SUMMARIZE users", Code.SQL_FORBIDDEN),
    ("EXPLAIN SELECT 1", Code.SQL_FORBIDDEN),
    ("BEGIN", Code.SQL_FORBIDDEN),
    ("START TRANSACTION", Code.SQL_FORBIDDEN),
    ("COMMIT", Code.SQL_FORBIDDEN),
    ("ROLLBACK", Code.SQL_FORBIDDEN),
    ("ABORT", Code.SQL_FORBIDDEN),
    ("MERGE INTO users USING orders ON users.id = orders.id WHEN MATCHED THEN DELETE", Code.SQL_FORBIDDEN),
    ("INSERT INTO users VALUES (1, 'a', 'b')", Code.SQL_FORBIDDEN),
    ("UPDATE users SET name = 'x'", Code.SQL_FORBIDDEN),
    ("DELETE FROM users", Code.SQL_FORBIDDEN),
    ("PIVOT orders ON status USING sum(total)", Code.SQL_FORBIDDEN),
    ("OPTIMIZE users", Code.SQL_FORBIDDEN),  # sqlglot's unparsed Command fallback
    ("LISTEN channel", Code.SQL_FORBIDDEN),  # misparsed as an alias
    ("WITH gone AS (DELETE FROM users RETURNING *) SELECT * FROM gone", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users FOR UPDATE", Code.SQL_FORBIDDEN),
    ("SELECT 1 INTO copy_of_one", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users AT (VERSION => 1)", Code.SQL_FORBIDDEN),
    # more than one statement
    ("SELECT 1; SELECT 2", Code.SQL_FORBIDDEN),
    ("SELECT 1; DROP TABLE users", Code.SQL_FORBIDDEN),
    ("SELECT 1 -- comment\n; DROP TABLE users", Code.SQL_FORBIDDEN),
    ("SELECT 'a\\'; DROP TABLE users; --'", Code.SQL_FORBIDDEN),
    ("SELECT /* /* nested */ 1 */ 2; DROP TABLE users", Code.SQL_FORBIDDEN),
    ("SELECT 1;;", Code.SQL_FORBIDDEN),
    # parse errors and empty input
    ("", Code.SQL_PARSE),
    ("   ;  ", Code.SQL_PARSE),
    ("-- only a comment", Code.SQL_PARSE),
    ("SELECT FROM WHERE", Code.SQL_PARSE),
    ("SELECT 'unterminated", Code.SQL_PARSE),
    ("SELECT /* unterminated", Code.SQL_PARSE),
    # tables: files, table functions, other schemas, system names
    ("SELECT * FROM 'users.csv'", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users, '/etc/passwd'", Code.SQL_FORBIDDEN),
    ("SELECT * FROM read_csv('x.csv')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM read_parquet('x.parquet')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM read_json_auto('x.json')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM glob('*')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM duckdb_tables()", Code.SQL_FORBIDDEN),
    ("SELECT * FROM pragma_table_info('users')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM query('SELECT 1')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM query_table('users')", Code.SQL_FORBIDDEN),
    ("SELECT * FROM histogram(users, name)", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users, LATERAL histogram(users, name)", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users JOIN histogram(users, name) h ON true", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users CROSS JOIN LATERAL lower(name)", Code.SQL_FORBIDDEN),
    ("SELECT * FROM _buttress.audit", Code.SQL_FORBIDDEN),
    ('SELECT * FROM "_buttress"."audit"', Code.SQL_FORBIDDEN),
    ('SELECT * FROM "_BUTTRESS".Audit', Code.SQL_FORBIDDEN),
    ("SELECT * FROM system.main.users", Code.SQL_FORBIDDEN),
    ("SELECT * FROM memory.main.users", Code.SQL_FORBIDDEN),
    ("SELECT * FROM information_schema.tables", Code.SQL_FORBIDDEN),
    ("SELECT * FROM pg_catalog.pg_class", Code.SQL_FORBIDDEN),
    ("SELECT * FROM temp.users", Code.SQL_FORBIDDEN),
    ("SELECT * FROM duckdb_settings", Code.SQL_FORBIDDEN),
    ("SELECT * FROM sqlite_master", Code.SQL_FORBIDDEN),
    ("SELECT * FROM users WHERE id IN (SELECT id FROM _buttress.audit)", Code.SQL_FORBIDDEN),
    ("SELECT * FROM secrets", Code.SQL_UNKNOWN_TABLE),
    ("SELECT * FROM users JOIN nope ON true", Code.SQL_UNKNOWN_TABLE),
    ('SELECT * FROM "users.csv"', Code.SQL_UNKNOWN_TABLE),
    # CTE scoping cannot launder a table name
    ("SELECT * FROM (WITH y AS (SELECT 1) SELECT * FROM y), y", Code.SQL_UNKNOWN_TABLE),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", Code.SQL_UNKNOWN_TABLE),
    ("WITH secret AS (SELECT * FROM secret) SELECT * FROM secret", Code.SQL_UNKNOWN_TABLE),
    # functions
    ("SELECT current_setting('threads')", Code.SQL_FORBIDDEN),
    ("SELECT getenv('HOME')", Code.SQL_FORBIDDEN),
    ("SELECT read_text('/etc/passwd')", Code.SQL_FORBIDDEN),
    ("SELECT read_blob('/etc/passwd')", Code.SQL_FORBIDDEN),
    ("SELECT nextval('seq')", Code.SQL_FORBIDDEN),
    ("SELECT currval('seq')", Code.SQL_FORBIDDEN),
    ("SELECT setseed(0.5)", Code.SQL_FORBIDDEN),
    ("SELECT getvariable('x')", Code.SQL_FORBIDDEN),
    ("SELECT sleep_ms(100000)", Code.SQL_FORBIDDEN),
    ("SELECT has_table_privilege('users', 'select')", Code.SQL_FORBIDDEN),
    ("SELECT pg_typeof(1)", Code.SQL_FORBIDDEN),
    ("SELECT system.main.read_text('x')", Code.SQL_FORBIDDEN),
    ("SELECT 'x'.read_text()", Code.SQL_FORBIDDEN),
    ("SELECT \"READ_TEXT\"('x')", Code.SQL_FORBIDDEN),
    ("SELECT my_macro(1)", Code.SQL_FORBIDDEN),
    # identifiers must be ASCII (look-alikes)
    ("SELECT nаme FROM users", Code.SQL_FORBIDDEN),  # Cyrillic a
    ('SELECT * FROM "usérs"', Code.SQL_FORBIDDEN),
    ("SELECT reаd_text('x')", Code.SQL_FORBIDDEN),  # Cyrillic a
    # params
    ("SELECT * FROM users WHERE id = ?", Code.SQL_PARAM),
    ("SELECT * FROM users WHERE id = $1", Code.SQL_PARAM),
    ("SELECT * FROM users WHERE id = $UserId", Code.SQL_PARAM),
    # columns
    ("SELECT nope FROM users", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT u.nope FROM users u", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT x.id FROM users u", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT x.* FROM users u", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE totl > 1)", Code.SQL_UNKNOWN_COLUMN),
    ("WITH c AS (SELECT id FROM users) SELECT name FROM c", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT k FROM (SELECT id AS key FROM users) s(k2)", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT * EXCLUDE (nope) FROM users", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT id FROM users UNION SELECT id FROM orders ORDER BY nope", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT list_transform([1], lambda x: y + 1)", Code.SQL_UNKNOWN_COLUMN),
    ("SELECT spent FROM big_spenders WHERE total > 1", Code.SQL_UNKNOWN_COLUMN),
]


@pytest.mark.parametrize(("sql", "code"), REFUSED_QUERIES)
def test_refused_query_raises_its_code(sql: str, code: Code) -> None:
    refused(lambda: analyze_query(sql, SCHEMA), code)


def test_unknown_table_lists_the_known_tables() -> None:
    error = refused(lambda: analyze_query("SELECT * FROM secrets", SCHEMA), Code.SQL_UNKNOWN_TABLE)
    assert error.details == {"table": "secrets", "known_tables": sorted(SCHEMA)}


def test_unknown_column_names_the_column_and_its_candidates() -> None:
    error = refused(lambda: analyze_query("SELECT u.nope FROM users u", SCHEMA), Code.SQL_UNKNOWN_COLUMN)
    assert error.details == {"column": "u.nope", "candidates": {"u": ["id", "name", "email"]}}


def test_multiple_statements_are_refused_with_a_one_statement_hint() -> None:
    error = refused(lambda: analyze_query("SELECT 1; SELECT 2", SCHEMA), Code.SQL_FORBIDDEN)
    assert error.hint == "send one statement per call"


def test_parse_error_reports_line_and_column() -> None:
    error = refused(lambda: analyze_query("SELECT *\nFROM users\nWHERE AND", SCHEMA), Code.SQL_PARSE)
    assert error.details["line"] == 3
    assert isinstance(error.details["col"], int)


def test_positional_params_are_refused_with_a_named_param_hint() -> None:
    error = refused(lambda: analyze_query("SELECT $1", SCHEMA), Code.SQL_PARAM)
    assert "$customer_id" in error.hint


def test_refused_function_is_named_in_details() -> None:
    error = refused(lambda: analyze_query("SELECT getenv('HOME')", SCHEMA), Code.SQL_FORBIDDEN)
    assert error.details == {"function": "getenv"}


# ---------------------------------------------------------------------------------------------
# What an accepted statement is found to do
# ---------------------------------------------------------------------------------------------

EXTRACTION = [
    # sql, reads, params, output columns
    ("SELECT id, name FROM users WHERE id = $id", {"users"}, ("id",), ("id", "name")),
    ("SELECT * FROM users", {"users"}, (), ("id", "name", "email")),
    ("SELECT u.* FROM users u", {"users"}, (), ("id", "name", "email")),
    ("SELECT * EXCLUDE (email) FROM users", {"users"}, (), ("id", "name")),
    ("SELECT * RENAME (name AS full_name) FROM users", {"users"}, (), ("id", "full_name", "email")),
    (
        "SELECT * FROM users JOIN orders USING (id)",
        {"users", "orders"},
        (),
        ("id", "name", "email", "user_id", "total", "status", "created_at"),
    ),
    (
        "SELECT * FROM users u SEMI JOIN orders o ON o.user_id = u.id",
        {"users", "orders"},
        (),
        ("id", "name", "email"),
    ),
    ("SELECT name AS Who, count(*) AS n FROM users GROUP BY name", {"users"}, (), ("Who", "n")),
    (
        "WITH s AS (SELECT user_id, sum(total) AS spent FROM orders GROUP BY user_id) SELECT * FROM s",
        {"orders"},
        (),
        ("user_id", "spent"),
    ),
    ("SELECT * FROM (VALUES (1, 'a')) AS v(k, label)", set(), (), ("k", "label")),
    ("SELECT * FROM range(3) r(n)", set(), (), ("n",)),
    ("SELECT name FROM users UNION SELECT sku FROM items", {"users", "items"}, (), ("name",)),
    (
        "SELECT * FROM users WHERE name = $name AND (email = $email OR name = $name)",
        {"users"},
        ("name", "email"),
        ("id", "name", "email"),
    ),
    (
        "SELECT * FROM users WHERE id IN (SELECT user_id FROM big_spenders WHERE spent > $min)",
        {"users", "big_spenders"},
        ("min",),
        ("id", "name", "email"),
    ),
    ("SELECT 1 AS one", set(), (), ("one",)),
]


@pytest.mark.parametrize(("sql", "reads", "params", "output"), EXTRACTION)
def test_query_analysis_reports_reads_params_and_output_columns(
    sql: str, reads: set[str], params: tuple[str, ...], output: tuple[str, ...]
) -> None:
    analysis = analyze_query(sql, SCHEMA)
    assert (analysis.reads, analysis.writes, analysis.params, analysis.output_columns) == (
        frozenset(reads),
        frozenset(),
        params,
        output,
    )


def test_analysis_keeps_the_text_without_its_terminator() -> None:
    analysis = analyze_query("  SELECT 1 AS one ;  ", SCHEMA)
    assert analysis.sql == "SELECT 1 AS one"


def test_analysis_is_frozen() -> None:
    analysis = analyze_query("SELECT 1", SCHEMA)
    with pytest.raises(AttributeError):
        analysis.kind = "delete"  # type: ignore[misc]


def test_star_over_a_source_of_unknown_shape_is_reported_as_star() -> None:
    analysis = analyze_query("SELECT * FROM unnest([1, 2]) AS u", SCHEMA)
    assert analysis.output_columns == ("*",)


# ---------------------------------------------------------------------------------------------
# Statements of application actions
# ---------------------------------------------------------------------------------------------

WRITES = [
    # sql, kind, reads, writes, params, output columns
    ("INSERT INTO users (id, name) VALUES ($id, $name)", "insert", set(), {"users"}, ("id", "name"), ()),
    (
        "INSERT INTO users VALUES ($id, $name, $email) RETURNING id",
        "insert",
        set(),
        {"users"},
        ("id", "name", "email"),
        ("id",),
    ),
    (
        "INSERT INTO users (id, name) SELECT id, sku FROM items RETURNING *",
        "insert",
        {"items"},
        {"users"},
        (),
        ("id", "name", "email"),
    ),
    ("INSERT INTO main.users BY NAME SELECT 1 AS id", "insert", set(), {"users"}, (), ()),
    ("INSERT OR REPLACE INTO users VALUES (1, 'a', 'b')", "insert", set(), {"users"}, (), ()),
    ("INSERT OR IGNORE INTO users VALUES (1, 'a', 'b')", "insert", set(), {"users"}, (), ()),
    ("INSERT INTO users VALUES (1, 'a', 'b') ON CONFLICT DO NOTHING", "insert", set(), {"users"}, (), ()),
    (
        "INSERT INTO users VALUES (1, 'a', 'b') ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        "insert",
        set(),
        {"users"},
        (),
        (),
    ),
    (
        "WITH x AS (SELECT 1 AS id) INSERT INTO users (id) SELECT id FROM x",
        "insert",
        set(),
        {"users"},
        (),
        (),
    ),
    (
        "UPDATE users SET name = $name WHERE id = $id RETURNING *",
        "update",
        set(),
        {"users"},
        ("name", "id"),
        ("id", "name", "email"),
    ),
    (
        "UPDATE users SET email = NULL WHERE id IN (SELECT user_id FROM orders)",
        "update",
        {"orders"},
        {"users"},
        (),
        (),
    ),
    (
        "UPDATE users u SET name = o.status FROM orders o WHERE o.user_id = u.id RETURNING u.id",
        "update",
        {"orders"},
        {"users"},
        (),
        ("id",),
    ),
    (
        "UPDATE orders SET total = total * 1.1 RETURNING id, total AS new_total",
        "update",
        set(),
        {"orders"},
        (),
        ("id", "new_total"),
    ),
    ("DELETE FROM users WHERE id = $id", "delete", set(), {"users"}, ("id",), ()),
    (
        "DELETE FROM orders USING users WHERE users.id = orders.user_id AND users.name = $name",
        "delete",
        {"users"},
        {"orders"},
        ("name",),
        (),
    ),
    (
        "DELETE FROM users WHERE id NOT IN (SELECT user_id FROM orders) RETURNING id",
        "delete",
        {"orders"},
        {"users"},
        (),
        ("id",),
    ),
    ("SELECT count(*) AS n FROM users", "select", {"users"}, set(), (), ("n",)),
]


@pytest.mark.parametrize(("sql", "kind", "reads", "writes", "params", "output"), WRITES)
def test_action_statement_analysis_reports_what_it_does(
    sql: str, kind: str, reads: set[str], writes: set[str], params: tuple[str, ...], output: tuple[str, ...]
) -> None:
    analysis = analyze_statement(sql, SCHEMA, allow_writes=True, views=VIEWS)
    assert (analysis.kind, analysis.reads, analysis.writes, analysis.params, analysis.output_columns) == (
        kind,
        frozenset(reads),
        frozenset(writes),
        params,
        output,
    )


@pytest.mark.parametrize("sql", [row[0] for row in WRITES])
def test_action_statement_runs_on_duckdb(sql: str) -> None:
    connection = connect(":memory:")
    connection.execute(DDL)
    analysis = analyze_statement(sql, SCHEMA, allow_writes=True, views=VIEWS)
    connection.execute(analysis.sql, {name: PARAM_VALUES[name] for name in analysis.params} or None)
    connection.close()


@pytest.mark.parametrize("sql", [row[0] for row in WRITES if row[1] != "select"])
def test_writes_are_refused_when_not_allowed(sql: str) -> None:
    refused(lambda: analyze_statement(sql, SCHEMA, allow_writes=False), Code.SQL_FORBIDDEN)


REFUSED_WRITES = [
    ("INSERT INTO big_spenders VALUES (1, 2)", Code.SQL_FORBIDDEN),
    ("UPDATE big_spenders SET spent = 0", Code.SQL_FORBIDDEN),
    ("INSERT INTO _buttress.audit VALUES (1)", Code.SQL_FORBIDDEN),
    ("DELETE FROM 'users.csv'", Code.SQL_FORBIDDEN),
    ("INSERT INTO users SELECT * FROM read_csv('x.csv')", Code.SQL_FORBIDDEN),
    ("INSERT INTO users VALUES (1, 'a', 'b') RETURNING * INTO x", Code.SQL_FORBIDDEN),
    ("UPDATE EXTENSIONS", Code.SQL_FORBIDDEN),
    ("INSERT INTO nope VALUES (1)", Code.SQL_UNKNOWN_TABLE),
    ("WITH u AS (SELECT 1) INSERT INTO u VALUES (1)", Code.SQL_UNKNOWN_TABLE),
    ("UPDATE users SET nope = 1", Code.SQL_UNKNOWN_COLUMN),
    ("INSERT INTO users (id, nope) VALUES (1, 2)", Code.SQL_UNKNOWN_COLUMN),
    ("INSERT INTO users VALUES (1, 'a', 'b') ON CONFLICT (nope) DO NOTHING", Code.SQL_UNKNOWN_COLUMN),
    (
        "INSERT INTO users VALUES (1, 'a', 'b') ON CONFLICT (id) DO UPDATE SET nope = 1",
        Code.SQL_UNKNOWN_COLUMN,
    ),
    ("UPDATE users SET name = o.nope FROM orders o", Code.SQL_UNKNOWN_COLUMN),
    ("DELETE FROM users WHERE nope = 1", Code.SQL_UNKNOWN_COLUMN),
    ("DELETE FROM users RETURNING nope", Code.SQL_UNKNOWN_COLUMN),
    ("INSERT INTO users VALUES ($1, 'a', 'b')", Code.SQL_PARAM),
    ("UPDATE users SET name = 'x'; DELETE FROM users", Code.SQL_FORBIDDEN),
]


@pytest.mark.parametrize(("sql", "code"), REFUSED_WRITES)
def test_refused_action_statement_raises_its_code(sql: str, code: Code) -> None:
    refused(lambda: analyze_statement(sql, SCHEMA, allow_writes=True, views=VIEWS), code)


# ---------------------------------------------------------------------------------------------
# Column CHECK expressions
# ---------------------------------------------------------------------------------------------

ALLOWED_EXPRESSIONS = [
    ("length(name) BETWEEN 1 AND 80", ["name"]),
    ("email LIKE '%@%' AND email NOT ILIKE '%example.com'", ["email"]),
    ("total >= 0 AND total < 1e9", ["total"]),
    ("status IN ('new', 'paid', 'shipped')", ["status"]),
    ("regexp_matches(email, '^[^@]+@[^@]+$')", ["email"]),
    ("date_part('year', created_at) >= 2000", ["created_at"]),
    ("extract(year FROM created_at) >= 2000", ["created_at"]),
    ("CASE WHEN status = 'paid' THEN total > 0 ELSE TRUE END", ["status", "total"]),
    ("coalesce(qty, 0) >= 0 AND qty::INTEGER = qty", ["qty"]),
    ("strlen(sku) < 10 AND starts_with(sku, 'SKU-') AND NOT ends_with(sku, '-')", ["sku"]),
    ("greatest(a, b) = least(a, b) OR nullif(a, b) IS NOT NULL", ["a", "b"]),
    ("lower(trim(name)) = name AND upper(name) <> ''", ["name"]),
    ("abs(round(total, 2) - total) < 0.001", ["total"]),
    ("contains(email, '@')", ["email"]),
]


@pytest.mark.parametrize(("sql", "columns"), ALLOWED_EXPRESSIONS)
def test_check_expression_is_accepted(sql: str, columns: Sequence[str]) -> None:
    analyze_expression(sql, columns, context="t.c")


REFUSED_EXPRESSIONS = [
    ("nope > 1", Code.SQL_UNKNOWN_COLUMN),
    ("t.a > 1", Code.SQL_UNKNOWN_COLUMN),
    ("(SELECT 1) > 0", Code.SQL_FORBIDDEN),
    ("a IN (SELECT 1)", Code.SQL_FORBIDDEN),
    ("EXISTS (SELECT 1)", Code.SQL_FORBIDDEN),
    ("count(*) > 1", Code.SQL_FORBIDDEN),
    ("sum(a) > 1", Code.SQL_FORBIDDEN),
    ("row_number() OVER () > 1", Code.SQL_FORBIDDEN),
    ("a > $limit", Code.SQL_PARAM),
    ("random() > 0.5", Code.SQL_FORBIDDEN),
    ("a > now()", Code.SQL_FORBIDDEN),
    ("a > current_date", Code.SQL_FORBIDDEN),
    ("read_text('x') = a", Code.SQL_FORBIDDEN),
    ("nextval('seq') > a", Code.SQL_FORBIDDEN),
    ("a.lower() = 'x'", Code.SQL_FORBIDDEN),
    ("a > 1; DROP TABLE t", Code.SQL_FORBIDDEN),
    ("a > 1 FROM t", Code.SQL_PARSE),
    ("", Code.SQL_PARSE),
    ("a >", Code.SQL_PARSE),
]


@pytest.mark.parametrize(("sql", "code"), REFUSED_EXPRESSIONS)
def test_refused_check_expression_raises_its_code(sql: str, code: Code) -> None:
    refused(lambda: analyze_expression(sql, ["a"], context="t.a"), code)


def test_check_expression_errors_name_their_context() -> None:
    error = refused(
        lambda: analyze_expression("b > 0", ["a"], context="orders.total"), Code.SQL_UNKNOWN_COLUMN
    )
    assert error.message.startswith("orders.total:")
    assert error.details["candidates"] == ["a"]


# ---------------------------------------------------------------------------------------------
# Size and nesting limits
# ---------------------------------------------------------------------------------------------

DEEP_INPUTS = [
    "SELECT " + "(" * 100 + "1" + ")" * 100,
    "SELECT " + "[" * 100 + "1" + "]" * 100,
    "SELECT " + "NOT " * 5000 + "TRUE",
    "SELECT " + "- " * 5000 + "1",
    "SELECT " + "CASE WHEN TRUE THEN " * 500 + "1" + " END" * 500,
    "SELECT * FROM users WHERE " + " OR ".join(f"id = {i}" for i in range(80)),
    "SELECT " + " + ".join(["1"] * 20_000),
]


@pytest.mark.parametrize("sql", DEEP_INPUTS, ids=lambda sql: sql[:30])
def test_deep_nesting_is_refused_as_a_limit(sql: str) -> None:
    refused(lambda: analyze_query(sql, SCHEMA), Code.LIMIT_EXCEEDED)


def test_long_sql_is_refused_before_parsing() -> None:
    sql = "SELECT 1 AS x" + " " * MAX_SQL_LENGTH
    error = refused(lambda: analyze_query(sql, SCHEMA), Code.LIMIT_EXCEEDED)
    assert error.details == {"limit": MAX_SQL_LENGTH}


def test_limits_can_be_overridden_per_call() -> None:
    sql = "SELECT " + "(" * 70 + "1" + ")" * 70
    refused(lambda: analyze_query(sql, SCHEMA), Code.LIMIT_EXCEEDED)
    assert analyze_query(sql, SCHEMA, max_depth=200).kind == "select"
    refused(lambda: analyze_query("SELECT 1", SCHEMA, max_length=5), Code.LIMIT_EXCEEDED)
    refused(lambda: analyze_expression("a > 1", ["a"], context="t.a", max_depth=2), Code.LIMIT_EXCEEDED)
    assert MAX_DEPTH == 64


def test_nul_characters_are_refused() -> None:
    refused(lambda: analyze_query("SELECT 1\x00; DROP TABLE users", SCHEMA), Code.SQL_FORBIDDEN)


# ---------------------------------------------------------------------------------------------
# Statement splitting
# ---------------------------------------------------------------------------------------------

SPLITS = [
    ("SELECT 1", ["SELECT 1"]),
    ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
    ("SELECT ';' AS a; SELECT \"b;c\"", ["SELECT ';' AS a", 'SELECT "b;c"']),
    ("SELECT 1 /* ; */; -- ;\nSELECT 2", ["SELECT 1 /* ; */", "-- ;\nSELECT 2"]),
    ("SELECT $$;$$; SELECT $tag$ ; $tag$", ["SELECT $$;$$", "SELECT $tag$ ; $tag$"]),
    ("SELECT 'it''s; fine'", ["SELECT 'it''s; fine'"]),
    (";;  ; -- nothing", []),
]


@pytest.mark.parametrize(("sql", "statements"), SPLITS)
def test_split_statements_splits_only_on_top_level_semicolons(sql: str, statements: list[str]) -> None:
    assert split_statements(sql) == statements


TRICKY_SEPARATORS = [
    "SELECT 'a\\'; SELECT 2; --'",
    "SELECT E'a\\'; SELECT 2; --'",
    "SELECT /* /* */ 1 */ 2; SELECT 3",
    "SELECT 1 -- x\r; SELECT 2",
    "SELECT $a$ ; $b$ ; $a$",
    'SELECT "a"";"; SELECT 2',
    "SELECT 'abc\\'",
    "SELECT 1\u2028; SELECT 2",
]


@pytest.mark.parametrize("sql", TRICKY_SEPARATORS)
def test_split_statements_agrees_with_duckdb(sql: str) -> None:
    assert len(split_statements(sql)) == len(duckdb.extract_statements(sql))


# ---------------------------------------------------------------------------------------------
# Module surface
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [sqlcheck, parsing, sizes], ids=lambda m: m.__name__)
def test_module_doctests_pass(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_surface_is_declared() -> None:
    assert set(sqlcheck.__all__) == {
        "analyze_expression",
        "analyze_query",
        "render_expression",
        "analyze_statement",
    }
    assert set(parsing.__all__) == {
        "MAX_DEPTH",
        "MAX_SQL_LENGTH",
        "embed",
        "statement_body",
        "substitute_params",
        "split_statements",
    }
    assert set(facts.__all__) == {"Analysis", "Link", "OrderDependence", "Schema"}
    assert Analysis.__dataclass_params__.frozen  # type: ignore[attr-defined]
