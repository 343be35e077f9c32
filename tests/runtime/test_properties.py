"""Property tests: random valid change sequences, deployed and rolled back, keep catalog, audit and data exact.

A ``RuleBasedStateMachine`` keeps an independent model of the application (entities, fields, keys,
indexes, views, invariants, and every row keyed by field identity). Each rule generates a valid
step from the model, runs it through the public ``Runtime`` API and then checks:

* ``check_drift() == []`` and ``verify_audit().ok`` after every step;
* the active spec equals the model's schema;
* after a deploy, every table holds exactly the rows the model predicts for the operations
  (defaults filled, values cast, columns renamed or dropped);
* after a rollback, every table equals row by row the data it had at the version rolled back to,
  when no rows were written since (with writes in between: no row lost or invented, and values of
  fields untouched by type changes kept);
* deploying the reversed proposal's operations again gives the data it had before the rollback.

Each example uses a fresh DuckDB file in its own temporary directory.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runtime.errors import ButtressError, Code
from runtime.runtime import Runtime

from tests.conftest import deploy_ops

# ----------------------------------------------------------------------------------------- values

TYPES = ("text", "integer", "bigint", "double", "decimal(10,2)", "boolean", "date", "timestamp", "uuid", "json")
PK_TYPES = ("integer", "bigint", "text", "uuid")
NUMERIC = frozenset({"integer", "bigint", "double", "decimal(10,2)", "decimal(12,2)"})

# Two constant defaults per type: (spec JSON value, value DuckDB returns). Both satisfy every check below.
DEFAULTS: dict[str, tuple[tuple[Any, Any], ...]] = {
    "text": (("dflt", "dflt"), ("o'ther", "o'ther")),
    "integer": ((7, 7), (9, 9)),
    "bigint": ((7, 7), (11, 11)),
    "double": ((2.5, 2.5), (0.75, 0.75)),
    "decimal(10,2)": (("3.25", decimal.Decimal("3.25")), (4, decimal.Decimal("4.00"))),
    "decimal(12,2)": (("3.25", decimal.Decimal("3.25")), (4, decimal.Decimal("4.00"))),
    "boolean": ((True, True), (False, False)),
    "date": (("2021-02-03", datetime.date(2021, 2, 3)), ("1999-12-31", datetime.date(1999, 12, 31))),
    "timestamp": (
        ("2021-02-03T04:05:06", datetime.datetime(2021, 2, 3, 4, 5, 6)),
        ("2000-01-01T00:00:00", datetime.datetime(2000, 1, 1)),
    ),
    "uuid": (
        ("00000000-0000-4000-8000-000000000001", uuid.UUID("00000000-0000-4000-8000-000000000001")),
        ("00000000-0000-4000-8000-000000000002", uuid.UUID("00000000-0000-4000-8000-000000000002")),
    ),
    "json": (([1, 2], "[1,2]"), ({"k": "v"}, '{"k":"v"}')),
}

# Type changes the generator may make, and whether the new values still identify the old ones
# uniquely (a lossy change on a field in a unique set could create duplicates).
TYPE_CHANGES: dict[str, tuple[tuple[str, bool], ...]] = {
    "integer": (("bigint", True), ("double", True), ("decimal(12,2)", True), ("text", True)),
    "bigint": (("integer", True), ("text", True)),
    "double": (("integer", False), ("text", True)),
    "decimal(10,2)": (("decimal(12,2)", True), ("text", True)),
    "decimal(12,2)": (("decimal(10,2)", True), ("text", True)),
    "date": (("timestamp", True), ("text", True)),
    "timestamp": (("date", False), ("text", True)),
    "boolean": (("text", True),),
    "uuid": (("text", True),),
    "json": (("text", True),),
    "text": (),
}

JSON_VALUES = ('{"a": 1}', "[1, 2]", '"s"', "null", '{"b": [true, false]}', "3.5")


def value_strategy(logical: str, check: str | None) -> st.SearchStrategy[Any]:
    positive = check == "gt0"
    if logical == "text":
        return st.text(alphabet="abcxé' _", max_size=8)
    if logical in {"integer", "bigint"}:
        top = 1000 if logical == "integer" else 10**6
        return st.integers(1 if positive else -top, top)
    if logical == "double":
        return st.integers(1 if positive else -4000, 4000).map(lambda n: n / 4)
    if logical.startswith("decimal"):
        return st.integers(1 if positive else -(10**6), 10**6).map(lambda n: decimal.Decimal(n).scaleb(-2))
    if logical == "boolean":
        return st.booleans()
    if logical == "date":
        return st.dates(datetime.date(2000, 1, 1), datetime.date(2030, 12, 31))
    if logical == "timestamp":
        return st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2030, 12, 31))
    if logical == "uuid":
        return st.uuids()
    assert logical == "json", logical
    return st.sampled_from(JSON_VALUES)


def pk_strategy(logical: str) -> st.SearchStrategy[Any]:
    if logical in {"integer", "bigint"}:
        return st.integers(1, 10**6)
    if logical == "text":
        return st.text(alphabet="abcdef", min_size=1, max_size=6)
    return st.uuids()


def check_sql(kind: str, column: str) -> str:
    return f"{column} > 0" if kind == "gt0" else f"length({column}) < 20"


def satisfies(kind: str | None, value: Any) -> bool:
    if kind is None or value is None:
        return True
    return value > 0 if kind == "gt0" else len(value) < 20


_SCRATCH = duckdb.connect(":memory:")


def cast(value: Any, old: str, new: str) -> Any:
    """What DuckDB makes of ``value`` (of logical type ``old``) cast to ``new`` (the semantics, not the runtime)."""
    if value is None:
        return None
    types = {"text": "VARCHAR", "json": "JSON"}
    spell = {t: types.get(t, t.upper()) for t in (old, new)}
    row = _SCRATCH.execute(f"SELECT CAST(CAST(? AS {spell[old]}) AS {spell[new]})", [value]).fetchone()
    assert row is not None
    return row[0]


def norm(value: Any) -> tuple[str, Any]:
    """Compare values by Python type too (1 != 1.0 != True here)."""
    return type(value).__name__, value


# ------------------------------------------------------------------------------------------ model


@dataclass
class Fld:
    uid: int
    name: str
    type: str
    nullable: bool = False
    default: int | None = None  # index into DEFAULTS[type]
    check: str | None = None  # "gt0" | "len"
    ref: int | None = None  # uid of the referenced entity (its primary key)
    lineage: int = 0  # changes whenever the stored values are rewritten (type change, backfill)

    def spec(self, model: Model) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.default is not None:
            out["default"] = DEFAULTS[self.type][self.default][0]
        if self.check is not None:
            out["check"] = check_sql(self.check, self.name)
        if self.ref is not None:
            parent = model.entities[self.ref]
            out["references"] = f"{parent.name}.{parent.pk.name}"
        return out

    def default_value(self) -> Any:
        return None if self.default is None else DEFAULTS[self.type][self.default][1]


@dataclass
class Ent:
    uid: int
    name: str
    fields: list[Fld]
    unique: list[tuple[int, ...]] = field(default_factory=list)
    indexes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    rows: dict[Any, dict[int, Any]] = field(default_factory=dict)  # pk value -> field uid -> value

    pk_uid: int = 0

    @property
    def pk(self) -> Fld:
        return self.by_uid(self.pk_uid)

    def by_uid(self, uid: int) -> Fld:
        return next(f for f in self.fields if f.uid == uid)

    def names(self, uids: tuple[int, ...]) -> list[str]:
        return [self.by_uid(u).name for u in uids]

    def spec(self, model: Model) -> dict[str, Any]:
        return {
            "name": self.name,
            "primary_key": [self.pk.name],
            "fields": [f.spec(model) for f in self.fields],
            "unique": [self.names(u) for u in self.unique],
            "indexes": [{"name": n, "columns": self.names(c)} for n, c in self.indexes],
        }


@dataclass
class Model:
    entities: dict[int, Ent] = field(default_factory=dict)
    views: dict[str, tuple[int, tuple[int, ...], bool]] = field(default_factory=dict)  # entity, fields, filtered
    invariants: dict[str, int] = field(default_factory=dict)  # name -> entity uid

    def by_name(self, name: str) -> Ent:
        return next(e for e in self.entities.values() if e.name == name)

    def used(self, entity: int) -> set[int]:
        """Fields of ``entity`` named by views and invariants (they cannot be renamed or dropped)."""
        out: set[int] = set()
        for ent, fields, _ in self.views.values():
            if ent == entity:
                out |= {self.entities[entity].pk_uid, *fields}
        for ent in self.invariants.values():
            if ent == entity:
                out.add(self.entities[entity].pk_uid)
        return out

    def named(self, entity: int) -> bool:
        return any(e == entity for e, _, _ in self.views.values()) or entity in self.invariants.values()

    def children(self, entity: int) -> list[Ent]:
        return [e for e in self.entities.values() if any(f.ref == entity for f in e.fields)]

    def view_sql(self, name: str) -> str:
        ent_uid, uids, filtered = self.views[name]
        ent = self.entities[ent_uid]
        columns = ", ".join([ent.pk.name, *ent.names(uids)])
        where = f" WHERE {ent.by_uid(uids[0]).name} IS NOT NULL" if filtered and uids else ""
        return f"SELECT {columns} FROM {ent.name}{where}"

    def invariant_sql(self, name: str) -> str:
        ent = self.entities[self.invariants[name]]
        return f"SELECT {ent.pk.name} FROM {ent.name} WHERE {ent.pk.name} IS NULL"

    def tables(self) -> dict[str, list[dict[str, tuple[str, Any]]]]:
        """Every table's rows by column name, sorted by primary key."""
        out = {}
        for ent in self.entities.values():
            out[ent.name] = [
                {f.name: norm(row.get(f.uid)) for f in ent.fields} for _, row in sorted(ent.rows.items(), key=lambda kv: kv[0])
            ]
        return out

    def schema(self) -> dict[str, Any]:
        """The schema, order-insensitive where the spec's order carries no meaning."""
        return {
            "entities": {
                e.name: (
                    e.pk.name,
                    [(f.name, f.type, f.nullable, f.spec(self).get("default"), f.check is not None, f.spec(self).get("references"))
                     for f in e.fields],
                    sorted(tuple(e.names(u)) for u in e.unique),
                    sorted((n, tuple(e.names(c))) for n, c in e.indexes),
                )
                for e in self.entities.values()
            },
            "views": sorted(self.views),
            "invariants": sorted(self.invariants),
        }


