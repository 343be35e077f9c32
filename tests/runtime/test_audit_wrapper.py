"""A call that fails for a reason nobody foresaw answers ``engine.error`` and leaves a refused audit row,
whether it read, changed the application, ran an action or read the workflows (``Runtime.refusing``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runtime.errors import ButtressError
from runtime.logic.actions import ActionRunner
from runtime.results import REFUSAL_KEY
from runtime.runtime import Runtime
from runtime.store import catalog
from runtime.workflows import store as workflow_store
from tests.runtime.conftest import deploy

ITEM = {
    "op": "add_entity",
    "entity": {"name": "item", "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
}
PUT = {
    "op": "add_action",
    "action": {
        "name": "put",
        "kind": "mutation",
        "params": [{"name": "id", "type": "integer"}],
        "statements": ["INSERT INTO item (id) VALUES ($id)"],
    },
}


def boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("a bug nobody foresaw")


OTHER = {"op": "add_entity", "entity": {**ITEM["entity"], "name": "other"}}

CASES: dict[str, tuple[str, object, str, Callable[[Runtime], object]]] = {
    # the case: the operation audited, what breaks (owner, attribute), the call
    "a read": ("list_versions", catalog, "versions", lambda rt: rt.versions(actor="claude")),
    "a workflow read": ("list_runs", workflow_store, "list_runs", lambda rt: rt.list_runs(actor="claude")),
    "a change": ("propose", catalog, "insert_proposal", lambda rt: rt.propose([OTHER], actor="claude")),
    "an action": (
        "run_action",
        ActionRunner,
        "_mutate_once",
        lambda rt: rt.run_action("put", {"id": 1}, actor="claude"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_unexpected_failure_answers_engine_error_and_is_audited_as_a_refusal(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    operation, owner, name, call = CASES[case]
    deploy(rt, [ITEM, PUT])
    proposals_before = len(rt.proposals())
    monkeypatch.setattr(owner, name, boom)
    with pytest.raises(ButtressError) as caught:
        call(rt)
    error = caught.value
    assert error.code == "engine.error"
    assert error.message == f"internal error during {operation}"
    assert error.details == {"kind": "RuntimeError"}
    assert isinstance(error.__cause__, RuntimeError)
    monkeypatch.undo()
    refused = [e for e in rt.read_audit(limit=100) if e.outcome == "refused"]
    assert [(e.actor, e.operation, e.error_code) for e in refused] == [("claude", operation, "engine.error")]
    assert refused[0].arguments[REFUSAL_KEY] == f"internal error during {operation}"
    assert len(rt.proposals()) == proposals_before  # nothing was committed
    assert rt.query("select count(*) from item").rows == [[0]]
    assert rt.verify_audit().ok
