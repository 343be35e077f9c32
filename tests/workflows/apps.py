"""The apps of the workflow stories, as the operations an agent proposes."""

from __future__ import annotations

from typing import Any


def entity(entity_name: str, key: str, /, **fields: str) -> dict[str, Any]:
    """An entity; a field type ending in ``?`` is nullable, ``qty=integer>=0`` gets a check."""
    out = []
    for field, kind in fields.items():
        item: dict[str, Any] = {"name": field, "type": kind.rstrip("?").split(">=")[0]}
        if kind.endswith("?"):
            item["nullable"] = True
        if ">=" in kind:
            item["check"] = f"{field} >= {kind.split('>=')[1]}"
        out.append(item)
    return {"op": "add_entity", "entity": {"name": entity_name, "primary_key": [key], "fields": out}}


def mutation(name: str, params: dict[str, str], *statements: str, **extra: Any) -> dict[str, Any]:
    return {
        "op": "add_action",
        "action": {
            "name": name,
            "kind": "mutation",
            "params": [{"name": p, "type": t} for p, t in params.items()],
            "statements": list(statements),
            **extra,
        },
    }


def ref(source: str) -> dict[str, str]:
    return {"from": source}


# ---------------------------------------------------------------------------------------- payment

PAYMENT: list[dict[str, Any]] = [
    entity("stock", "sku", sku="text", qty="integer>=0"),
    entity("purchase", "id", id="text", customer="text", sku="text", charge="text"),
    mutation(
        "restock",
        {"sku": "text", "qty": "integer"},
        "insert into stock (sku, qty) values ($sku, $qty) on conflict (sku) do update set qty = excluded.qty",
    ),
    mutation("reserve", {"sku": "text"}, "update stock set qty = qty - 1 where sku = $sku returning qty"),
    mutation("release", {"sku": "text"}, "update stock set qty = qty + 1 where sku = $sku"),
    mutation(
        "record_purchase",
        {"id": "text", "customer": "text", "sku": "text", "charge": "text"},
        "insert into purchase values ($id, $customer, $sku, $charge)",
    ),
    {
        "op": "add_workflow",
        "workflow": {
            "name": "checkout",
            "description": "Reserve one item, charge the customer, record the purchase.",
            "params": [
                {"name": "order_id", "type": "text"},
                {"name": "customer", "type": "text"},
                {"name": "sku", "type": "text"},
                {"name": "amount", "type": "integer"},
            ],
            "steps": [
                {
                    "name": "reserve",
                    "kind": "action",
                    "action": "reserve",
                    "args": {"sku": ref("input.sku")},
                    "compensation": {"action": "release", "args": {"sku": ref("input.sku")}},
                },
                {
                    "name": "charge",
                    "kind": "effect",
                    "connector": "payments",
                    "args": {
                        "customer": ref("input.customer"),
                        "amount": ref("input.amount"),
                        "order": ref("input.order_id"),
                    },
                    "retry": {"attempts": 30, "backoff_s": 0.02, "max_backoff_s": 0.2},
                    "compensation": {"connector": "refunds", "args": {"charge": ref("steps.charge.id")}},
                },
                {
                    "name": "record",
                    "kind": "action",
                    "action": "record_purchase",
                    "args": {
                        "id": ref("input.order_id"),
                        "customer": ref("input.customer"),
                        "sku": ref("input.sku"),
                        "charge": ref("steps.charge.id"),
                    },
                },
            ],
        },
    },
]

# ------------------------------------------------------------------------------------- onboarding


def _mail(step: str, stage: int) -> dict[str, Any]:
    return {
        "name": step,
        "kind": "effect",
        "connector": "mail",
        "args": {"to": ref("input.member"), "stage": stage},
        "retry": {"attempts": 30, "backoff_s": 0.02, "max_backoff_s": 0.2},
    }


ONBOARDING: list[dict[str, Any]] = [
    entity("member", "id", id="text", document="text?", active="boolean"),
    mutation(
        "enrol",
        {"id": "text"},
        "insert into member values ($id, null, false)",
        emits=[{"start": "onboard", "run_id": ref("args.id"), "args": {"member": ref("args.id")}}],
    ),
    mutation(
        "upload",
        {"id": "text", "document": "text"},
        "update member set document = $document where id = $id returning id",
        emits=[{"signal": "uploaded", "run_id": ref("args.id"), "args": {"document": ref("args.document")}}],
    ),
    mutation("activate", {"id": "text"}, "update member set active = true where id = $id"),
    {
        "op": "add_workflow",
        "workflow": {
            "name": "onboard",
            "description": "Welcome, wait for the document, review, activate: one mail per stage.",
            "params": [{"name": "member", "type": "text"}],
            "steps": [
                _mail("welcome", 1),
                {"name": "document", "kind": "wait", "signal": "uploaded", "timeout_s": 3600},
                _mail("reviewed", 2),
                {
                    "name": "activate",
                    "kind": "action",
                    "action": "activate",
                    "args": {"id": ref("input.member")},
                },
                _mail("active", 3),
            ],
        },
    },
]

# ---------------------------------------------------------------------------------------- users

USERS_V1: list[dict[str, Any]] = [
    entity("app_user", "id", id="text", name="text"),
    {
        "op": "add_topic",
        "topic": {
            "name": "user_events",
            "payload": [{"name": "user", "type": "text"}, {"name": "name", "type": "text"}],
            "key": "user",
            "external": True,
        },
    },
    mutation(
        "sign_up",
        {"id": "text", "name": "text"},
        "insert into app_user values ($id, $name)",
        emits=[{"publish": "user_events", "args": {"user": ref("args.id"), "name": ref("args.name")}}],
    ),
]

USERS_V2: list[dict[str, Any]] = [
    {
        "op": "add_field",
        "entity": "app_user",
        "field": {"name": "plan", "type": "text", "nullable": True},
    },
    {
        "op": "replace_topic",
        "topic": {
            "name": "user_events",
            "payload": [
                {"name": "user", "type": "text"},
                {"name": "name", "type": "text"},
                {"name": "plan", "type": "text", "nullable": True},
            ],
            "key": "user",
            "external": True,
        },
    },
    {
        "op": "replace_action",
        "action": {
            "name": "sign_up",
            "kind": "mutation",
            "params": [
                {"name": "id", "type": "text"},
                {"name": "name", "type": "text"},
                {"name": "plan", "type": "text"},
            ],
            "statements": ["insert into app_user values ($id, $name, $plan)"],
            "emits": [
                {
                    "publish": "user_events",
                    "args": {"user": ref("args.id"), "name": ref("args.name"), "plan": ref("args.plan")},
                }
            ],
        },
    },
]
