"""Effects as rows of the system schema, read for a run's detail and for the operator (unknown outcomes
first). An effect is a request to an external provider, recorded before it is sent, with its
idempotency key (``effect_id``), its state and the provider's answer: written as it is sent
(``steps.effect``), when it is given up on (``steps.failure``) and when the operator resolves it
(``service``).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Final

from runtime.results import EffectInfo
from runtime.store.engine import Session
from runtime.workflows import store

EFFECT_COLUMNS: Final = (
    "effect_id, run_id, step, connector, request, request_hash, state, attempts, response, status_code, "
    "error, version, created_at, sent_at, settled_at, compensates"
)


def effect_row(session: Session, effect_id: str) -> dict[str, Any] | None:
    row = session.fetchone(f"SELECT {EFFECT_COLUMNS} FROM _buttress.effects WHERE effect_id = ?", [effect_id])
    return None if row is None else _parsed(row)


def _parsed(row: Sequence[Any]) -> dict[str, Any]:
    out = store.record(EFFECT_COLUMNS, row)
    for key in ("request", "response", "error"):
        out[key] = store.json_value(out[key])
    return out


def effect_info(row: Mapping[str, Any]) -> EffectInfo:
    created = datetime.datetime.fromisoformat(row["created_at"])
    age = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
    return EffectInfo(
        effect_id=row["effect_id"],
        run_id=row["run_id"],
        step=row["step"],
        connector=row["connector"],
        state=row["state"],
        attempts=row["attempts"],
        request=row["request"],
        response=row["response"],
        status_code=row["status_code"],
        error=row["error"],
        version=row["version"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
        settled_at=row["settled_at"],
        age_s=round(age, 3),
    )


def list_effects(session: Session, *, state: str | None, run_id: str | None, limit: int) -> list[EffectInfo]:
    where, params = ["TRUE"], []
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    rows = session.fetchall(
        f"SELECT {EFFECT_COLUMNS} FROM _buttress.effects WHERE {' AND '.join(where)} "
        "ORDER BY CASE state WHEN 'unknown' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, created_at LIMIT ?",
        [*params, limit],
    )
    return [effect_info(_parsed(row)) for row in rows]
