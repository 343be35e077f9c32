"""One server of the cross-server crash trial: a runtime of its own on the shared database, running the
scheduler until it is killed (``BUTTRESS_FAULTS`` names the crash point where it kills itself).

``python -m tests.store.pg_run_worker DSN PROJECT PROVIDER_URL LEASE_S`` prints ``serving OWNER`` (its
name in the runs' leases) once its scheduler runs, then works until it is killed or told to stop
(SIGTERM: it closes cleanly).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from runtime.boundary.policy import Connector, Limits, Policy
from runtime.boundary.secret import ensure_operator_key
from runtime.runtime import Runtime
from runtime.store.postgres import PgEngine

CONNECTOR_TIMEOUT_S = 2.0


def policy(provider: str, lease_s: float) -> Policy:
    """The operator's policy of every server in the trial: the provider's connectors, short leases."""
    return Policy(
        connectors={
            "payments": Connector(url=f"{provider}/charges", timeout_s=CONNECTOR_TIMEOUT_S),
            "refunds": Connector(url=f"{provider}/refunds", timeout_s=CONNECTOR_TIMEOUT_S),
        },
        limits=Limits(run_lease_s=lease_s, action_timeout_s=5.0, lane_wait_s=10.0),
    )


def main() -> None:
    dsn, project, provider, lease_s = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    project.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ensure_operator_key()
    runtime = Runtime(PgEngine(dsn, path=str(project / "app.postgres")), policy=policy(provider, lease_s))
    try:
        runtime.start_scheduler()
        print(f"serving {runtime.scheduler.runner.lease_owner}", flush=True)
        stop.wait()
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
