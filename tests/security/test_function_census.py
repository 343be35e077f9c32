"""No function the SQL guard allows escapes the time or memory limits.

A census of DuckDB's own catalogue (``tests/security/census.py``): every function overload is called
with small, huge and column-sized arguments, decided by the guard as an agent's query is, and every
call it allows runs the way the runtime runs a query, in worker processes under a 256 MB memory limit
and a 1 s deadline, each call's peak memory and time measured. A list of known offenders would always
miss the next one; the census is what finds it, on whatever DuckDB version is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security.census import Call, Limits, census, describe, escaped, run_census

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures peak memory through /proc"
)

SHARE = 1 if os.environ.get("BUTTRESS_CENSUS_FULL") else 5
"""The default run calls every function, with a fifth of the argument shapes (the same fifth each
time, and always each function's first); ``BUTTRESS_CENSUS_FULL=1`` (the long trial CI runs) makes
every call."""


def test_no_function_the_guard_allows_escapes_the_time_or_memory_limits(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    report = census(tmp_path, share=SHARE)
    summary = report.summary()
    print(f"\n{summary}")
    request.node.add_report_section("call", "function census", summary)
    escapes = report.escapes()
    assert not escapes, summary + "\n" + "\n".join(describe(outcome) for outcome in escapes)
    ran = [o for o in report.outcomes if o.outcome != "refused"]
    # the census really exercised the catalogue: most functions ran, with every kind of argument
    assert report.functions > 1000 and len({o.call.function for o in ran}) > 500, summary
    assert len(report.outcomes) > (20_000 if SHARE == 1 else 4_000), summary
    assert any("2000000000" in o.call.sql for o in ran) and any("(s," in o.call.sql for o in ran), summary


def test_the_census_catches_a_call_that_escapes_when_the_guard_does_not_stop_it(tmp_path: Path) -> None:
    replace = Call("replace", "SELECT replace(s, '1', s) AS v FROM big")  # a million copies of a 1 MB string
    guarded, unguarded = (
        run_census([replace], tmp_path, workers=1, guarded=flag)[0] for flag in (True, False)
    )
    assert guarded.outcome == "refused" and guarded.code == "sql.forbidden", describe(guarded)
    assert escaped(unguarded, Limits()), describe(unguarded)
