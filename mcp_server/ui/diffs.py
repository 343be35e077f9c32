"""What changed between two versions, for people: a summary line, the changes grouped by kind, field
and entity changes attribute by attribute, and SQL (views, invariants, action statements) and other
definitions as line diffs (``difflib``) instead of two whole blocks.

A rollback's diff says so: what it adds back is *restored*, what it drops again is *undone*, what it
changes back is *reverted*; and two versions with the same spec hash are named as such.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import sqlglot
from pydantic import BaseModel

from runtime.results import VersionComparison
from runtime.schema.spec import AppSpec

KIND_ORDER: Final = ("entity", "field", "invariant", "view", "action", "topic", "workflow", "subscription")
PLURAL: Final = {"entity": "entities"}
WHOLE: Final = ("invariant", "view", "action", "topic", "workflow", "subscription")
"""Kinds whose definition is replaced as a whole (shown as a line diff of the definition)."""
CONTEXT: Final = 3


@dataclass(frozen=True)
class Line:
    """One line of a line diff: ``tag`` is ``same``, ``old`` (only before), ``new`` (only after) or
    ``gap`` (unchanged lines left out, ``text`` says how many)."""

    tag: str
    before: int | None
    after: int | None
    text: str


@dataclass(frozen=True)
class Attribute:
    name: str
    before: Any
    after: Any
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True)
class DiffItem:
    """One change between two versions, with the definitions on either side when there are any."""

    change: str
    """'added', 'removed', 'changed' (attribute by attribute) or 'replaced' (a whole definition)."""
    kind: str
    name: str
    verb: str
    """How it reads: the change, or for a rollback 'restored', 'undone', 'reverted'."""
    before: Any = None
    after: Any = None
    attributes: tuple[Attribute, ...] = ()
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True)
class Diff:
    sections: list[tuple[str, list[DiffItem]]]
    summary: list[str]
    notes: list[str] = field(default_factory=list)


def plural(kind: str, count: int = 2) -> str:
    return kind if count == 1 else PLURAL.get(kind, f"{kind}s")


def readable(comparison: VersionComparison) -> Diff:
    """The comparison's changes grouped by kind (entities and fields first), with a summary, notes
    on rollbacks and identical specs, attribute tables and line diffs."""
    before_v, after_v = comparison.before, comparison.after
    rollback = after_v.kind == "rollback" and after_v.parent == before_v.number
    items: list[DiffItem] = []
    for change in comparison.diff.changes:
        items.append(_item(comparison, change, rollback))
    items += _other_parts(comparison.before_spec, comparison.after_spec, rollback)
    grouped: dict[str, list[DiffItem]] = {}
    for item in items:
        grouped.setdefault(item.kind, []).append(item)
    order = [k for k in KIND_ORDER if k in grouped] + sorted(k for k in grouped if k not in KIND_ORDER)
    counted = Counter((item.kind, item.verb) for item in items)
    summary = [
        f"{count} {plural(kind, count)} {verb}"
        for kind in order
        for verb in ("added", "restored", "removed", "undone", "changed", "replaced", "reverted")
        if (count := counted.get((kind, verb), 0))
    ]
    notes: list[str] = []
    if after_v.kind == "rollback" and after_v.restores is not None:
        notes.append(
            f"Version {after_v.number} is a rollback restoring version {after_v.restores}"
            + (": what follows undoes the versions after it." if rollback else ".")
        )
    if before_v.hash == after_v.hash:
        notes.append(
            f"Versions {before_v.number} and {after_v.number} have the same spec (hash {after_v.hash[:12]})."
        )
    return Diff([(kind, grouped[kind]) for kind in order], summary, notes)


def _verb(change: str, rollback: bool) -> str:
    if not rollback:
        return change
    return {"added": "restored", "removed": "undone", "changed": "reverted", "replaced": "reverted"}[change]


def _item(comparison: VersionComparison, change: dict[str, Any], rollback: bool) -> DiffItem:
    kind, name, what = str(change["kind"]), str(change["name"]), str(change["change"])
    before = _definition(comparison.before_spec, kind, name) if what != "added" else None
    after = _definition(comparison.after_spec, kind, name) if what != "removed" else None
    attributes: list[Attribute] = []
    if isinstance(change.get("attributes"), dict):
        attributes = [_attribute(k, v.get("from"), v.get("to")) for k, v in change["attributes"].items()]
    elif "attribute" in change:
        attributes = [_attribute(str(change["attribute"]), change.get("from"), change.get("to"))]
    if attributes:
        return DiffItem(what, kind, name, _verb(what, rollback), attributes=tuple(attributes))
    if what == "changed" and kind in WHOLE:
        return DiffItem(
            "replaced",
            kind,
            name,
            _verb("replaced", rollback),
            before,
            after,
            attributes=tuple(_other_attributes(before, after)),
            lines=tuple(line_diff(_text_of(kind, before), _text_of(kind, after))),
        )
    return DiffItem(what, kind, name, _verb(what, rollback), before, after)


def _attribute(name: str, before: Any, after: Any) -> Attribute:
    if name == "check" and isinstance(before, str) and isinstance(after, str):
        return Attribute(name, before, after, tuple(line_diff(pretty_sql(before), pretty_sql(after))))
    return Attribute(name, readable_value(name, before), readable_value(name, after))


def _other_attributes(before: Any, after: Any) -> list[Attribute]:
    """For a replaced definition: its attributes other than its SQL that changed (kind, params...)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    skip = {"sql", "statements", "steps", "name"}
    return [
        Attribute(key, readable_value(key, before.get(key)), readable_value(key, after.get(key)))
        for key in sorted(set(before) | set(after))
        if key not in skip and before.get(key) != after.get(key)
    ]


