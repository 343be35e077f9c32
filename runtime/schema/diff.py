"""A readable structural diff between two specs (pure)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from runtime.schema.spec import AppSpec


class SpecDiff(BaseModel):
    from_version: int
    to_version: int
    changes: list[dict[str, Any]]


def _by_name(items: Any) -> dict[str, Any]:
    return {item.name: item for item in items}


def diff(old: AppSpec, new: AppSpec, from_version: int = 0, to_version: int = 0) -> SpecDiff:
    """Added, removed and changed entities (field by field), invariants, views and actions."""
    out: list[dict[str, Any]] = []
    old_e, new_e = _by_name(old.entities), _by_name(new.entities)
    for name in sorted(set(new_e) - set(old_e)):
        out.append({"change": "added", "kind": "entity", "name": name})
    for name in sorted(set(old_e) - set(new_e)):
        out.append({"change": "removed", "kind": "entity", "name": name})
    for name in sorted(set(old_e) & set(new_e)):
        a, b = old_e[name], new_e[name]
        if a == b:
            continue
        fa, fb = _by_name(a.fields), _by_name(b.fields)
        for field in sorted(set(fb) - set(fa)):
            out.append({"change": "added", "kind": "field", "name": f"{name}.{field}"})
        for field in sorted(set(fa) - set(fb)):
            out.append({"change": "removed", "kind": "field", "name": f"{name}.{field}"})
        for field in sorted(set(fa) & set(fb)):
            if fa[field] != fb[field]:
                before, after = fa[field].model_dump(mode="json"), fb[field].model_dump(mode="json")
                changed = {k: {"from": before[k], "to": after[k]} for k in before if before[k] != after[k]}
                out.append(
                    {"change": "changed", "kind": "field", "name": f"{name}.{field}", "attributes": changed}
                )
        for attr in ("primary_key", "unique", "indexes", "description"):
            if getattr(a, attr) != getattr(b, attr):
                out.append(
                    {
                        "change": "changed",
                        "kind": "entity",
                        "name": name,
                        "attribute": attr,
                        "from": _dump(getattr(a, attr)),
                        "to": _dump(getattr(b, attr)),
                    }
                )
    for kind, attr in (("invariant", "invariants"), ("view", "views"), ("action", "actions")):
        oa, na = _by_name(getattr(old, attr)), _by_name(getattr(new, attr))
        for name in sorted(set(na) - set(oa)):
            out.append({"change": "added", "kind": kind, "name": name})
        for name in sorted(set(oa) - set(na)):
            out.append({"change": "removed", "kind": kind, "name": name})
        for name in sorted(set(oa) & set(na)):
            if oa[name] != na[name]:
                out.append(
                    {"change": "changed", "kind": kind, "name": name, "to": na[name].model_dump(mode="json")}
                )
    return SpecDiff(from_version=from_version, to_version=to_version, changes=out)


def _dump(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
