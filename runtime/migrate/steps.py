"""What a plan is made of (frozen data): the Plan, its Steps, and each step's Probes and Retentions.

``runtime.migrate.plan`` builds them; dry-run reports them and deploy applies them. ``Plan.hash`` is the
hash of a plan's canonical JSON, so the fields of these models are its format.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from runtime.migrate.hazards import Hazard
from runtime.schema.spec import canonical_json

Strategy = Literal["create", "alter", "rebuild", "drop", "catalog"]


RestoreKey = tuple[str, ...]
"""("entity", name) | ("field", entity, field) | ("values", entity, field) | ("payload", topic, field)"""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Probe(_Frozen):
    """A query that selects rows of interest before a step runs.

    ``fail``: any row means the step cannot succeed (the rows are the reason);
    ``loss``: rows whose data the step removes or changes (reported, retained).
    """

    kind: Literal["fail", "loss"]
    code: str
    message: str
    sql: str


class Retention(_Frozen):
    """Data a step keeps in the system schema so that its reverse is lossless."""

    table: str
    kind: Literal["entity", "field", "values", "payload"]
    entity: str
    field: str | None = None
    key: tuple[str, ...]


class Step(_Frozen):
    index: int
    op: dict[str, Any]
    summary: str
    strategy: Strategy
    sql: tuple[str, ...]
    reverse: tuple[dict[str, Any], ...]
    retains: tuple[Retention, ...] = ()
    restores: tuple[str, ...] = ()
    probes: tuple[Probe, ...] = ()
    hazards: tuple[Hazard, ...] = ()


class Plan(_Frozen):
    base_version: int
    target_version: int
    base_hash: str
    target_hash: str
    steps: tuple[Step, ...]
    hazards: tuple[Hazard, ...] = ()  # proposal-wide hazards (e.g. broken actions)

    def hash(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def all_hazards(self) -> list[Hazard]:
        return [h for s in self.steps for h in s.hazards] + list(self.hazards)
