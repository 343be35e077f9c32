"""An action's emits: the messages it publishes, the runs it starts and the signals it sends, written in
the action's own transaction — they exist if and only if its writes commit (the transactional outbox).

An emit's values come from the action's arguments (``args.<param>``) and from the first row the action
returned (``result.<column>``).
"""

from __future__ import annotations

from typing import Any

from runtime.boundary.policy import Acting
from runtime.errors import NotFound
from runtime.results import ActionResult
from runtime.schema.spec import ActionSpec, AppSpec
from runtime.store.engine import Tx
from runtime.workflows import messages, store, values


def emit(
    tx: Tx,
    spec: AppSpec,
    action: ActionSpec,
    version: int,
    args: dict[str, Any],
    result: ActionResult,
    *,
    actor: str,
    acting: Acting | None = None,
) -> None:
    """Write the action's emits in ``tx``. Its messages carry ``acting`` as they are (a subscription's
    delivery of one is the next hop); a run it starts is a hop down the chain."""
    first = dict(zip(result.columns, result.rows[0], strict=False)) if result.rows else {}
    context = {"args": values.jsonable(args), "result": first}
    origin = f"action:{action.name}"
    for item in action.emits:
        payload = values.resolve_all(item.args, context)
        run_id = values.resolve(item.run_id, context)
        if item.publish is not None:
            topic = spec.topic(item.publish)
            if topic is None:
                raise NotFound("topic", item.publish)
            messages.publish(
                tx, topic, payload, version=version, actor=f"{actor} via {origin}", acting=acting
            )
        elif item.start is not None:
            workflow = spec.workflow(item.start)
            if workflow is None:
                raise NotFound("workflow", item.start)
            store.start_run(
                tx,
                workflow,
                payload,
                version=version,
                actor=actor,
                run_id=None if run_id is None else str(run_id),
                origin=origin,
                acting=None if acting is None else acting.deeper(),
            )
        else:
            assert item.signal is not None
            store.send_signal(tx, str(run_id), item.signal, payload, actor=f"{actor} via {origin}")
