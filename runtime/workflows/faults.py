"""Named crash points for recovery tests: the process kills itself (SIGKILL) at a chosen point.

``BUTTRESS_FAULTS="effect.after_send:3,step.after_commit"`` kills the process the 3rd time it passes
``effect.after_send`` (the 1st time for a point without a count). Unset — the normal case — every
``hit`` is one dictionary lookup. The points sit where a crash is hardest to survive:

* ``step.before_commit`` — an action step's writes and record are written, not committed;
* ``step.after_commit`` — a step committed, the next not started;
* ``effect.before_send`` — an effect's intent is recorded, the request not sent;
* ``effect.after_send`` — the provider answered, the answer not recorded;
* ``delivery.after_commit`` — a subscription's delivery committed.
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_counts: dict[str, int] = {}


def _plan() -> dict[str, int]:
    raw = os.environ.get("BUTTRESS_FAULTS", "")
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, count = item.partition(":")
        out[name] = int(count) if count else 1
    return out


_PLAN = _plan()


def hit(point: str) -> None:
    """Die here if the fault plan says so."""
    if not _PLAN or point not in _PLAN:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        if _counts[point] == _PLAN[point]:
            os.kill(os.getpid(), signal.SIGKILL)