def readable_value(name: str, value: Any) -> Any:
    """Keys, unique sets and indexes in words: ``(a, b)``, ``by_day (day, slot)``; anything else as is."""
    if name == "indexes" and isinstance(value, list):
        return ", ".join(f"{i.get('name')} ({', '.join(i.get('columns', []))})" for i in value) or "none"
    if name == "primary_key" and isinstance(value, list):
        return f"({', '.join(map(str, value))})"
    if name == "unique" and isinstance(value, list):
        return ", ".join(f"({', '.join(map(str, u))})" for u in value) or "none"
    if name == "params" and isinstance(value, list):
        return ", ".join(f"{p.get('name')} {p.get('type')}" for p in value if isinstance(p, dict)) or "none"
    return value


def pretty_sql(sql: str) -> str:
    """SQL laid out one clause per line (sqlglot), so a line diff shows what changed; the text as
    written when it does not parse."""
    try:
        return ";\n".join(sqlglot.transpile(sql, read="duckdb", write="duckdb", pretty=True))
    except Exception:  # unparsable text is shown as written
        return sql


def _text_of(kind: str, definition: Any) -> str:
    if not isinstance(definition, dict):
        return ""
    if kind in {"view", "invariant"} and isinstance(definition.get("sql"), str):
        return pretty_sql(definition["sql"])
    if kind == "action" and isinstance(definition.get("statements"), list):
        return "\n\n".join(f"{pretty_sql(str(s))};" for s in definition["statements"])
    return json.dumps(definition, indent=2, sort_keys=True, default=str)


def line_diff(before: str, after: str, *, context: int = CONTEXT) -> list[Line]:
    """The lines of ``before`` and ``after`` aligned (``difflib``): removed, added and unchanged lines
    with their numbers on either side; long unchanged stretches folded to ``context`` lines each side."""
    old, new = before.splitlines(), after.splitlines()
    lines: list[Line] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            same = [Line("same", i1 + k + 1, j1 + k + 1, old[i1 + k]) for k in range(i2 - i1)]
            if len(same) > 2 * context + 1:
                head = same[:context] if lines else []
                tail = same[-context:] if i2 < len(old) or j2 < len(new) else []
                folded = len(same) - len(head) - len(tail)
                same = [*head, Line("gap", None, None, f"{folded} unchanged lines"), *tail]
            lines += same
            continue
        lines += [Line("old", i1 + k + 1, None, old[i1 + k]) for k in range(i2 - i1)]
        lines += [Line("new", None, j1 + k + 1, new[j1 + k]) for k in range(j2 - j1)]
    return lines


def _definition(spec: AppSpec, kind: str, name: str) -> Any:
    """The definition of a named part of ``spec`` as plain data (``entity.field`` for a field)."""
    if kind == "field":
        entity_name, _, field_name = name.partition(".")
        entity = spec.entity(entity_name)
        found = entity.field(field_name) if entity is not None else None
        return found.model_dump(mode="json") if found is not None else None
    for item in getattr(spec, plural(kind), ()):
        if isinstance(item, BaseModel) and getattr(item, "name", None) == name:
            return item.model_dump(mode="json")
    return None


def _other_parts(before: AppSpec, after: AppSpec, rollback: bool) -> list[DiffItem]:
    """Topics, workflows and subscriptions added, removed or replaced (the structural diff covers the
    rest of the spec)."""
    items: list[DiffItem] = []
    for kind in ("topic", "workflow", "subscription"):
        old = {i.name: i.model_dump(mode="json") for i in getattr(before, plural(kind))}
        new = {i.name: i.model_dump(mode="json") for i in getattr(after, plural(kind))}
        for name in sorted(set(new) - set(old)):
            items.append(DiffItem("added", kind, name, _verb("added", rollback), None, new[name]))
        for name in sorted(set(old) - set(new)):
            items.append(DiffItem("removed", kind, name, _verb("removed", rollback), old[name], None))
        for name in sorted(set(old) & set(new)):
            if old[name] != new[name]:
                items.append(
                    DiffItem(
                        "replaced",
                        kind,
                        name,
                        _verb("replaced", rollback),
                        old[name],
                        new[name],
                        lines=tuple(line_diff(_text_of(kind, old[name]), _text_of(kind, new[name]))),
                    )
                )
    return items
