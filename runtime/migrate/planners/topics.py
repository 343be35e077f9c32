"""Rules for topics and subscriptions: the messages in flight.

These change no table of the application: the spec, and the runtime's own rows of the work in
flight. What a change can strand is found by probes over ``_buttress.messages`` at dry-run, named,
and either reported (messages converted or held, with their values retained) or refused (a message
that cannot take the new shape).
"""

from __future__ import annotations

from runtime.migrate import ddl
from runtime.migrate.ddl import qs
from runtime.migrate.hazards import Hazard, HazardCode, hazard
from runtime.migrate.planners.draft import Context, Draft
from runtime.migrate.steps import Probe, Retention
from runtime.schema import changes
from runtime.schema.spec import AppSpec, PayloadField, TopicSpec, canonical_json
from runtime.sql.dialect import DUCKDB, Dialect
from runtime.workflows import tables


def _fits(topic: TopicSpec, alias: str = "", d: Dialect = DUCKDB) -> str:
    """SQL: a message's payload has every required field of ``topic``, no other, and values that convert
    to the fields' types."""
    payload = f"{alias}.payload" if alias else "payload"
    conditions = [d.json_keys_within(payload, [f.name for f in topic.payload])]
    for f in topic.payload:
        if not f.nullable:
            conditions.append(f"{d.json_kind(payload, f.name)} IS DISTINCT FROM 'NULL'")
        if f.type not in {"text", "json"}:
            raw = d.json_text(payload, f.name)
            conditions.append(f"({raw} IS NULL OR {d.try_cast(raw, f.type)} IS NOT NULL)")
    return " AND ".join(conditions)


def _shaped(topic: TopicSpec, d: Dialect = DUCKDB) -> str:
    """SQL: a fitting payload rebuilt with exactly the fields of ``topic``, in order, typed."""
    members = []
    for f in topic.payload:
        if f.type == "json":
            value = d.json_value("payload", f.name)
        else:
            value = _typed_json(d.try_cast(d.json_text("payload", f.name), f.type), f, d)
        members.append((f.name, value))
    return d.json_build(members)


def _typed_json(value: str, field_: PayloadField, d: Dialect = DUCKDB) -> str:
    """A converted value as the JSON the payload holds: numbers and booleans as such, the rest text."""
    if field_.type in {"integer", "bigint", "double", "boolean"}:
        return value
    return f"CAST({value} AS {'VARCHAR' if d is DUCKDB else 'TEXT'})"


def _release_held(topic: TopicSpec, d: Dialect = DUCKDB) -> list[str]:
    """Messages held back when ``topic`` was dropped, released when it comes back with a payload they
    fit: first given exactly its fields (typed, null where absent), then let go."""
    held = f"topic = {ddl.string(topic.name)} AND held IS NOT NULL AND {_fits(topic, d=d)}"
    return [
        f"UPDATE _buttress.messages SET payload = {_shaped(topic, d)} WHERE {held}",
        f"UPDATE _buttress.messages SET held = NULL WHERE {held}",
    ]


def _stranded(topic: str, what: str, condition: str) -> Probe:
    return Probe(
        kind="fail",
        code=HazardCode.MESSAGES_STRANDED,
        message=f"undelivered messages of {topic} that {what}",
        sql=f"SELECT m.seq, m.message_id, m.payload FROM _buttress.messages AS m WHERE {condition}",
    )


def add_topic(old: AppSpec, new: AppSpec, op: changes.AddTopic, ctx: Context) -> Draft:
    ctx.created_other.add(f"topic:{op.topic.name}")
    name = ddl.string(op.topic.name)
    return Draft(
        f"add topic {op.topic.name}",
        "catalog",
        _release_held(op.topic, ctx.dialect),
        [{"op": "drop_topic", "name": op.topic.name}],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.MESSAGES_HELD,
                message=f"held messages of {op.topic.name} that the new payload does not fit (still held)",
                sql=(
                    f"SELECT seq, message_id, payload FROM _buttress.messages WHERE topic = {name} "
                    f"AND held IS NOT NULL AND NOT ({_fits(op.topic, d=ctx.dialect)})"
                ),
            )
        ],
    )


