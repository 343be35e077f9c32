"""Message delivery to subscriptions: each subscription's next message starts its workflow's run, or
calls its action, in the same transaction that moves the subscription's cursor past the message, so a
message is handled once in effect. A delivery that may succeed later (a busy lane, a rate limit) backs
the subscription off for a second; one refused for good is dead-lettered and the cursor moves on.
"""

from __future__ import annotations

import time

from runtime.boundary.policy import Acting
from runtime.errors import ButtressError, Code
from runtime.schema.spec import RetryPolicy, SubscriptionSpec
from runtime.store.audit import now_iso
from runtime.workflows import faults, messages, store, values
from runtime.workflows.steps.runner import BATCH, Runner, error_of


class Delivery:
    """Hands each subscription of the current version its messages, in order."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.rt = runner.rt
        self._backoff: dict[str, float] = {}  # subscription -> monotonic time it may be tried again

    def deliver_all(self) -> bool:
        """Up to ``BATCH`` messages to each subscription not backing off; True if any was handled."""
        spec = self.rt.current[1]
        worked = False
        for subscription in spec.subscriptions:
            if self._backoff.get(subscription.name, 0.0) > time.monotonic():
                continue
            for _ in range(BATCH):
                if not self.deliver(subscription):
                    break
                worked = True
        return worked

    def deliver(self, subscription: SubscriptionSpec) -> bool:
        """Hand the subscription its next message: a run started, or an action called, in the same
        transaction as the subscription's cursor (exactly once in effect)."""
        with self.rt.engine.snapshot() as reader:
            cursor = reader.fetchone(
                "SELECT last_seq FROM _buttress.cursors WHERE subscription = ? AND active",
                [subscription.name],
            )
            if cursor is None:
                return False
            row = reader.fetchone(
                "SELECT seq, message_id, payload, acting_for, grant_json, depth FROM _buttress.messages "
                "WHERE topic = ? AND seq > ? AND held IS NULL ORDER BY seq LIMIT 1",
                [subscription.topic, cursor[0]],
            )
        if row is None:
            return False
        seq, message_id, payload = int(row[0]), str(row[1]), store.parse_json(row[2])
        found = store.acting(row[3], row[4], row[5]) or Acting(
            agent="operator", depth=int(row[5] or 0), max_depth=self.rt.limits.max_chain_depth
        )  # a message from before grants were recorded: the operator's, and still bounded
        acting = found.deeper()  # this delivery is one hop down the chain
        args = values.resolve_all(subscription.args, {"message": payload})
        number, spec = self.rt.current
        via = f"subscription:{subscription.name}"
        actor = acting.actor(via)
        try:
            with self.runner.transaction() as tx:
                if not messages.move_cursor(tx, subscription.name, int(cursor[0]), seq):
                    return False
                depth = acting.depth if acting is not None else 1
                limit = self.rt.limits.max_chain_depth
                if subscription.max_depth is not None:
                    limit = min(limit, subscription.max_depth)
                if depth > limit:
                    raise store.chain_error(
                        (acting or Acting(agent="operator")).model_copy(
                            update={"max_depth": limit, "depth": depth}
                        ),
                        f"deliver to subscription {subscription.name}",
                    )
                if subscription.workflow is not None:
                    workflow = spec.workflow(subscription.workflow)
                    assert workflow is not None
                    store.start_run(
                        tx,
                        workflow,
                        args,
                        version=number,
                        actor=actor,
                        run_id=values.derived_id(subscription.name, message_id),
                        origin=f"message:{message_id}",
                        acting=acting,
                    )
                else:
                    assert subscription.action is not None
                    self.rt.actions.run_in(tx, subscription.action, args, actor=actor, acting=acting)
                self.rt.audit.append(
                    tx,
                    actor=actor,
                    operation="deliver",
                    outcome="ok",
                    version_before=number,
                    version_after=number,
                    arguments={"subscription": subscription.name, "message_id": message_id, "seq": seq},
                )
            faults.hit("delivery.after_commit")
            self._backoff.pop(subscription.name, None)
            return True
        except ButtressError as error:
            if str(error.code) in RetryPolicy().on or error.code == Code.LIMIT_RATE:
                self._backoff[subscription.name] = time.monotonic() + 1.0
                return False
            with self.runner.transaction() as tx:  # a final answer: dead-letter it and move on
                if not messages.move_cursor(tx, subscription.name, int(cursor[0]), seq):
                    return False
                tx.execute(
                    "INSERT INTO _buttress.dead_letters VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [subscription.name, seq, values.canonical(error_of(error)), number, now_iso()],
                )
                self.rt.audit.append(
                    tx,
                    actor=actor,
                    operation="deliver",
                    outcome="refused",
                    error_code=str(error.code),
                    version_before=number,
                    version_after=number,
                    arguments={"subscription": subscription.name, "message_id": message_id, "seq": seq},
                )
            return True