def spec_schema(spec: Any) -> dict[str, Any]:
    """The same shape as ``Model.schema`` read from an AppSpec."""
    return {
        "entities": {
            e.name: (
                e.primary_key[0],
                [(f.name, f.type, f.nullable,
                  f.model_dump(mode="json")["default"] if f.default is not None else None,
                  f.check is not None, f.references) for f in e.fields],
                sorted(tuple(u) for u in e.unique),
                sorted((i.name, tuple(i.columns)) for i in e.indexes),
            )
            for e in spec.entities
        },
        "views": sorted(v.name for v in spec.views),
        "invariants": sorted(i.name for i in spec.invariants),
    }


# ---------------------------------------------------------------------------- operation generators


class Gen:
    """Draws one valid operation against a model, applies it to the model (schema and rows) and returns its JSON."""

    def __init__(self, machine: Machine, draw: Any, model: Model) -> None:
        self.m = machine
        self.draw = draw
        self.model = model

    def uid(self) -> int:
        self.m.counter += 1
        return self.m.counter

    def pick(self, items: list[Any]) -> Any:
        return self.draw(st.sampled_from(items))

    # ---- which operations apply

    def options(self) -> list[str]:
        m = self.model
        ents = list(m.entities.values())
        out = ["add_entity"] if len(ents) < 4 else []
        if not ents:
            return out
        out += ["add_field", "add_index", "add_view", "add_invariant", "rename_entity_or_field"]
        if self.droppable_fields():
            out.append("drop_field")
        if self.alterable_fields():
            out.append("alter_field")
        if self.unique_candidates():
            out.append("add_unique")
        if any(e.unique for e in ents):
            out.append("drop_unique")
        if any(e.indexes for e in ents):
            out.append("drop_index")
        if any(not m.named(e.uid) and not m.children(e.uid) for e in ents):
            out.append("drop_entity")
        if m.views:
            out += ["replace_view", "drop_view"]
        if m.invariants:
            out.append("drop_invariant")
        return out

    def op(self) -> dict[str, Any]:
        name = self.pick(self.options())
        result: dict[str, Any] = getattr(self, name)()
        return result

    # ---- helpers

    def droppable_fields(self) -> list[tuple[Ent, Fld]]:
        out = []
        for e in self.model.entities.values():
            used = self.model.used(e.uid)
            keyed = {u for cols in e.unique for u in cols} | {u for _, cols in e.indexes for u in cols}
            out += [(e, f) for f in e.fields if f.uid != e.pk_uid and f.uid not in used and f.uid not in keyed]
        return out

    def alterable_fields(self) -> list[tuple[Ent, Fld]]:
        return [(e, f) for e in self.model.entities.values() for f in e.fields if f.uid != e.pk_uid]

    def unique_candidates(self) -> list[tuple[Ent, tuple[int, ...]]]:
        out = []
        for e in self.model.entities.values():
            plain = [f.uid for f in e.fields if f.uid != e.pk_uid and f.type != "json"]
            sets = [(u,) for u in plain] + [(a, b) for i, a in enumerate(plain) for b in plain[i + 1:]]
            for cols in sets:
                if cols in e.unique:
                    continue
                seen = [tuple(row[u] for u in cols) for row in e.rows.values()]
                seen = [s for s in seen if None not in s]
                if len(seen) == len(set(seen)):
                    out.append((e, cols))
        return out

    def new_field(self, *, allow_required: bool) -> Fld:
        logical = self.pick(list(TYPES))
        fld = Fld(uid=self.uid(), name=f"f{self.m.counter}", type=logical)
        fld.nullable = self.draw(st.booleans())
        if self.draw(st.booleans()):
            fld.default = self.draw(st.integers(0, 1))
        if not fld.nullable and fld.default is None and not allow_required:
            fld.nullable = True
        if logical in NUMERIC and self.draw(st.integers(0, 3)) == 0:
            fld.check = "gt0"
        elif logical == "text" and self.draw(st.integers(0, 3)) == 0:
            fld.check = "len"
        return fld

    # ---- entities

    def add_entity(self) -> dict[str, Any]:
        uid = self.uid()
        pk = Fld(uid=self.uid(), name="id", type=self.pick(list(PK_TYPES)))
        ent = Ent(uid=uid, name=f"e{uid}", fields=[pk], pk_uid=pk.uid)
        for _ in range(self.draw(st.integers(1, 4))):
            ent.fields.append(self.new_field(allow_required=True))
        parents = list(self.model.entities.values())
        if parents and self.draw(st.booleans()):
            parent = self.pick(parents)
            ent.fields.append(Fld(uid=self.uid(), name=f"r{self.m.counter}", type=parent.pk.type,
                                  nullable=self.draw(st.booleans()), ref=parent.uid))
        plain = [f.uid for f in ent.fields[1:] if f.type != "json"]
        if plain and self.draw(st.booleans()):
            ent.unique.append(tuple(self.draw(st.lists(st.sampled_from(plain), min_size=1, max_size=2, unique=True))))
        if plain and self.draw(st.booleans()):
            cols = tuple(self.draw(st.lists(st.sampled_from(plain), min_size=1, max_size=2, unique=True)))
            ent.indexes.append((f"ix{self.uid()}", cols))
        self.model.entities[uid] = ent
        return {"op": "add_entity", "entity": ent.spec(self.model)}

    def drop_entity(self) -> dict[str, Any]:
        m = self.model
        ent = self.pick([e for e in m.entities.values() if not m.named(e.uid) and not m.children(e.uid)])
        del m.entities[ent.uid]
        return {"op": "drop_entity", "entity": ent.name}

    def rename_entity_or_field(self) -> dict[str, Any]:
        m = self.model
        ent = self.pick(list(m.entities.values()))
        used = m.used(ent.uid)
        fields = [f for f in ent.fields if f.uid not in used]
        if not m.named(ent.uid) and (not fields or self.draw(st.booleans())):
            old, ent.name = ent.name, f"e{self.uid()}"
            return {"op": "rename_entity", "entity": old, "new_name": ent.name}
        if not fields:
            return self.add_field()
        fld = self.pick(fields)
        old, fld.name = fld.name, f"f{self.uid()}"
        return {"op": "rename_field", "entity": ent.name, "field": old, "new_name": fld.name}

    # ---- fields

    def add_field(self) -> dict[str, Any]:
        ent = self.pick(list(self.model.entities.values()))
        fld = self.new_field(allow_required=not ent.rows)
        parents = [e for e in self.model.entities.values() if e.uid != ent.uid]
        if parents and self.draw(st.integers(0, 3)) == 0:
            parent = self.pick(parents)
            fld = Fld(uid=fld.uid, name=f"r{fld.uid}", type=parent.pk.type, nullable=True, ref=parent.uid)
        position = self.draw(st.none() | st.integers(1, len(ent.fields)))
        ent.fields.insert(len(ent.fields) if position is None else position, fld)
        for row in ent.rows.values():
            row[fld.uid] = fld.default_value()
        op: dict[str, Any] = {"op": "add_field", "entity": ent.name, "field": fld.spec(self.model)}
        if position is not None:
            op["position"] = position
        return op

    def drop_field(self) -> dict[str, Any]:
        ent, fld = self.pick(self.droppable_fields())
        ent.fields.remove(fld)
        for row in ent.rows.values():
            row.pop(fld.uid)
        return {"op": "drop_field", "entity": ent.name, "field": fld.name}

    def alter_field(self) -> dict[str, Any]:
        ent, fld = self.pick(self.alterable_fields())
        op: dict[str, Any] = {"op": "alter_field", "entity": ent.name, "field": fld.name}
        in_unique = any(fld.uid in cols for cols in ent.unique)
        changes = [
            (new, lossless) for new, lossless in TYPE_CHANGES[fld.type]
            if fld.default is None and fld.check is None and fld.ref is None and (lossless or not in_unique)
        ]
        if changes and self.draw(st.integers(0, 2)) == 0:
            new, _ = self.pick(changes)
            for row in ent.rows.values():
                row[fld.uid] = cast(row[fld.uid], fld.type, new)
            fld.type, fld.lineage = new, self.uid()
            op["type"] = new
            return op
        stuck_null = fld.nullable and fld.ref is not None and any(row[fld.uid] is None for row in ent.rows.values())
        kinds = ([] if stuck_null else ["nullable"]) + ([] if fld.ref is not None else ["default"])
        if fld.type in NUMERIC or fld.type == "text":
            kinds.append("check")
        for kind in self.draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=2, unique=True)):
            getattr(self, f"_alter_{kind}")(ent, fld, op)
        return op

    def _alter_nullable(self, ent: Ent, fld: Fld, op: dict[str, Any]) -> None:
        if not fld.nullable:
            fld.nullable = op["nullable"] = True
            return
        fld.nullable, op["nullable"] = False, False
        has_null = any(row[fld.uid] is None for row in ent.rows.values())
        if has_null or self.draw(st.booleans()):
            spec_value, value = DEFAULTS[fld.type][0]
            op["backfill"] = spec_value
            if has_null:
                fld.lineage = self.uid()
            for row in ent.rows.values():
                if row[fld.uid] is None:
                    row[fld.uid] = value

    def _alter_default(self, ent: Ent, fld: Fld, op: dict[str, Any]) -> None:
        if fld.default is not None and self.draw(st.booleans()):
            fld.default, op["drop_default"] = None, True
            return
        fld.default = 1 if fld.default == 0 else 0
        op["default"] = DEFAULTS[fld.type][fld.default][0]

    def _alter_check(self, ent: Ent, fld: Fld, op: dict[str, Any]) -> None:
        if fld.check is not None:
            fld.check, op["drop_check"] = None, True
            return
        kind = "len" if fld.type == "text" else "gt0"
        values = [row[fld.uid] for row in ent.rows.values()] + [fld.default_value()]
        if all(satisfies(kind, v) for v in values):
            fld.check = kind
            op["check"] = check_sql(kind, fld.name)
        elif "default" not in op and "drop_default" not in op:  # fall back to another change
            fld.default = 1 if fld.default == 0 else 0
            op["default"] = DEFAULTS[fld.type][fld.default][0]

    # ---- unique sets and indexes

    def add_unique(self) -> dict[str, Any]:
        ent, cols = self.pick(self.unique_candidates())
        ent.unique.append(cols)
        return {"op": "add_unique", "entity": ent.name, "columns": ent.names(cols)}

    def drop_unique(self) -> dict[str, Any]:
        ent = self.pick([e for e in self.model.entities.values() if e.unique])
        cols = self.pick(ent.unique)
        ent.unique.remove(cols)
        return {"op": "drop_unique", "entity": ent.name, "columns": ent.names(cols)}

    def add_index(self) -> dict[str, Any]:
        ent = self.pick(list(self.model.entities.values()))
        plain = [f.uid for f in ent.fields if f.type != "json"]
        cols = tuple(self.draw(st.lists(st.sampled_from(plain), min_size=1, max_size=2, unique=True)))
        name = f"ix{self.uid()}"
        ent.indexes.append((name, cols))
        return {"op": "add_index", "entity": ent.name, "index": {"name": name, "columns": ent.names(cols)}}

    def drop_index(self) -> dict[str, Any]:
        ent = self.pick([e for e in self.model.entities.values() if e.indexes])
        index = self.pick(ent.indexes)
        ent.indexes.remove(index)
        return {"op": "drop_index", "entity": ent.name, "name": index[0]}

    # ---- views and invariants

    def _view(self, name: str) -> dict[str, Any]:
        ent = self.pick(list(self.model.entities.values()))
        others = [f.uid for f in ent.fields if f.uid != ent.pk_uid]
        uids = tuple(self.draw(st.lists(st.sampled_from(others), max_size=2, unique=True))) if others else ()
        self.model.views[name] = (ent.uid, uids, self.draw(st.booleans()))
        return {"name": name, "sql": self.model.view_sql(name)}

    def add_view(self) -> dict[str, Any]:
        return {"op": "add_view", "view": self._view(f"v{self.uid()}")}

    def replace_view(self) -> dict[str, Any]:
        return {"op": "replace_view", "view": self._view(self.pick(sorted(self.model.views)))}

    def drop_view(self) -> dict[str, Any]:
        name = self.pick(sorted(self.model.views))
        del self.model.views[name]
        return {"op": "drop_view", "name": name}

    def add_invariant(self) -> dict[str, Any]:
        name = f"inv{self.uid()}"
        self.model.invariants[name] = self.pick(list(self.model.entities))
        return {"op": "add_invariant", "invariant": {"name": name, "sql": self.model.invariant_sql(name)}}

    def drop_invariant(self) -> dict[str, Any]:
        name = self.pick(sorted(self.model.invariants))
        del self.model.invariants[name]
        return {"op": "drop_invariant", "name": name}