def drop_topic(old: AppSpec, new: AppSpec, op: changes.DropTopic, ctx: Context) -> Draft:
    previous = old.topic(op.name)
    assert previous is not None
    pending = tables.undelivered(op.name)
    reason = ddl.string(f"topic {op.name} dropped in version {ctx.target_version}")
    return Draft(
        f"drop topic {op.name} (its undelivered messages are held back)",
        "catalog",
        [f"UPDATE _buttress.messages AS m SET held = {reason} WHERE {pending}"],
        [{"op": "add_topic", "topic": previous.model_dump(mode="json")}],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.MESSAGES_HELD,
                message=f"undelivered messages of {op.name} held back",
                sql=f"SELECT m.seq, m.message_id, m.payload FROM _buttress.messages AS m WHERE {pending}",
            )
        ],
        hazards=[]
        if f"topic:{op.name}" in ctx.created_other
        else [
            hazard(
                HazardCode.MESSAGES_HELD, f"drops topic {op.name}; its undelivered messages are held", op.name
            )
        ],
    )


def replace_topic(old: AppSpec, new: AppSpec, op: changes.ReplaceTopic, ctx: Context) -> Draft:
    """Convert the undelivered messages to the new payload: dropped fields retained and removed,
    retained values of re-added fields restored; a message that cannot take the new shape fails."""
    before = old.topic(op.topic.name)
    assert before is not None
    after = op.topic
    name = after.name
    pending = tables.undelivered(name)
    sql: list[str] = []
    probes: list[Probe] = []
    retains: list[Retention] = []
    restores: list[str] = []
    hazards: list[Hazard] = []
    d = ctx.dialect
    old_fields = {f.name: f for f in before.payload}
    new_fields = {f.name: f for f in after.payload}
    for n, field_ in enumerate(f for f in before.payload if f.name not in new_fields):
        value_of, has = d.json_value("m.payload", field_.name), d.json_has("m.payload", field_.name)
        table = ctx.retention_table(n)
        sql.append(
            f"CREATE TABLE {qs(table)} AS SELECT m.seq, {value_of} AS value "
            f"FROM _buttress.messages AS m WHERE {pending} AND {has}"
        )
        patch = ddl.string(canonical_json({field_.name: None}))
        sql.append(
            f"UPDATE _buttress.messages AS m SET payload = {d.json_merge('m.payload', patch)} "
            f"WHERE m.seq IN (SELECT seq FROM {qs(table)})"
        )
        retains.append(Retention(table=table, kind="payload", entity=name, field=field_.name, key=("seq",)))
        probes.append(
            Probe(
                kind="loss",
                code=HazardCode.MESSAGES_CONVERTED,
                message=f"undelivered messages of {name} losing payload field {field_.name} (retained)",
                sql=(
                    f"SELECT m.seq, m.message_id, {value_of} AS value "
                    f"FROM _buttress.messages AS m WHERE {pending} AND {has}"
                ),
            )
        )
        hazards.append(
            hazard(
                HazardCode.MESSAGES_CONVERTED,
                f"drops payload field {name}.{field_.name}",
                f"{name}.{field_.name}",
            )
        )
    restored: set[str] = set()
    for field_ in after.payload:
        if field_.name in old_fields:
            continue
        retained = ctx.restores.get(("payload", name, field_.name))
        if retained is not None:
            restores.append(retained.table)
            restored.add(field_.name)
            restored_value = d.json_merge("m.payload", d.json_build([(field_.name, "r.value")]))
            sql.append(
                f"UPDATE _buttress.messages AS m SET payload = {restored_value} FROM {qs(retained.table)} AS r "
                f"WHERE m.seq = r.seq AND {pending}"  # a message delivered meanwhile keeps what it was
            )
        if not field_.nullable:
            unless = f" AND m.seq NOT IN (SELECT seq FROM {qs(retained.table)})" if retained else ""
            probes.append(
                _stranded(
                    name,
                    f"have no value for the new required field {field_.name}",
                    f"{pending} AND NOT {d.json_has('m.payload', field_.name)}{unless}",
                )
            )
    for field_ in after.payload:
        previous = old_fields.get(field_.name)
        if previous is None:
            continue
        if previous.type != field_.type:
            value = d.json_text("m.payload", field_.name)
            converted = d.try_cast(value, field_.type)
            back = f"CAST({converted} AS {d.column_type(previous.type)})"
            probes.append(
                _stranded(
                    name,
                    f"hold a {field_.name} that does not convert from {previous.type} to {field_.type} and back",
                    f"{pending} AND {value} IS NOT NULL AND ({converted} IS NULL OR {back} IS DISTINCT FROM "
                    f"{d.try_cast(value, previous.type)})",
                )
            )
            patched = d.json_merge(
                "m.payload", d.json_build([(field_.name, _typed_json(converted, field_, d))])
            )
            sql.append(
                f"UPDATE _buttress.messages AS m SET payload = {patched} WHERE {pending} AND {value} IS NOT NULL"
            )
        if previous.nullable and not field_.nullable:
            probes.append(
                _stranded(
                    name,
                    f"have no value for {field_.name}, which becomes required",
                    f"{pending} AND {d.json_kind('m.payload', field_.name)} IS NOT DISTINCT FROM 'NULL'",
                )
            )
    # last: each undelivered message gets exactly the new payload's fields, in order (null where absent),
    # and says which version's shape it now has
    sql.append(
        f"UPDATE _buttress.messages AS m SET payload = {_shaped(after, d)}, version = {ctx.target_version} "
        f"WHERE {pending}"
    )
    if any(p.kind == "fail" for p in probes):
        hazards.append(
            hazard(
                HazardCode.MESSAGES_STRANDED,
                f"changes the payload of {name} under undelivered messages",
                name,
            )
        )
    return Draft(
        f"replace topic {name}" + (f" (restores {', '.join(sorted(restored))})" if restored else ""),
        "catalog",
        sql,
        [{"op": "replace_topic", "topic": before.model_dump(mode="json")}],
        retains=retains,
        restores=restores,
        probes=probes,
        hazards=hazards,
    )


