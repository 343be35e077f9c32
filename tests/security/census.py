"""A census of DuckDB's functions against the SQL guard and the engine's limits.

Every function in DuckDB's own catalogue (``duckdb_functions()``, every overload) is called with
small, huge and column-sized arguments; the SQL guard (``sqlcheck.analyze_query``) decides each
call exactly as it decides an agent's query, and every call it allows runs the way the runtime
runs a query: on a snapshot cursor with the engine's deadline (interrupted when it passes), under
DuckDB's memory limit, its result fetched and converted within the row and byte limits. A call
*escapes* when it runs past the deadline plus a margin, or when the process's peak memory during
the call passes the memory limit plus a margin.

Calls run in worker processes (``python -m tests.security.census worker``), so a runaway cannot take
the caller down: the parent kills a worker whose call outlives its deadline, or whose memory passes
a hard cap, and starts a new one. Peak memory is measured per call from ``/proc/self/status``
(``VmHWM``), reset before each call through ``/proc/self/clear_refs``.

Arguments are chosen by parameter type (and, for a few, by parameter name: a regex flag, a function
name). Each overload is called with every parameter small (a short literal); with one parameter at a
time set to each of its other candidates (a huge literal such as 2,000,000,000, a thousand, the
guard's largest allowed size ``MAX_AMPLIFY``, a big value from a column, a lambda that builds a value
by size or returns a big value from outside), the rest small or big; and with every parameter big.
The big values live in one row of a table ``big``: a 1,000,000 and a 10,000 character string, a
50,000 element list, a 100,000 entry map, 2,000,000,000 as a number, and so on. A call whose DuckDB
error leaves the database invalidated (an internal error) escapes too: it stops every session.

    python -m tests.security.census run [--outcomes FILE]   # run it all, print the escapes
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.errors import ButtressError
from runtime.sql import sqlcheck
from runtime.sql.allowlists import MAX_AMPLIFY
from runtime.store.engine import Engine, Settings, connect
from runtime.store.values import fetch

HUGE: Final = 2_000_000_000
"""A size no query should get: 2 GB of characters, 2 billion list elements."""
BIG_TEXT: Final = 1_000_000
BIG_LIST: Final = 50_000
"""Big enough that a function quadratic in its input runs for seconds; small enough that converting
one such value to Python stays well inside the limits."""

BIG_COLUMNS: Final[dict[str, str]] = {
    "n": f"{HUGE}::BIGINT",
    "f": f"{HUGE}::DOUBLE",
    "s": f"repeat('1', {BIG_TEXT})",
    "s2": f"repeat('1', {BIG_TEXT // 100})",
    "j": f"to_json(range({BIG_LIST // 10}))",
    "b": f"repeat('1', {BIG_TEXT})::BLOB",
    "bits": f"repeat('1', {BIG_TEXT})::BIT",
    "l": f"range({BIG_LIST})",
    "ls": "list_transform(range(1000), lambda x: repeat('1', 1000))",
    "ll": f"[range({BIG_LIST})]",
    "a": "[1.0, 2.0, 3.0]::DOUBLE[3]",
    "m": "map(range(100000), range(100000))",
    "st": f"{{'a': repeat('1', {BIG_TEXT}), 'b': range({BIG_LIST})}}",
    "d": "DATE '9999-12-31'",
    "ts": "TIMESTAMP '9999-12-31 23:59:59'",
    "tz": "TIMESTAMPTZ '9999-12-31 23:59:59+00'",
    "tm": "TIME '23:59:59'",
    "iv": f"to_seconds({HUGE})",
    "u": "'00000000-0000-0000-0000-000000000001'::UUID",
}
"""The one row of table ``big``: column -> the expression that fills it."""

SCHEMA: Final[dict[str, list[str]]] = {"big": list(BIG_COLUMNS)}

SIZES: Final = ("2", "1000", str(MAX_AMPLIFY), str(HUGE))
"""Literal sizes: small, a thousand (a gigabyte from a big string), the largest size the guard lets an
amplifier ask for, and huge."""


@dataclass(frozen=True)
class Candidates:
    """The arguments tried for one parameter type: a small literal first, then the others; ``big``
    is the one used when every other parameter is big."""

    small: str
    others: tuple[str, ...] = ()

    @property
    def big(self) -> str:
        return self.others[0] if self.others else self.small


_INTEGER = Candidates("2", ("n", *SIZES[1:]))
_NUMBER = Candidates("2", ("f", *SIZES[1:]))
_ANY = Candidates("2", ("s", "n", "l", *SIZES[1:]))
_LIST = Candidates("[1, 2, 3]", ("l", "ls", f"range({MAX_AMPLIFY})"))
_TYPES: Final[dict[str, Candidates]] = {
    **dict.fromkeys(
        (
            *("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "BIGNUM"),
            *("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"),
        ),
        _INTEGER,
    ),
    **dict.fromkeys(("DOUBLE", "FLOAT", "DECIMAL"), _NUMBER),
    "VARCHAR": Candidates("'1'", ("s", "s2")),
    "JSON": Candidates("'[1]'", ("j", "s")),
    "BLOB": Candidates("'1'::BLOB", ("b",)),
    "BIT": Candidates("'1'::BIT", ("bits",)),
    "BOOLEAN": Candidates("true"),
    "DATE": Candidates("DATE '2000-01-01'", ("d",)),
    "TIMESTAMP WITH TIME ZONE": Candidates("TIMESTAMPTZ '2000-01-01 00:00:00+00'", ("tz",)),
    "TIME": Candidates("TIME '01:00:00'", ("tm",)),
    "TIME WITH TIME ZONE": Candidates("TIMETZ '01:00:00+00'"),
    "INTERVAL": Candidates("INTERVAL 1 DAY", ("iv",)),
    "UUID": Candidates("'00000000-0000-0000-0000-000000000002'::UUID", ("u",)),
    "LAMBDA": Candidates(
        "lambda x: x", (f"lambda x: repeat('1', {MAX_AMPLIFY})", "lambda x, y: x", "lambda x: s")
    ),
    "VARCHAR[]": Candidates("['1']", ("ls",)),
    "T[][]": Candidates("[[1]]", ("ll",)),
    "MAP(K, V)": Candidates("map([1], [2])", ("m",)),
    "STRUCT": Candidates("{'a': 1}", ("st",)),
    "TUPLE": Candidates("{'a': 1}", ("st",)),
    "UNION": Candidates("union_value(a := 1)"),
}


_BY_NAME: Final[dict[str, tuple[str, ...]]] = {
    "options": ("'g'",),
    "function_name": ("'string_agg'",),
    "path": ("'$[*]'",),
    "part": ("'epoch'",),
}
"""Extra candidates for parameters whose name says what makes them work (a flag, a name, a path)."""


def candidates(parameter_type: str | None, parameter_name: str | None = None) -> Candidates:
    """The arguments tried for a parameter of this DuckDB type (None: an untyped macro parameter)."""
    by_type = _by_type(parameter_type)
    extra = _BY_NAME.get(parameter_name or "", ())
    return Candidates(by_type.small, (*by_type.others, *extra)) if extra else by_type


def _by_type(parameter_type: str | None) -> Candidates:
    if parameter_type is None:
        return _ANY
    if parameter_type in _TYPES:
        return _TYPES[parameter_type]
    if parameter_type.startswith("TIMESTAMP"):
        return Candidates("TIMESTAMP '2000-01-01'", ("ts",))
    if parameter_type.startswith("TIME"):
        return _TYPES["TIME"]
    if re.fullmatch(r"(FLOAT|DOUBLE)\[(3|ANY)\]", parameter_type):
        return Candidates(f"[1.0, 2.0, 3.0]::{parameter_type.split('[')[0]}[3]", ("a",))
    if parameter_type.endswith("[]"):
        return _LIST
    if parameter_type.startswith("STRUCT"):
        return Candidates("{'year': 1, 'month': 1, 'day': 1}")
    return _ANY


# ---------------------------------------------------------------------------------------------
# The catalogue and the calls
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overload:
    """One row of ``duckdb_functions()``."""

    name: str
    kind: str
    """scalar, aggregate, window, macro, table, table_macro or pragma."""
    parameters: tuple[str, ...]
    parameter_types: tuple[str | None, ...]
    varargs: str | None


@dataclass(frozen=True)
class Call:
    """One census call: the query, and the function it exercises."""

    function: str
    sql: str


def catalogue() -> tuple[str, list[Overload]]:
    """DuckDB's version and every function overload it knows, read from a private scratch database."""
    connection = connect(":memory:", Settings(memory_limit_mb=256, threads=1))
    try:
        version = str(connection.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
        rows = connection.execute(
            "SELECT DISTINCT function_name, function_type, parameters, parameter_types, varargs "
            "FROM duckdb_functions() ORDER BY ALL"
        ).fetchall()
    finally:
        connection.close()
    return version, [
        Overload(name, kind, tuple(parameters or ()), tuple(types or ()), varargs)
        for name, kind, parameters, types, varargs in rows
    ]


_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _render(overload: Overload, arguments: Sequence[str]) -> str:
    """The call of ``overload`` with ``arguments``: function syntax, or operator syntax for symbols."""
    name = overload.name
    if _IDENTIFIER.fullmatch(name):
        call = f"{name}({', '.join(arguments)})"
    elif name.endswith("__postfix") and len(arguments) == 1:
        call = f"(({arguments[0]}){name.removesuffix('__postfix')})"
    elif len(arguments) == 2:
        call = f"(({arguments[0]}) {name} ({arguments[1]}))"
    elif len(arguments) == 1:
        call = f"({name} ({arguments[0]}))"
    else:
        call = f'"{name}"({", ".join(arguments)})'
    if overload.kind == "window":
        return f"SELECT {call} OVER () AS v FROM big"
    if overload.kind in ("table", "table_macro", "pragma"):
        return f"SELECT t.* FROM big, {call} AS t"
    return f"SELECT {call} AS v FROM big"


def argument_sets(overload: Overload) -> Iterator[tuple[str, ...]]:
    """Arguments to call ``overload`` with: all small; each parameter in turn at each of its other
    candidates while the rest are small, and while the rest are big; and all big."""
    types = list(overload.parameter_types)
    names: list[str | None] = list(overload.parameters)
    if overload.varargs is not None:
        extra = 1 if types else 2
        types += [overload.varargs] * extra
        names += [None] * extra
    options = [candidates(t, name) for t, name in zip(types, names, strict=False)]
    small = [o.small for o in options]
    big = [o.big for o in options]
    yield tuple(small)
    for i, option in enumerate(options):
        for other in option.others:
            yield (*small[:i], other, *small[i + 1 :])
            yield (*big[:i], other, *big[i + 1 :])
        yield (*big[:i], option.small, *big[i + 1 :])
    yield tuple(big)


def census_calls(overloads: Iterable[Overload]) -> list[Call]:
    """Every call of the census, each query once."""
    seen: set[str] = set()
    calls: list[Call] = []
    for overload in overloads:
        for arguments in argument_sets(overload):
            sql = _render(overload, arguments)
            if sql not in seen:
                seen.add(sql)
                calls.append(Call(overload.name, sql))
    return calls


# ---------------------------------------------------------------------------------------------
# The worker: one process that answers calls, one at a time
# ---------------------------------------------------------------------------------------------


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


_FATAL: Final = ("INTERNAL Error", "FATAL Error", "database has been invalidated")
"""DuckDB's words for an error after which the database must be restarted."""


def _answer(engine: Engine, sql: str, time_limit_s: float, *, guarded: bool = True) -> dict[str, Any]:
    """Decide ``sql`` with the guard and, when allowed, run it as the runtime runs a query.
    ``guarded=False`` runs it without asking the guard: to show what the census catches."""
    text = sql
    if guarded:
        try:
            text = sqlcheck.analyze_query(sql, SCHEMA).sql
        except ButtressError as error:
            return {"outcome": "refused", "code": str(error.code)}
    _reset_peak()
    started = time.monotonic()

    def run() -> None:
        with engine.snapshot(timeout=time_limit_s, single=True) as reader:
            result = reader.execute(text)
            _, truncated = fetch(result, max_rows=1000, max_bytes=8 * 1024 * 1024, deadline=reader.deadline)
            reader.unread = truncated

    try:
        engine.sharing_memory(run, budget=time_limit_s)
        outcome, code = "ran", None
    except ButtressError as error:
        outcome, code = "failed", f"{error.code}: {error.message}"[:300]
        if any(word in error.message for word in _FATAL):
            outcome = "broke"
    except Exception as error:  # not a coded error: reported, but not a time or memory escape
        outcome, code = "failed", f"{type(error).__name__}: {error}"[:200]
    return {
        "outcome": outcome,
        "code": code,
        "seconds": round(time.monotonic() - started, 3),
        "peak_mb": round(_peak_mb(), 1),
    }


def worker(directory: Path, memory_limit_mb: int, time_limit_s: float, *, guarded: bool = True) -> None:
    """Serve calls: one JSON object per line in (``{"sql": ...}``), one answer per line out."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"census-{os.getpid()}.duckdb"
    settings = Settings(
        memory_limit_mb=memory_limit_mb, threads=1, spill_directory=str(directory / "spill"), max_spill_mb=256
    )
    engine = Engine(path, settings=settings)
    try:
        columns = ", ".join(f"{expression} AS {name}" for name, expression in BIG_COLUMNS.items())
        with engine.transaction() as tx:
            tx.execute(f"CREATE TABLE big AS SELECT {columns}")
        engine.checkpoint()
        out = sys.stdout
        out.write(json.dumps({"ready": os.getpid(), "peak_mb": round(_peak_mb(), 1)}) + "\n")
        out.flush()
        for line in sys.stdin:
            request = json.loads(line)
            out.write(json.dumps(_answer(engine, request["sql"], time_limit_s, guarded=guarded)) + "\n")
            out.flush()
    finally:
        engine.close()
        with contextlib.suppress(OSError):
            path.unlink()


# ---------------------------------------------------------------------------------------------
# The parent: workers in parallel, each call watched
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What the census holds every allowed call to."""

    memory_limit_mb: int = 256
    """DuckDB's memory limit in the workers."""
    memory_margin_mb: int = 256
    """Peak memory may pass the limit by this much: the interpreter, the libraries, table ``big``
    and one converted result."""
    memory_cap_mb: int = 1536
    """A worker past this is killed at once, to keep the machine safe."""
    time_limit_s: float = 1.0
    """The engine's deadline for each call."""
    time_margin_s: float = 2.0
    """A call may outlive its deadline by this much (the interrupt, the conversion, a busy machine)."""


@dataclass(frozen=True)
class Outcome:
    call: Call
    outcome: str
    """refused (by the guard), ran, failed (a coded error), broke (an internal DuckDB error that
    invalidates the database until it is restarted) or killed (by the census)."""
    code: str | None = None
    seconds: float = 0.0
    peak_mb: float = 0.0


@dataclass
class Report:
    """What the census did and found."""

    duckdb_version: str
    overloads: int
    functions: int
    limits: Limits
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def escapes(self) -> list[Outcome]:
        """Allowed calls that broke the time or the memory limit, or the database."""
        return [o for o in self.outcomes if escaped(o, self.limits)]

    def uncoded(self) -> list[Outcome]:
        """Calls that failed with an error that is not a ButtressError (reported, not an escape)."""
        return [o for o in self.outcomes if o.outcome == "failed" and not _CODE.match(o.code or "")]

    def summary(self) -> str:
        allowed = [o for o in self.outcomes if o.outcome != "refused"]
        functions_allowed = len({o.call.function for o in allowed})
        return (
            f"function census on DuckDB {self.duckdb_version}: {self.functions} functions "
            f"({self.overloads} overloads) enumerated, {len(self.outcomes)} calls, "
            f"{len(self.outcomes) - len(allowed)} refused by the guard, {len(allowed)} run "
            f"({functions_allowed} functions), {len(self.uncoded())} failed without a coded error, "
            f"{len(self.escapes())} escaped "
            f"the limits ({self.limits.memory_limit_mb} MB + {self.limits.memory_margin_mb} MB, "
            f"{self.limits.time_limit_s} s + {self.limits.time_margin_s} s) in {self.seconds:.1f} s"
        )


_CODE: Final = re.compile(r"[a-z_]+\.[a-z_]+:")
"""A ButtressError's code at the start of an outcome's ``code`` (``limit.timeout: ...``)."""


def escaped(outcome: Outcome, limits: Limits) -> bool:
    """Whether a call broke its limits: killed for time or memory, an invalidated database, or a
    measured time or peak memory past the limit plus its margin."""
    if outcome.outcome in ("killed", "broke"):
        return True
    return outcome.outcome != "refused" and (
        outcome.seconds > limits.time_limit_s + limits.time_margin_s
        or outcome.peak_mb > limits.memory_limit_mb + limits.memory_margin_mb
    )


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, directory: Path, limits: Limits, *, guarded: bool = True) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.security.census",
                "worker",
                str(directory),
                str(limits.memory_limit_mb),
                str(limits.time_limit_s),
                *([] if guarded else ["--unguarded"]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
            text=True,
        )
        self.answers: list[str] = []
        self.arrived = threading.Condition()
        self.killed_for: str | None = None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        ready = self.next_answer(60.0)
        if ready is None or "ready" not in json.loads(ready):
            self.kill("start")
            raise RuntimeError("a census worker did not start")

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            with self.arrived:
                self.answers.append(line)
                self.arrived.notify_all()
        with self.arrived:
            self.answers.append("")
            self.arrived.notify_all()

    def next_answer(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not self.answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)
            return self.answers.pop(0) or None

    def ask(self, sql: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"sql": sql}) + "\n")
        self.process.stdin.flush()

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def kill(self, reason: str) -> None:
        self.killed_for = reason
        self.process.kill()

    def close(self) -> None:
        """End the worker (it exits when its input closes; killed if it does not) and its pipes."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def run_census(
    calls: Sequence[Call],
    directory: Path,
    *,
    limits: Limits | None = None,
    workers: int = 2,
    guarded: bool = True,
) -> list[Outcome]:
    """Run ``calls`` on ``workers`` worker processes; return one outcome per call, in order.
    ``guarded=False``: the workers run every call without asking the guard."""
    limits = limits or Limits()
    outcomes: list[Outcome | None] = [None] * len(calls)
    pending = iter(range(len(calls)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def serve() -> None:
        current: _Worker | None = None
        try:
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                if current is None:
                    current = _Worker(directory, limits, guarded=guarded)
                outcome = _watch(current, calls[index], limits)
                outcomes[index] = outcome
                if outcome.outcome in ("killed", "broke") or escaped(outcome, limits):
                    current.close()  # a fresh worker: a broken database, or memory kept, must not count
                    current = None
        except BaseException as error:  # reported by the caller
            errors.append(error)
        finally:
            if current is not None:
                current.close()

    threads = [threading.Thread(target=serve) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [o for o in outcomes if o is not None]


def _watch(worker: _Worker, call: Call, limits: Limits) -> Outcome:
    """Send one call to ``worker`` and wait for its answer, killing the worker when the call runs past
    its deadline and margin, or when its memory passes the cap."""
    worker.ask(call.sql)
    started = time.monotonic()
    give_up = limits.time_limit_s + limits.time_margin_s + 1.0
    peak = 0.0
    while True:
        answer = worker.next_answer(0.01)
        if answer is not None:
            data = json.loads(answer)
            return Outcome(
                call, data["outcome"], data.get("code"), data.get("seconds", 0.0), data.get("peak_mb", 0.0)
            )
        elapsed = time.monotonic() - started
        peak = max(peak, worker.rss_mb())
        if worker.process.poll() is not None and worker.killed_for is None:
            return Outcome(call, "killed", "worker exited", elapsed, peak)
        if peak > limits.memory_cap_mb:
            worker.kill("memory")
            return Outcome(call, "killed", f"memory past {limits.memory_cap_mb} MB", elapsed, peak)
        if elapsed > give_up:
            worker.kill("time")
            return Outcome(call, "killed", f"still running after {give_up:.1f} s", elapsed, peak)


def sampled(calls: list[Call], share: int) -> list[Call]:
    """One call in ``share`` of each function's calls, the same ones every run (chosen by the SQL's
    hash), and every function's first: the whole catalogue is still called, with fewer shapes each."""
    if share <= 1:
        return calls
    first: set[str] = set()
    kept = []
    for call in calls:
        if call.function not in first or int(hashlib.sha256(call.sql.encode()).hexdigest(), 16) % share == 0:
            first.add(call.function)
            kept.append(call)
    return kept


