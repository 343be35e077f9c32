"""Crash safety: SIGKILL a process in the middle of deploys and rollbacks, reopen, and find a committed version.

``crash_worker.py`` loops deploy/rollback of a change touching three tables (8,300 rows) on a copy
of a template database. Each test kills it at one point — deterministically around COMMIT or before
the k-th statement of a phase (hooks in the worker process only), or after a measured delay — then
reopens the file with ``Runtime.open`` and checks:

* the version is the last one the worker reported committed, or the one in flight if its COMMIT
  made it (exactly which, for the deterministic kill points);
* the active spec is the BASE or CHANGED spec that version must have;
* ``check_drift() == []`` and ``verify_audit().ok``;
* every table's row count and checksum equal the content computed in Python for that spec;
* the runtime keeps working: one more deploy or rollback gives the other spec's exact content.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.runtime import Runtime
from runtime.store.audit import anchor_path
from tests.runtime import crash_worker

WORKER = Path(__file__).with_name("crash_worker.py")
ROOT = Path(__file__).resolve().parents[2]
DIGESTS = {changed: crash_worker.expected_digests(changed) for changed in (False, True)}


@dataclass
class Run:
    """What a worker printed before it died (or ended)."""

    returncode: int
    lines: list[str]
    ready: int
    done: list[tuple[str, int, int]] = field(default_factory=list)  # (op, n, version)
    begun: list[tuple[str, int, int]] = field(default_factory=list)
    statements: dict[tuple[int, str], int] = field(default_factory=dict)  # (n, phase) -> count
    op_ms: list[float] = field(default_factory=list)

    @property
    def committed(self) -> int:
        return self.done[-1][2] if self.done else self.ready

    @property
    def in_flight(self) -> int | None:
        if self.begun and (not self.done or self.begun[-1][1] > self.done[-1][1]):
            return self.begun[-1][2]
        return None


def run_worker(
    db: Path, *, crash: str | None = None, at: int = 1, kill_after: float | None = None, ops: int = 50
) -> Run:
    """Run the worker on ``db`` until it dies (its own kill point, or SIGKILL ``kill_after`` s after READY)."""
    env = dict(os.environ)
    env.pop("BUTTRESS_CRASH", None)
    if crash is not None:
        env["BUTTRESS_CRASH"], env["BUTTRESS_CRASH_AT"] = crash, str(at)
    stderr = db.with_suffix(".stderr")
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(db), "--ops", str(ops)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        if kill_after is not None and first.startswith("READY"):
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    errors = stderr.read_text()
    lines = [first.strip(), *rest.splitlines()]
    assert lines[0].startswith("READY"), f"worker did not start: {lines} {errors[-3000:]}"
    run = Run(proc.returncode, lines, int(lines[0].split()[1]))
    n = 0
    for line in lines[1:]:
        word, *args = line.split()
        if word == "BEGIN":
            n = int(args[1])
            run.begun.append((args[0], n, int(args[2])))
        elif word == "DONE":
            run.done.append((args[0], int(args[1]), int(args[2])))
        elif word == "STATEMENTS" and args[0]:
            run.statements[n, args[0]] = int(args[1])
        elif word == "OP_MS":
            run.op_ms.append(float(args[1]))
        elif word == "FAILED":
            pytest.fail(f"worker: {line}")
    if run.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"worker exited with {run.returncode}: {errors[-3000:]}")
    return run


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "template.duckdb"
    crash_worker.build_template(path)
    return path


@pytest.fixture(scope="module")
def hashes(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, str]:
    """Spec hash of BASE and CHANGED, read from the template and one deploy."""
    path = tmp_path_factory.mktemp("hashes") / "db.duckdb"
    copy_database(template, path)
    rt = Runtime.open(path, audit_reads=False)
    try:
        base = rt.current[1].hash()
        crash_worker.step(rt, "deploy")
        return {False: base, True: rt.current[1].hash()}
    finally:
        rt.close()


@pytest.fixture(scope="module")
def calibration(template: Path, tmp_path_factory: pytest.TempPathFactory, hashes: dict[bool, str]) -> Run:
    """Four operations without a crash: their statement counts and durations pick the kill points."""
    path = tmp_path_factory.mktemp("calibration") / "db.duckdb"
    copy_database(template, path)
    run = run_worker(path, ops=4)
    assert run.returncode == 0 and [d[2] for d in run.done] == [2, 3, 4, 5]
    check_recovered(path, run, expected=5, hashes=hashes)
    return run


def copy_database(source: Path, target: Path) -> None:
    """Copy a database file with its audit anchor, as a backup would."""
    shutil.copy(source, target)
    anchor = anchor_path(source)
    if anchor.exists():
        anchor_path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(anchor, anchor_path(target))


def check_recovered(db: Path, run: Run, *, expected: int | None, hashes: dict[bool, str]) -> None:
    rt = Runtime.open(db, audit_reads=False)
    try:
        version, spec = rt.current
        allowed = {run.committed} | ({run.in_flight} if run.in_flight is not None else set())
        assert version in allowed, f"reopened at version {version}, expected one of {allowed}: {run.lines}"
        if expected is not None:
            assert version == expected, f"reopened at version {version}, expected {expected}: {run.lines}"
        changed = version % 2 == 0
        assert spec.hash() == hashes[changed]
        assert [v.number for v in rt.versions()] == list(range(version + 1))
        assert rt.check_drift() == []
        assert rt.verify_audit().ok
        assert crash_worker.table_digests(rt) == DIGESTS[changed]
        # The runtime goes on from here: the other spec, with exact content.
        new = crash_worker.step(rt, "rollback" if changed else "deploy")
        assert new == version + 1
        assert rt.current[1].hash() == hashes[not changed]
        assert rt.check_drift() == []
        assert rt.verify_audit().ok
        assert crash_worker.table_digests(rt) == DIGESTS[not changed]
    finally:
        rt.close()


# (kill point, operation number, the version the database must reopen at). Operations alternate:
# 1 deploy (v2), 2 rollback (v3), 3 deploy (v4, restoring retained data), 4 rollback (v5).
POINTS = [
    ("propose:after_commit", 1, 1),
    ("dry_run:statement:mid", 1, 1),
    ("dry_run:after_commit", 1, 1),
    ("deploy:statement:1", 1, 1),
    ("deploy:statement:mid", 1, 1),
    ("deploy:statement:last", 3, 3),
    ("deploy:before_commit", 1, 1),
    ("deploy:after_commit", 1, 2),
    ("deploy:before_commit", 3, 3),
    ("deploy:after_commit", 3, 4),
    ("rollback:statement:mid", 2, 2),
    ("rollback:statement:last", 4, 4),
    ("rollback:before_commit", 2, 2),
    ("rollback:after_commit", 2, 3),
    ("rollback:after_commit", 4, 5),
]


@pytest.mark.parametrize(("point", "at", "expected"), POINTS, ids=[f"{p}@{a}" for p, a, _ in POINTS])
def test_kill_at_a_point(
    point: str,
    at: int,
    expected: int,
    template: Path,
    calibration: Run,
    hashes: dict[bool, str],
    tmp_path: Path,
) -> None:
    op, where, *k = point.split(":")
    if where == "statement":
        count = calibration.statements[at, op]
        point = f"{op}:{where}:{ {'1': 1, 'mid': count // 2, 'last': count}[k[0]] }"
    db = tmp_path / "db.duckdb"
    copy_database(template, db)
    run = run_worker(db, crash=point, at=at)
    assert run.returncode == -signal.SIGKILL, f"the kill point {point} was never reached: {run.lines}"
    check_recovered(db, run, expected=expected, hashes=hashes)


DELAYS = (
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9] if os.environ.get("BUTTRESS_STORY_KILLS") else [0.3, 0.75]
)
"""Moments to kill at, as fractions of four calibrated operations. The named points above cover each
place a crash is hardest to survive; the default run adds two moments between them, the long trial
(``BUTTRESS_STORY_KILLS`` set) nine."""


@pytest.mark.parametrize("fraction", DELAYS)
def test_kill_after_a_delay(
    fraction: float, template: Path, calibration: Run, hashes: dict[bool, str], tmp_path: Path
) -> None:
    """Kill anywhere in the first few operations (the delays span four calibrated operations)."""
    db = tmp_path / "db.duckdb"
    copy_database(template, db)
    run = run_worker(db, kill_after=fraction * sum(calibration.op_ms) / 1000)
    assert run.returncode == -signal.SIGKILL
    check_recovered(db, run, expected=None, hashes=hashes)
