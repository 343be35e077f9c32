"""Tests of the runtime known to fail on PostgreSQL, each with why: what the port has not reached yet.

Under ``BUTTRESS_TEST_ENGINE=postgres`` these are marked ``xfail`` (strict: one that starts passing
fails the run until it is taken off this list); on DuckDB they run as usual. ``python -m tests.engine_gaps``
prints the list. docs/NOTES.md says what each reason needs."""

from __future__ import annotations

from typing import Final

TEST_DUCKDB: Final = "the test itself runs DuckDB SQL or reads DuckDB's catalog"

POSTGRES_GAPS: Final[dict[str, str]] = {}


if __name__ == "__main__":
    for node, why in sorted(POSTGRES_GAPS.items()):
        print(f"{node}\n    {why}")
    print(f"{len(POSTGRES_GAPS)} tests")