# ---------------------------------------------------------------------------------- state machine


@dataclass
class VersionRecord:
    kind: str  # init | deploy | rollback
    parent: int | None
    restores: int | None
    model: Model  # schema and rows when this version was last current
    epoch: int  # the write epoch of ``model``'s rows
    hash: str
    ops: list[dict[str, Any]] = field(default_factory=list)


def read_tables(rt: Runtime, model: Model) -> dict[str, list[dict[str, tuple[str, Any]]]]:
    out = {}
    with rt.engine.snapshot() as cursor:
        for ent in model.entities.values():
            result = cursor.execute(f'SELECT * FROM "{ent.name}"')
            names = [d[0] for d in result.description or []]
            rows = [dict(zip(names, (norm(v) for v in row), strict=True)) for row in result.fetchall()]
            out[ent.name] = sorted(rows, key=lambda r: r[ent.pk.name][1])
    return out


def load_rows(model: Model, tables: dict[str, list[dict[str, tuple[str, Any]]]]) -> None:
    """Replace the model's rows with what the database holds (after a step the model cannot predict exactly)."""
    for ent in model.entities.values():
        ent.rows = {
            row[ent.pk.name][1]: {f.uid: row[f.name][1] for f in ent.fields} for row in tables[ent.name]
        }


class Machine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="buttress-props-"))
        self.rt = Runtime.open(self.dir / "app.duckdb", audit_reads=False)
        self.counter = 0
        self.epoch = 0
        self.model = Model()
        number, spec = self.rt.current
        self.current = number
        self.versions: dict[int, VersionRecord] = {
            number: VersionRecord("init", None, None, Model(), 0, spec.hash())
        }
        self.redeploy: tuple[int, Any] | None = None  # (reversed deploy version, expected tables or None)
        self.log: list[str] = []

    def teardown(self) -> None:
        self.rt.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- bookkeeping

    def history(self, number: int) -> list[int]:
        chain = []
        while number != 0:
            record = self.versions[number]
            if record.kind == "rollback":
                assert record.restores is not None
                number = record.restores
            else:
                chain.append(number)
                assert record.parent is not None
                number = record.parent
        return chain[::-1]

    def remember(self) -> None:
        """The current version's record follows the model (rows written at a version belong to it)."""
        record = self.versions[self.current]
        record.model, record.epoch = copy.deepcopy(self.model), self.epoch

    def fail(self, message: str) -> None:
        pytest.fail(message + "\nsteps:\n  " + "\n  ".join(self.log[-30:]), pytrace=False)

    def check_tables(self, expected: dict[str, Any], what: str) -> None:
        actual = read_tables(self.rt, self.model)
        if actual != expected:
            diffs = []
            for name in sorted(set(actual) | set(expected)):
                a, e = actual.get(name), expected.get(name)
                if a != e:
                    diffs.append(f"table {name}:\n    expected {e}\n    actual   {a}")
            self.fail(f"{what}: data differs\n  " + "\n  ".join(diffs))

    # ---- rules

    @rule(data=st.data())
    def deploy(self, data: st.DataObject) -> None:
        model = copy.deepcopy(self.model)
        gen = Gen(self, data.draw, model)
        ops = [gen.op() for _ in range(data.draw(st.integers(1, 3), label="operations"))]
        self.log.append(f"deploy {json.dumps(ops, default=str)}")
        self._deploy(ops, model)

    def _deploy(self, ops: list[dict[str, Any]], model: Model, expected: Any = None) -> None:
        try:
            proposal = self.rt.propose(ops)
            report = self.rt.dry_run(proposal.proposal_id)
            if not report.passed:
                self.fail(f"dry-run of valid operations failed: {report.error}")
            result = self.rt.deploy(proposal.proposal_id)
        except ButtressError as error:
            self.fail(f"valid operations were refused: {error!r} {error.details}")
        restored = any(step.restores for step in proposal.steps)
        parent = self.current
        self.model = model
        self.current = result.version
        if expected is not None:
            self.check_tables(expected, "redeploy after rollback")
        elif not restored:
            self.check_tables(model.tables(), "deploy")
        load_rows(self.model, read_tables(self.rt, self.model))
        self.versions[result.version] = VersionRecord("deploy", parent, None, copy.deepcopy(self.model), self.epoch,
                                                      result.hash, ops)
        self.redeploy = None

    @precondition(lambda self: bool(self.history(self.current)))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        history = self.history(self.current)
        ancestors = [n for n in self.versions if n < self.current and history[: len(self.history(n))] == self.history(n)]
        to_version = data.draw(st.none() | st.sampled_from(ancestors), label="to_version")
        if to_version is None:
            last = self.versions[history[-1]]
            assert last.parent is not None
            target = last.parent
        else:
            target = to_version
        record = self.versions[target]
        exact = record.epoch == self.epoch
        self.log.append(f"rollback(to_version={to_version}) -> restores {target} (exact={exact})")
        before_model, before_tables = self.model, read_tables(self.rt, self.model)
        try:
            result = self.rt.rollback(to_version=to_version)
        except ButtressError as error:
            if error.code == Code.ROLLBACK_NOT_LOSSLESS and not exact:
                self.log.append(f"  refused: {error.message}")
                self.check_tables(before_tables, "refused rollback")
                return
            self.fail(f"rollback to {target} was refused: {error!r} {error.details}")
        if result.restored_version != target:
            self.fail(f"rollback restored {result.restored_version}, expected {target}")
        previous = self.current
        self.current = result.version
        self.model = copy.deepcopy(record.model)
        if exact:
            self.check_tables(record.model.tables(), f"rollback to version {target}")
        else:
            self._check_kept(before_model, before_tables)
            load_rows(self.model, read_tables(self.rt, self.model))
        self.versions[result.version] = VersionRecord("rollback", previous, target, copy.deepcopy(self.model),
                                                      self.epoch, result.hash)
        reversed_ = history[len(self.history(target)):]
        first = reversed_[0] if reversed_ else None
        if first is None:
            self.redeploy = None
        elif first == previous:
            self.redeploy = (first, before_tables)
        else:
            self.redeploy = (first, self.versions[first].model.tables() if self.versions[first].epoch == self.epoch else None)

    def _check_kept(self, before: Model, before_tables: dict[str, Any]) -> None:
        """With rows written since the target version: rows neither lost nor invented, untouched values kept."""
        after_tables = read_tables(self.rt, self.model)
        for ent in self.model.entities.values():
            old = before.entities.get(ent.uid)
            if old is None:
                continue
            old_rows = {row[old.pk.name][1]: row for row in before_tables[old.name]}
            new_rows = {row[ent.pk.name][1]: row for row in after_tables[ent.name]}
            if set(old_rows) != set(new_rows):
                self.fail(f"rollback changed the rows of {ent.name}: lost {set(old_rows) - set(new_rows)}, "
                          f"invented {set(new_rows) - set(old_rows)}")
            for fld in ent.fields:
                same = next((f for f in old.fields if f.uid == fld.uid), None)
                if same is None or same.type != fld.type or same.lineage != fld.lineage:
                    continue
                for key, row in new_rows.items():
                    if row[fld.name] != old_rows[key][same.name]:
                        self.fail(f"rollback changed {ent.name}.{fld.name} of row {key!r}: "
                                  f"{old_rows[key][same.name]} -> {row[fld.name]}")

    @precondition(lambda self: self.redeploy is not None)
    @rule()
    def redeploy_reversed(self) -> None:
        assert self.redeploy is not None
        number, expected = self.redeploy
        record = self.versions[number]
        self.log.append(f"redeploy the operations of version {number} (exact={expected is not None})")
        self._deploy(record.ops, copy.deepcopy(record.model), expected)
        if self.versions[self.current].hash != record.hash:
            self.fail(f"redeploying version {number}'s operations gave a different spec")

    @precondition(lambda self: bool(self.model.entities))
    @rule(data=st.data())
    def insert_rows(self, data: st.DataObject) -> None:
        ent: Ent = data.draw(st.sampled_from(list(self.model.entities.values())), label="entity")
        model = self.model
        rows: list[tuple[dict[int, Any], list[int]]] = []
        for _ in range(data.draw(st.integers(1, 4), label="rows")):
            row = self._draw_row(data, ent, [*ent.rows.values(), *(values for values, _ in rows)])
            if row is not None:
                rows.append(row)
        if not rows:
            return
        self.log.append(f"insert into {ent.name}: {rows}")
        with self.rt.engine.transaction() as tx:
            for values, given in rows:
                names = [ent.by_uid(u).name for u in given]
                tx.execute(f'INSERT INTO "{ent.name}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})',
                           [values[u] for u in given])
        for values, _ in rows:
            ent.rows[values[ent.pk_uid]] = values
        self.epoch += 1
        self.redeploy = None
        self.check_tables(model.tables(), f"insert into {ent.name}")
        self.remember()

    def _draw_row(self, data: st.DataObject, ent: Ent, existing: list[dict[int, Any]]) -> tuple[dict[int, Any], list[int]] | None:
        values: dict[int, Any] = {}
        given: list[int] = []
        for fld in ent.fields:
            if fld.uid == ent.pk_uid:
                key = data.draw(pk_strategy(fld.type), label="key")
                if any(row[ent.pk_uid] == key for row in existing):
                    return None
                values[fld.uid] = key
                given.append(fld.uid)
                continue
            if fld.ref is not None:
                parent = self.model.entities[fld.ref]
                options = sorted(parent.rows, key=str)
                choices = ([None] if fld.nullable else []) + options
                if not choices:
                    return None
                values[fld.uid] = data.draw(st.sampled_from(choices), label=fld.name)
            elif fld.default is not None and data.draw(st.booleans(), label=f"{fld.name} omitted"):
                values[fld.uid] = fld.default_value()
                continue
            elif fld.nullable and data.draw(st.integers(0, 3), label=f"{fld.name} null") == 0:
                values[fld.uid] = None
            else:
                values[fld.uid] = data.draw(value_strategy(fld.type, fld.check), label=fld.name)
            given.append(fld.uid)
        for cols in ent.unique:
            new = tuple(values[u] for u in cols)
            if None not in new and any(tuple(row[u] for u in cols) == new for row in existing):
                return None
        return values, given

    # ---- after every step

    @invariant()
    def catalog_audit_and_spec(self) -> None:
        drift = self.rt.check_drift()
        if drift:
            self.fail(f"catalog drift: {drift}")
        audit = self.rt.verify_audit()
        if not audit.ok:
            self.fail(f"audit chain broken: {audit}")
        number, spec = self.rt.current
        if number != self.current:
            self.fail(f"runtime is at version {number}, the model at {self.current}")
        if spec_schema(spec) != self.model.schema():
            self.fail(f"active spec differs from the model:\n  spec  {spec_schema(spec)}\n  model {self.model.schema()}")


Machine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
TestRandomChanges = Machine.TestCase


def test_deploy_ops_helper_refuses_a_failing_dry_run(rt: Runtime) -> None:
    """The shared ``deploy_ops`` helper must not hide a failed dry-run."""
    deploy_ops(rt, [{"op": "add_entity", "entity": {"name": "t", "primary_key": ["id"],
                                                    "fields": [{"name": "id", "type": "integer"}]}}])
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(AssertionError):
        deploy_ops(rt, [{"op": "add_field", "entity": "t", "field": {"name": "x", "type": "integer"}}])
