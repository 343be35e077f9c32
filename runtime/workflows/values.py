"""Values of a run (pure): resolving ``Ref`` arguments, checking arguments and payloads by type.

A ``Ref`` resolves against a context of named scopes: ``input`` (a workflow's arguments), ``steps``
(each completed step's output), ``run`` (``id``), ``args`` and ``result`` (an action's arguments and
the first row it returned), ``message`` (a delivered message's payload), ``signal`` (a received
signal's payload). A value that is not there resolves to ``None``; whether ``None`` is acceptable is
the target's decision (a required parameter refuses it with ``action.invalid_args``).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.errors import ActionError, Code
from runtime.schema.spec import ArgValue, ParamSpec, PayloadField, Ref, TopicSpec, canonical_json

Context = Mapping[str, Any]


def resolve(value: ArgValue, context: Context) -> Any:
    """A constant as is; a ``Ref`` looked up in ``context`` (``None`` when absent)."""
    if not isinstance(value, Ref):
        return value
    parts = value.parts
    found: Any = context.get(parts[0])
    for part in parts[1:]:
        if not isinstance(found, Mapping):
            return None
        found = found.get(part)
    return found


def resolve_all(values: Mapping[str, ArgValue], context: Context) -> dict[str, Any]:
    return {name: resolve(value, context) for name, value in values.items()}


def check_args(params: tuple[ParamSpec, ...], args: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """``args`` checked against typed parameters: every required one given, no unknown one, each of
    its type. Returns the arguments as JSON values (decimals, dates and times as text)."""
    out, problems = _typed(params, args, "parameter")
    if problems:
        raise ActionError(
            Code.ACTION_INVALID_ARGS,
            f"invalid arguments for {what}: {problems[0]}",
            hint="describe_app lists each parameter with its type.",
            details={"problems": problems},
        )
    return out


def check_payload(topic: TopicSpec, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload checked against the topic: required fields given, no unknown field, types right. The
    result has every field of the topic, in its order (a nullable field not given is null), so that
    a consumer sees one shape per version."""
    out, problems = _typed(topic.payload, payload, "payload field")
    if problems:
        raise ActionError(
            Code.MESSAGE_INVALID,
            f"invalid payload for topic {topic.name}: {problems[0]}",
            hint=f"The payload of {topic.name} is: "
            + ", ".join(f"{f.name} {f.type}{'' if not f.nullable else ' (nullable)'}" for f in topic.payload),
            details={"topic": topic.name, "problems": problems},
        )
    return out


def _typed(
    declared: Sequence[ParamSpec | PayloadField], given: Mapping[str, Any], noun: str
) -> tuple[dict[str, Any], list[str]]:
    """Each declared value of ``given`` converted to its type, in declared order (null when absent),
    and the problems found: unknown names, required values missing, values not of their type."""
    names = {d.name for d in declared}
    problems = [f"unknown {noun} {name!r}" for name in given if name not in names]
    out: dict[str, Any] = {}
    for item in declared:
        value = given.get(item.name)
        if value is None:
            if not item.nullable:
                problems.append(f"{item.name} is required ({item.type})")
            out[item.name] = None
            continue
        converted = convert(value, item.type)
        if converted is _INVALID:
            problems.append(f"{item.name} is not a valid {item.type} value: {value!r}")
        out[item.name] = converted
    return out, problems


class _Invalid:
    pass


_INVALID = _Invalid()


def convert(value: Any, logical: str) -> Any:
    """``value`` as the JSON value of a ``logical`` type, or ``_INVALID``."""
    try:
        if logical == "json":
            return value
        if logical == "text":
            return value if isinstance(value, str) else _INVALID
        if logical in {"integer", "bigint"}:
            if isinstance(value, bool) or not isinstance(value, int):
                return _INVALID
            limit = 2**31 if logical == "integer" else 2**63
            return value if -limit <= value < limit else _INVALID
        if logical == "double":
            return (
                float(value) if isinstance(value, int | float) and not isinstance(value, bool) else _INVALID
            )
        if logical == "boolean":
            return value if isinstance(value, bool) else _INVALID
        if logical.startswith("decimal"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                return _INVALID
            return str(decimal.Decimal(str(value)))
        if logical == "date":
            return datetime.date.fromisoformat(value).isoformat() if isinstance(value, str) else _INVALID
        if logical in {"timestamp", "timestamptz"}:
            return datetime.datetime.fromisoformat(value).isoformat() if isinstance(value, str) else _INVALID
        if logical == "uuid":
            return str(uuid.UUID(value)) if isinstance(value, str) else _INVALID
    except (ValueError, ArithmeticError, TypeError):
        return _INVALID
    return _INVALID


def digest(value: Any) -> str:
    """The sha256 of a value's canonical JSON (argument and request fingerprints)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def effect_key(run_id: str, step: str) -> str:
    """The idempotency key of an effect: the same for every attempt of one step of one run, and for
    nothing else."""
    return "bt-" + hashlib.sha256(f"{run_id}\x00{step}".encode()).hexdigest()[:40]


def derived_id(prefix: str, *parts: str) -> str:
    """A deterministic id for something derived from ``parts`` (a run's published message, a run a
    subscription starts for a message): the same parts give the same id, so a retry finds what the
    first attempt made, and the id does not grow as chains of runs and messages get longer.

    >>> derived_id("m", "run-1", "notify") == derived_id("m", "run-1", "notify"), len(derived_id("r", "x" * 500))
    (True, 34)
    """
    joined = "\x00".join(parts)
    return f"{prefix}-" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def jsonable(value: Any) -> Any:
    """Database and argument values as JSON values (decimals, dates, UUIDs as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def canonical(value: Any) -> str:
    """JSON text of a value (sorted keys), for the system tables."""
    return canonical_json(jsonable(value))