def _cursor_sql(name: str, topic: str) -> str:
    """A subscription starts at the end of its topic; added again, it resumes where it stopped."""
    return (
        "INSERT INTO _buttress.cursors (subscription, topic, last_seq, active) "
        f"SELECT {ddl.string(name)}, {ddl.string(topic)}, coalesce(max(seq), 0), TRUE FROM _buttress.messages "
        "ON CONFLICT (subscription) DO UPDATE SET active = TRUE"
    )


def add_subscription(old: AppSpec, new: AppSpec, op: changes.AddSubscription, ctx: Context) -> Draft:
    name = op.subscription.name
    return Draft(
        f"add subscription {name} ({op.subscription.topic} -> "
        f"{op.subscription.workflow or op.subscription.action})",
        "catalog",
        [_cursor_sql(name, op.subscription.topic)],
        [{"op": "drop_subscription", "name": name}],
    )


def replace_subscription(old: AppSpec, new: AppSpec, op: changes.ReplaceSubscription, ctx: Context) -> Draft:
    previous = old.subscription(op.subscription.name)
    assert previous is not None
    name = ddl.string(op.subscription.name)
    sql = []
    if previous.topic != op.subscription.topic:  # a new topic: from its end
        sql.append(
            f"UPDATE _buttress.cursors SET topic = {ddl.string(op.subscription.topic)}, last_seq = "
            f"(SELECT coalesce(max(seq), 0) FROM _buttress.messages) WHERE subscription = {name}"
        )
    return Draft(
        f"replace subscription {op.subscription.name}",
        "catalog",
        sql,
        [{"op": "replace_subscription", "subscription": previous.model_dump(mode="json")}],
    )


def drop_subscription(old: AppSpec, new: AppSpec, op: changes.DropSubscription, ctx: Context) -> Draft:
    previous = old.subscription(op.name)
    assert previous is not None
    name = ddl.string(op.name)
    return Draft(
        f"drop subscription {op.name}",
        "catalog",
        [f"UPDATE _buttress.cursors SET active = FALSE WHERE subscription = {name}"],
        [{"op": "add_subscription", "subscription": previous.model_dump(mode="json")}],
        probes=[
            Probe(
                kind="loss",
                code=HazardCode.SUBSCRIPTION_DROPPED,
                message=f"messages subscription {op.name} has not processed yet",
                sql=(
                    "SELECT m.seq, m.message_id FROM _buttress.messages AS m JOIN _buttress.cursors AS c "
                    f"ON c.topic = m.topic WHERE c.subscription = {name} AND m.seq > c.last_seq AND m.held IS NULL"
                ),
            )
        ],
        hazards=[hazard(HazardCode.SUBSCRIPTION_DROPPED, f"drops subscription {op.name}", op.name)],
    )