def census(directory: Path, *, limits: Limits | None = None, workers: int = 2, share: int = 1) -> Report:
    """Enumerate DuckDB's functions, build the calls (``share``: one in that many, ``sampled``), run
    them; retry each escape once, alone, so that a busy machine does not pass for a runaway function."""
    limits = limits or Limits()
    started = time.monotonic()
    version, overloads = catalogue()
    calls = sampled(census_calls(overloads), share)
    outcomes = run_census(calls, directory, limits=limits, workers=workers)
    report = Report(version, len(overloads), len({o.name for o in overloads}), limits, outcomes)
    first = {id(o.call): i for i, o in enumerate(outcomes)}
    retried = run_census([o.call for o in report.escapes()], directory, limits=limits, workers=1)
    for outcome in retried:
        report.outcomes[first[id(outcome.call)]] = outcome
    report.seconds = time.monotonic() - started
    return report


def describe(outcome: Outcome) -> str:
    return (
        f"{outcome.call.function}: {outcome.outcome}"
        f"{f' ({outcome.code})' if outcome.code else ''} after {outcome.seconds:.2f} s, "
        f"peak {outcome.peak_mb:.0f} MB: {outcome.call.sql}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.census")
    sub = parser.add_subparsers(dest="command")
    work = sub.add_parser("worker")
    work.add_argument("directory", type=Path)
    work.add_argument("memory_limit_mb", type=int)
    work.add_argument("time_limit_s", type=float)
    work.add_argument("--unguarded", action="store_true")
    run = sub.add_parser("run")
    run.add_argument("--directory", type=Path, default=Path("/tmp/buttress-census"))
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--outcomes", type=Path, help="write every outcome here, one JSON object a line")
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args.directory, args.memory_limit_mb, args.time_limit_s, guarded=not args.unguarded)
        return 0
    report = census(
        getattr(args, "directory", Path("/tmp/buttress-census")), workers=getattr(args, "workers", 2)
    )
    if getattr(args, "outcomes", None):
        with args.outcomes.open("w") as out:
            for o in report.outcomes:
                out.write(
                    json.dumps(
                        {
                            "function": o.call.function,
                            "sql": o.call.sql,
                            "outcome": o.outcome,
                            "code": o.code,
                            "seconds": o.seconds,
                            "peak_mb": o.peak_mb,
                        }
                    )
                    + "\n"
                )
    for outcome in report.uncoded():
        print("uncoded error:", describe(outcome))
    for outcome in report.escapes():
        print("escaped:", describe(outcome))
    print(report.summary())
    return 1 if report.escapes() else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
