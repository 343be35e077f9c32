"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a socket in a temporary
directory, no TCP port, no fsync; or the cluster CI started (``BUTTRESS_POSTGRES_DSN``).

``python -m tests.pg start DIR`` starts one and prints its DSN (``.ci/run`` uses it);
``python -m tests.pg stop DIR`` stops it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (``BUTTRESS_PG_BIN``, PATH, or Debian's layout)."""
    explicit = os.environ.get("BUTTRESS_PG_BIN")
    if explicit:
        return Path(explicit)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(versions[-1]).parent if versions else None


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@dataclass(frozen=True)
class Cluster:
    root: Path | None
    """The cluster's directory when these tests started it; None for one started elsewhere."""
    base_dsn: str

    def dsn(self, database: str) -> str:
        return f"{self.base_dsn} dbname={database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start(root: Path, *, durable: bool = False) -> Cluster:
    """initdb and start a cluster in ``root`` (its socket there too); raise if the binaries are missing.

    ``durable``: fsync on, as a production server runs (benchmarks); tests run without it."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL's server binaries (initdb, pg_ctl) were not found")
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(
        _as_owner([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                   "-E", "UTF8", "--locale=C"]),
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    options = f"-k {root} -c listen_addresses='' -c max_connections=300"
    if not durable:
        options += " -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
                   "start"]),
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    return Cluster(root, f"host={root} user=postgres")


def stop(root: Path) -> None:
    bin_dir = binaries()
    if bin_dir is None:
        return
    subprocess.run(
        _as_owner([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"]),
        check=False, capture_output=True, cwd=root,
    )  # fmt: skip


def shared() -> Cluster | None:
    """The cluster CI started and named in ``BUTTRESS_POSTGRES_DSN`` (without a database name)."""
    dsn = os.environ.get("BUTTRESS_POSTGRES_DSN")
    return Cluster(None, dsn) if dsn else None


if __name__ == "__main__":
    verb, where = sys.argv[1], Path(sys.argv[2])
    if verb == "start":
        print(start(where).base_dsn)
    elif verb == "stop":
        stop(where)
    else:
        raise SystemExit(f"usage: python -m tests.pg start|stop DIR (not {verb!r})")
