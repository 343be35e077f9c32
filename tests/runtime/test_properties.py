"""Property tests: random valid change sequences, deployed and rolled back, keep catalog, audit and data exact.

A ``RuleBasedStateMachine`` keeps an independent model of the application (entities, fields, keys,
indexes, views, invariants, and every row keyed by field identity). Each rule generates a valid
step from the model, runs it through the public ``Runtime`` API and then checks:

* ``check_drift() == []`` and ``verify_audit().ok`` after every step;
* the active spec equals the model's schema;
* after a deploy, every table holds exactly the rows the model predicts for the operations
  (defaults filled, values cast, columns renamed or dropped);
* after a rollback, the spec is exactly the target version's, and every table equals row by row
  the data it had at that version when no rows were written since; with writes in between, every
  row of the target version comes back exactly, no row is lost or invented, and values of fields
  whose stored values no change rewrote are kept;
* deploying the reversed proposal's operations again gives the data it had before the rollback.

Entities have 2-6 fields of ten logical types (nullable or not, constant defaults, CHECKs), single or
composite primary keys, foreign keys to earlier primary keys or single-field unique sets, unique sets
and indexes. Each example uses a fresh DuckDB file in its own temporary directory.

The defects this search found are reproduced, minimally, by the regression tests at the end of the
module.
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

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from runtime.errors import ButtressError, Code
from runtime.runtime import Runtime
from runtime.store.engine import connect
from tests.conftest import deploy_ops

# ----------------------------------------------------------------------------------------- values

TYPES = (
    "text",
    "integer",
    "bigint",
    "double",
    "decimal(10,2)",
    "boolean",
    "date",
    "timestamp",
    "uuid",
    "json",
)
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


_SCRATCH = connect(":memory:")


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
    ref: tuple[int, int] | None = None  # (entity uid, field uid) this foreign key references
    lineage: int = 0  # changes whenever the stored values are rewritten (type change, backfill)

    def spec(self, model: Model) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.default is not None:
            out["default"] = DEFAULTS[self.type][self.default][0]
        if self.check is not None:
            out["check"] = check_sql(self.check, self.name)
        if self.ref is not None:
            parent = model.entities[self.ref[0]]
            out["references"] = f"{parent.name}.{parent.by_uid(self.ref[1]).name}"
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
    rows: dict[tuple[Any, ...], dict[int, Any]] = field(default_factory=dict)  # key -> field uid -> value
    pk: tuple[int, ...] = ()  # uids of the primary-key fields

    def key(self, values: dict[int, Any]) -> tuple[Any, ...]:
        return tuple(values[u] for u in self.pk)

    def by_uid(self, uid: int) -> Fld:
        return next(f for f in self.fields if f.uid == uid)

    def names(self, uids: tuple[int, ...]) -> list[str]:
        return [self.by_uid(u).name for u in uids]

    def spec(self, model: Model) -> dict[str, Any]:
        return {
            "name": self.name,
            "primary_key": self.names(self.pk),
            "fields": [f.spec(model) for f in self.fields],
            "unique": [self.names(u) for u in self.unique],
            "indexes": [{"name": n, "columns": self.names(c)} for n, c in self.indexes],
        }


@dataclass
class Model:
    entities: dict[int, Ent] = field(default_factory=dict)
    views: dict[str, tuple[int, tuple[int, ...], bool]] = field(
        default_factory=dict
    )  # entity, fields, filtered
    invariants: dict[str, int] = field(default_factory=dict)  # name -> entity uid

    def by_name(self, name: str) -> Ent:
        return next(e for e in self.entities.values() if e.name == name)

    def used(self, entity: int) -> set[int]:
        """Fields of ``entity`` named by views and invariants (they cannot be renamed or dropped)."""
        out: set[int] = set()
        for ent, fields, _ in self.views.values():
            if ent == entity:
                out |= {*self.entities[entity].pk, *fields}
        for ent in self.invariants.values():
            if ent == entity:
                out |= set(self.entities[entity].pk)
        return out

    def named(self, entity: int) -> bool:
        return any(e == entity for e, _, _ in self.views.values()) or entity in self.invariants.values()

    def children(self, entity: int) -> list[Ent]:
        return [e for e in self.entities.values() if any(f.ref and f.ref[0] == entity for f in e.fields)]

    def referenced(self, entity: int) -> set[int]:
        """Fields of ``entity`` that foreign keys point at."""
        return {f.ref[1] for e in self.entities.values() for f in e.fields if f.ref and f.ref[0] == entity}

    def targets(self) -> list[tuple[Ent, Fld]]:
        """What a new foreign key may reference: single-field primary keys and single-field unique sets."""
        out = []
        for e in self.entities.values():
            singles = [cols[0] for cols in [e.pk, *e.unique] if len(cols) == 1]
            out += [(e, e.by_uid(u)) for u in dict.fromkeys(singles) if e.by_uid(u).type != "json"]
        return out

    def descendants(self, entity: int) -> set[int]:
        """Entities referencing ``entity`` directly or transitively."""
        found: set[int] = set()
        frontier = [entity]
        while frontier:
            for child in self.children(frontier.pop()):
                if child.uid not in found:
                    found.add(child.uid)
                    frontier.append(child.uid)
        return found

    def view_sql(self, name: str) -> str:
        ent_uid, uids, filtered = self.views[name]
        ent = self.entities[ent_uid]
        columns = ", ".join([*ent.names(ent.pk), *ent.names(uids)])
        where = f" WHERE {ent.by_uid(uids[0]).name} IS NOT NULL" if filtered and uids else ""
        return f"SELECT {columns} FROM {ent.name}{where}"

    def invariant_sql(self, name: str) -> str:
        ent = self.entities[self.invariants[name]]
        key = ent.by_uid(ent.pk[0]).name
        return f"SELECT {key} FROM {ent.name} WHERE {key} IS NULL"

    def tables(self) -> dict[str, list[dict[str, tuple[str, Any]]]]:
        """Every table's rows by column name, sorted by primary key."""
        out = {}
        for ent in self.entities.values():
            out[ent.name] = [
                {f.name: norm(row.get(f.uid)) for f in ent.fields}
                for _, row in sorted(ent.rows.items(), key=lambda kv: kv[0])
            ]
        return out

    def schema(self) -> dict[str, Any]:
        """The schema, order-insensitive where the spec's order carries no meaning."""
        return {
            "entities": {
                e.name: (
                    tuple(e.names(e.pk)),
                    [
                        (
                            f.name,
                            f.type,
                            f.nullable,
                            f.spec(self).get("default"),
                            f.check is not None,
                            f.spec(self).get("references"),
                        )
                        for f in e.fields
                    ],
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
                tuple(e.primary_key),
                [
                    (
                        f.name,
                        f.type,
                        f.nullable,
                        f.model_dump(mode="json")["default"] if f.default is not None else None,
                        f.check is not None,
                        f.references,
                    )
                    for f in e.fields
                ],
                sorted(tuple(u) for u in e.unique),
                sorted((i.name, tuple(i.columns)) for i in e.indexes),
            )
            for e in spec.entities
        },
        "views": sorted(v.name for v in spec.views),
        "invariants": sorted(i.name for i in spec.invariants),
    }


# ---------------------------------------------------------------------------- operation generators


def has_null(ent: Ent, fld: Fld) -> bool:
    return any(row[fld.uid] is None for row in ent.rows.values())


def alter_kinds(ent: Ent, fld: Fld) -> list[str]:
    """The attributes of ``fld`` the generator may change (type changes are chosen separately)."""
    kinds = []
    keyed = fld.ref is not None or any(fld.uid in cols for cols in ent.unique)
    if not (fld.nullable and keyed and has_null(ent, fld)):  # a backfill would break the key
        kinds.append("nullable")
    if fld.ref is None:
        kinds.append("default")
    kind = "len" if fld.type == "text" else "gt0"
    if (fld.type in NUMERIC or fld.type == "text") and (
        fld.check is not None
        or "default" in kinds  # the fallback when the rows do not satisfy the check
        or all(satisfies(kind, row[fld.uid]) for row in ent.rows.values())
    ):
        kinds.append("check")
    return kinds


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
        if self.type_changes():
            out.append("change_type")
        if self.unique_candidates():
            out.append("add_unique")
        if self.droppable_uniques():
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
            out += [
                (e, f) for f in e.fields if f.uid not in e.pk and f.uid not in used and f.uid not in keyed
            ]
        return out

    def droppable_uniques(self) -> list[tuple[Ent, tuple[int, ...]]]:
        return [
            (e, cols)
            for e in self.model.entities.values()
            for cols in e.unique
            if not (len(cols) == 1 and cols[0] in self.model.referenced(e.uid))
        ]

    def alterable_fields(self) -> list[tuple[Ent, Fld]]:
        return [
            (e, f)
            for e in self.model.entities.values()
            for f in e.fields
            if f.uid not in e.pk and alter_kinds(e, f)
        ]

    def unique_candidates(self) -> list[tuple[Ent, tuple[int, ...]]]:
        out = []
        for e in self.model.entities.values():
            plain = [f.uid for f in e.fields if f.uid not in e.pk and f.type != "json"]
            sets = [(u,) for u in plain] + [(a, b) for i, a in enumerate(plain) for b in plain[i + 1 :]]
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
        ent = Ent(
            uid=uid, name=f"e{uid}", fields=[Fld(uid=self.uid(), name="id", type=self.pick(list(PK_TYPES)))]
        )
        if self.draw(st.integers(0, 3)) == 0:  # a composite key
            ent.fields.append(Fld(uid=self.uid(), name="k2", type=self.pick(["integer", "text"])))
        ent.pk = tuple(f.uid for f in ent.fields)
        for _ in range(self.draw(st.integers(1, 4))):
            ent.fields.append(self.new_field(allow_required=True))
        targets = self.model.targets()
        if targets and self.draw(st.booleans()):
            parent, key = self.pick(targets)
            ent.fields.append(
                Fld(
                    uid=self.uid(),
                    name=f"r{self.m.counter}",
                    type=key.type,
                    nullable=self.draw(st.booleans()),
                    ref=(parent.uid, key.uid),
                )
            )
        plain = [f.uid for f in ent.fields if f.uid not in ent.pk and f.type != "json"]
        if plain and self.draw(st.booleans()):
            ent.unique.append(
                tuple(self.draw(st.lists(st.sampled_from(plain), min_size=1, max_size=2, unique=True)))
            )
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
        # A foreign key to a descendant would close a cycle (refused: test_foreign_key_cycle_is_refused_at_propose).
        targets = [
            (e, k)
            for e, k in self.model.targets()
            if e.uid != ent.uid and e.uid not in self.model.descendants(ent.uid)
        ]
        if targets and self.draw(st.integers(0, 3)) == 0:
            parent, key = self.pick(targets)
            fld = Fld(
                uid=fld.uid, name=f"r{fld.uid}", type=key.type, nullable=True, ref=(parent.uid, key.uid)
            )
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

    def type_changes(self) -> list[tuple[Ent, Fld, str]]:
        out = []
        for ent in self.model.entities.values():
            referenced = self.model.referenced(ent.uid)
            for fld in ent.fields:
                if fld.check is not None or fld.ref is not None or fld.uid in referenced or fld.uid in ent.pk:
                    continue
                in_unique = any(fld.uid in cols for cols in ent.unique)
                out += [
                    (ent, fld, new) for new, lossless in TYPE_CHANGES[fld.type] if lossless or not in_unique
                ]
        return out

    def change_type(self) -> dict[str, Any]:
        ent, fld, new = self.pick(self.type_changes())
        op: dict[str, Any] = {"op": "alter_field", "entity": ent.name, "field": fld.name, "type": new}
        if fld.default is not None:  # the constant may not fit the new type
            fld.default, op["drop_default"] = None, True
        for row in ent.rows.values():
            row[fld.uid] = cast(row[fld.uid], fld.type, new)
        fld.type, fld.lineage = new, self.uid()
        return op

    def alter_field(self) -> dict[str, Any]:
        ent, fld = self.pick(self.alterable_fields())
        op: dict[str, Any] = {"op": "alter_field", "entity": ent.name, "field": fld.name}
        for kind in self.draw(
            st.lists(st.sampled_from(alter_kinds(ent, fld)), min_size=1, max_size=2, unique=True)
        ):
            getattr(self, f"_alter_{kind}")(ent, fld, op)
        return op

    def _alter_nullable(self, ent: Ent, fld: Fld, op: dict[str, Any]) -> None:
        if not fld.nullable:
            fld.nullable = op["nullable"] = True
            return
        fld.nullable, op["nullable"] = False, False
        has_null = any(row[fld.uid] is None for row in ent.rows.values())
        if has_null or self.draw(st.booleans()):
            spec_value, value = (
                (5, "5") if fld.type == "json" else DEFAULTS[fld.type][0]
            )  # a backfill is a scalar
            op["backfill"] = spec_value
            if has_null:
                fld.lineage = self.uid()
            for row in ent.rows.values():
                if row[fld.uid] is None:
                    row[fld.uid] = value

    def _alter_default(self, ent: Ent, fld: Fld, op: dict[str, Any]) -> None:
        if "default" in op:  # already changed by the check's fallback
            return
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
        elif "default" not in op and "drop_default" not in op and "default" in alter_kinds(ent, fld):
            fld.default = 1 if fld.default == 0 else 0
            op["default"] = DEFAULTS[fld.type][fld.default][0]

    # ---- unique sets and indexes

    def add_unique(self) -> dict[str, Any]:
        ent, cols = self.pick(self.unique_candidates())
        ent.unique.append(cols)
        return {"op": "add_unique", "entity": ent.name, "columns": ent.names(cols)}

    def drop_unique(self) -> dict[str, Any]:
        ent, cols = self.pick(self.droppable_uniques())
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
        others = [f.uid for f in ent.fields if f.uid not in ent.pk]
        uids = tuple(self.draw(st.lists(st.sampled_from(others), max_size=2, unique=True))) if others else ()
        self.model.views[name] = (ent.uid, uids, self.draw(st.booleans()))
        return {"name": name, "sql": self.model.view_sql(name)}

    def add_view(self) -> dict[str, Any]:
        name = f"v{self.uid()}"
        return {"op": "add_view", "view": self._view(name)}

    def replace_view(self) -> dict[str, Any]:
        return {
            "op": "replace_view",
            "view": self._view(self.pick(sorted(self.model.views))),
        }

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
            keys = ent.names(ent.pk)
            out[ent.name] = sorted(rows, key=lambda r: tuple(r[k][1] for k in keys))
    return out


def load_rows(model: Model, tables: dict[str, list[dict[str, tuple[str, Any]]]]) -> None:
    """Replace the model's rows with what the database holds (after a step the model cannot predict exactly)."""
    for ent in model.entities.values():
        ent.rows = {}
        for row in tables[ent.name]:
            values = {f.uid: row[f.name][1] for f in ent.fields}
            ent.rows[ent.key(values)] = values


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
    def step(self, data: st.DataObject) -> None:
        """One step, chosen among those that apply (one rule, so that no kind of step crowds out the others)."""
        steps = [
            "insert_rows",
            "rollback",
            "deploy",
            "redeploy_reversed",
            "insert_rows",
            "deploy",
            "rollback",
        ]
        applies = {
            "deploy": True,
            "insert_rows": bool(self.model.entities),
            "rollback": bool(self.history(self.current)),
            "redeploy_reversed": self.redeploy is not None,
        }
        name = data.draw(st.sampled_from([s for s in steps if applies[s]]), label="step")
        if name == "redeploy_reversed":
            self.redeploy_reversed()
        else:
            getattr(self, name)(data)

    def deploy(self, data: st.DataObject) -> None:
        model = copy.deepcopy(self.model)
        gen = Gen(self, data.draw, model)
        ops = [gen.op() for _ in range(data.draw(st.integers(1, 3), label="operations"))]
        self.log.append(f"deploy {json.dumps(ops, default=str)}")
        self._deploy(ops, model)

    def _deploy(
        self, ops: list[dict[str, Any]], model: Model, expected: Any = None, *, predicted: bool = True
    ) -> None:
        """Propose, dry-run and deploy. The tables must then equal ``expected`` if given, else the model's rows if ``predicted`` and
        nothing was restored from retained data.
        """
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
        elif predicted and not restored:
            self.check_tables(model.tables(), "deploy")
        load_rows(self.model, read_tables(self.rt, self.model))
        self.versions[result.version] = VersionRecord(
            "deploy", parent, None, copy.deepcopy(self.model), self.epoch, result.hash, ops
        )
        self.redeploy = None

    def rollback(self, data: st.DataObject) -> None:
        history = self.history(self.current)
        ancestors = [
            n
            for n in self.versions
            if n < self.current and history[: len(self.history(n))] == self.history(n)
        ]
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
            nothing = error.code == Code.ROLLBACK_NOTHING and self.history(target) == history
            if (error.code == Code.ROLLBACK_NOT_LOSSLESS and not exact) or nothing:
                self.log.append(f"  refused: {error.message}")
                self.check_tables(before_tables, "refused rollback")
                return
            self.fail(f"rollback to {target} was refused: {error!r} {error.details}")
        if result.restored_version != target:
            self.fail(f"rollback restored {result.restored_version}, expected {target}")
        if result.hash != record.hash:
            self.fail(
                f"rollback to {target} gave spec {self.rt.current[1]!r}, not the spec of version {target}"
            )
        previous = self.current
        self.current = result.version
        self.model = copy.deepcopy(record.model)
        if exact:
            self.check_tables(record.model.tables(), f"rollback to version {target}")
        else:
            self._check_kept(before_model, before_tables)
            self._check_restored(record.model)
            load_rows(self.model, read_tables(self.rt, self.model))
        self.versions[result.version] = VersionRecord(
            "rollback", previous, target, copy.deepcopy(self.model), self.epoch, result.hash
        )
        reversed_ = history[len(self.history(target)) :]
        first = reversed_[0] if reversed_ else None
        if first is None:
            self.redeploy = None
        elif first == previous:
            self.redeploy = (first, before_tables)
        else:
            self.redeploy = (
                first,
                self.versions[first].model.tables() if self.versions[first].epoch == self.epoch else None,
            )

    def _check_restored(self, target: Model) -> None:
        """Rows that existed at the target version come back exactly as they were (rows are never updated)."""
        actual = read_tables(self.rt, self.model)
        for name, expected_rows in target.tables().items():
            ent = target.by_name(name)
            keys = ent.names(ent.pk)
            found = {tuple(row[k] for k in keys): row for row in actual[name]}
            for row in expected_rows:
                got = found.get(tuple(row[k] for k in keys))
                if got != row:
                    self.fail(
                        f"rollback did not restore a row of {name}:\n    expected {row}\n    actual   {got}"
                    )

    def _check_kept(self, before: Model, before_tables: dict[str, Any]) -> None:
        """With rows written since the target version: rows neither lost nor invented, untouched values kept."""
        after_tables = read_tables(self.rt, self.model)
        for ent in self.model.entities.values():
            old = before.entities.get(ent.uid)
            if old is None:
                continue
            old_rows = {tuple(row[k][1] for k in old.names(old.pk)): row for row in before_tables[old.name]}
            new_rows = {tuple(row[k][1] for k in ent.names(ent.pk)): row for row in after_tables[ent.name]}
            if set(old_rows) != set(new_rows):
                self.fail(
                    f"rollback changed the rows of {ent.name}: lost {set(old_rows) - set(new_rows)}, "
                    f"invented {set(new_rows) - set(old_rows)}"
                )
            for fld in ent.fields:
                same = next((f for f in old.fields if f.uid == fld.uid), None)
                if same is None or same.type != fld.type or same.lineage != fld.lineage:
                    continue
                for key, row in new_rows.items():
                    if row[fld.name] != old_rows[key][same.name]:
                        self.fail(
                            f"rollback changed {ent.name}.{fld.name} of row {key!r}: "
                            f"{old_rows[key][same.name]} -> {row[fld.name]}"
                        )

    def redeploy_reversed(self) -> None:
        assert self.redeploy is not None
        number, expected = self.redeploy
        record = self.versions[number]
        self.log.append(f"redeploy the operations of version {number} (exact={expected is not None})")
        self._deploy(record.ops, copy.deepcopy(record.model), expected, predicted=False)
        if self.versions[self.current].hash != record.hash:
            self.fail(f"redeploying version {number}'s operations gave a different spec")

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
                tx.execute(
                    f'INSERT INTO "{ent.name}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})',
                    [values[u] for u in given],
                )
        for values, _ in rows:
            ent.rows[ent.key(values)] = values
        self.epoch += 1
        self.redeploy = None
        self.check_tables(model.tables(), f"insert into {ent.name}")
        self.remember()

    def _draw_row(
        self, data: st.DataObject, ent: Ent, existing: list[dict[int, Any]]
    ) -> tuple[dict[int, Any], list[int]] | None:
        values: dict[int, Any] = {}
        given: list[int] = []
        for fld in ent.fields:
            if fld.uid in ent.pk:
                values[fld.uid] = data.draw(pk_strategy(fld.type), label=fld.name)
                given.append(fld.uid)
                continue
            if fld.ref is not None:
                parent_uid, key_uid = fld.ref
                keys = {row[key_uid] for row in self.model.entities[parent_uid].rows.values()} - {None}
                options = sorted((k for k in keys if satisfies(fld.check, k)), key=str)
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
        if any(ent.key(row) == ent.key(values) for row in existing):
            return None
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
            self.fail(
                f"active spec differs from the model:\n  spec  {spec_schema(spec)}\n  model {self.model.schema()}"
            )


# About 15 s on two cores with the default (derandomized) profile: the same 10 runs every time, so a
# landing never fails at random. `pytest --hypothesis-profile=explore tests/runtime/test_properties.py`
# runs the long exploratory search (random seeds, 500 runs; tests/conftest.py registers both profiles).
# No shrinking: one step takes ~50 ms and shrinking a long run can take minutes; a failure message
# carries the last 30 steps, enough to write a minimal reproduction by hand (pinned as a test below).
Machine.TestCase.settings = settings(
    settings.default,
    stateful_step_count=20,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
TestRandomChanges = Machine.TestCase


def test_deploy_ops_helper_refuses_a_failing_dry_run(rt: Runtime) -> None:
    """The shared ``deploy_ops`` helper must not hide a failed dry-run."""
    deploy_ops(
        rt,
        [
            {
                "op": "add_entity",
                "entity": {"name": "t", "primary_key": ["id"], "fields": [{"name": "id", "type": "integer"}]},
            }
        ],
    )
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(AssertionError):
        deploy_ops(rt, [{"op": "add_field", "entity": "t", "field": {"name": "x", "type": "integer"}}])


# ------------------------------------------------------------------ defects found by the machine above
#
# Minimal reproductions of what the random search found (each failed before the runtime was fixed).


def entity(
    name: str,
    *fields: dict[str, Any],
    unique: list[list[str]] | None = None,
    indexes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "op": "add_entity",
        "entity": {
            "name": name,
            "primary_key": ["id"],
            "fields": [{"name": "id", "type": "integer"}, *fields],
            "unique": unique or [],
            "indexes": indexes or [],
        },
    }


def rows(rt: Runtime, table: str) -> list[tuple[Any, ...]]:
    with rt.engine.snapshot() as cursor:
        return cursor.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall()


def dry_run_error(rt: Runtime, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
    report = rt.dry_run(rt.propose(ops).proposal_id)
    return report.error


def test_drop_index_then_drop_field(rt: Runtime) -> None:
    """Was: planner ALTERs a column whose index was dropped earlier in the same transaction; DuckDB still refuses (plan._drop_field uses is_frozen of the new spec)."""
    deploy_ops(
        rt,
        [
            entity(
                "a",
                {"name": "x", "type": "integer", "nullable": True},
                indexes=[{"name": "a_x", "columns": ["x"]}],
            )
        ],
    )
    # Exactly what the refusal of a lone drop_field tells the agent to do:
    assert (
        dry_run_error(
            rt,
            [
                {"op": "drop_index", "entity": "a", "name": "a_x"},
                {"op": "drop_field", "entity": "a", "field": "x"},
            ],
        )
        is None
    )


def test_entity_created_with_an_index_that_is_dropped_then_made_unique_in_one_proposal(rt: Runtime) -> None:
    """Was: add_entity (with an index) + drop_index + add_unique failed at dry-run with "Cannot alter
    entry": the planner only knew the base spec's indexed tables, not those created in the proposal."""
    ops = [
        entity("e", {"name": "x", "type": "integer"}, indexes=[{"name": "e_x", "columns": ["x"]}]),
        {"op": "drop_index", "entity": "e", "name": "e_x"},
        {"op": "add_unique", "entity": "e", "columns": ["x"]},
    ]
    assert dry_run_error(rt, ops) is None


def test_entity_created_with_an_index_that_is_dropped_then_retyped_in_one_proposal(rt: Runtime) -> None:
    """Was: the same, with an ALTER TYPE of the formerly indexed column ("an index depends on it")."""
    ops = [
        entity(
            "e",
            {"name": "f4", "type": "decimal(10,2)", "default": 4},
            {"name": "f5", "type": "decimal(10,2)", "nullable": True},
            indexes=[{"name": "ix7", "columns": ["f5", "f4"]}],
        ),
        {"op": "drop_index", "entity": "e", "name": "ix7"},
        {"op": "alter_field", "entity": "e", "field": "f4", "type": "decimal(12,2)", "drop_default": True},
    ]
    assert dry_run_error(rt, ops) is None


def test_index_added_then_dropped_then_altered_in_one_proposal(rt: Runtime) -> None:
    """The same hold through add_index on an existing entity, and through a rename of the entity."""
    deploy_ops(rt, [entity("e", {"name": "x", "type": "integer"})])
    ops = [
        {"op": "add_index", "entity": "e", "index": {"name": "e_x", "columns": ["x"]}},
        {"op": "rename_entity", "entity": "e", "new_name": "f"},
        {"op": "drop_index", "entity": "f", "name": "e_x"},
        {"op": "alter_field", "entity": "f", "field": "x", "type": "bigint"},
        {"op": "drop_field", "entity": "f", "field": "x"},
    ]
    assert dry_run_error(rt, ops) is None


def test_rollback_across_index_on_added_field(rt: Runtime) -> None:
    """Was: the reversal of a later add_index dropped the index, then an earlier version's reversal ALTERed its column in the same transaction."""
    deploy_ops(rt, [entity("a")])
    deploy_ops(
        rt, [{"op": "add_field", "entity": "a", "field": {"name": "x", "type": "integer", "nullable": True}}]
    )
    deploy_ops(rt, [{"op": "add_index", "entity": "a", "index": {"name": "a_x", "columns": ["x"]}}])
    rt.rollback(to_version=1)
    assert [f.name for f in rt.current[1].entities[0].fields] == ["id"]


def test_drop_field_before_unique_column(rt: Runtime) -> None:
    deploy_ops(
        rt,
        [
            entity(
                "a",
                {"name": "x", "type": "integer", "nullable": True},
                {"name": "y", "type": "integer", "nullable": True},
                unique=[["y"]],
            )
        ],
    )
    assert dry_run_error(rt, [{"op": "drop_field", "entity": "a", "field": "x"}]) is None


def test_drop_field_before_key_column(rt: Runtime) -> None:
    """Was: DROP COLUMN is refused when a FOREIGN KEY column comes after it (its index); plan._drop_field counts primary-key and unique columns as keys, not FK fields."""
    deploy_ops(
        rt,
        [
            entity("p"),
            entity(
                "c",
                {"name": "x", "type": "integer", "nullable": True},
                {"name": "p_id", "type": "integer", "references": "p.id"},
            ),
        ],
    )
    assert dry_run_error(rt, [{"op": "drop_field", "entity": "c", "field": "x"}]) is None


def test_rollback_of_field_added_before_the_key(rt: Runtime) -> None:
    """Was: the reverse of add_field placed before a FOREIGN KEY field is an ALTER DROP COLUMN before it: the rollback is refused."""
    deploy_ops(rt, [entity("p"), entity("c", {"name": "p_id", "type": "integer", "references": "p.id"})])
    deploy_ops(
        rt,
        [
            {
                "op": "add_field",
                "entity": "c",
                "position": 1,
                "field": {"name": "x", "type": "integer", "nullable": True},
            }
        ],
    )
    rt.rollback()
    assert [f.name for f in rt.current[1].entity("c").fields] == ["id", "p_id"]


def test_rollback_keeps_null_in_field_with_default(rt: Runtime) -> None:
    """Was: retention keeps only non-NULL values and the restore re-adds the column WITH its default, so NULLs come back as the default (plan._drop_field/_add_field)."""
    deploy_ops(rt, [entity("a", {"name": "x", "type": "integer", "nullable": True})])
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO a VALUES (1, NULL), (2, 5)")
    deploy_ops(rt, [{"op": "alter_field", "entity": "a", "field": "x", "default": 9}])
    before = rows(rt, "a")
    deploy_ops(rt, [{"op": "drop_field", "entity": "a", "field": "x"}])
    rt.rollback()
    assert rows(rt, "a") == before  # observed: [(1, 9), (2, 5)]


def test_redeploy_keeps_null_in_field_with_default(rt: Runtime) -> None:
    """Was: the same loss when redeploying: an explicit NULL written after add_field (nullable, with default) becomes the default."""
    deploy_ops(rt, [entity("a")])
    ops = [
        {
            "op": "add_field",
            "entity": "a",
            "field": {"name": "x", "type": "integer", "nullable": True, "default": 9},
        }
    ]
    deploy_ops(rt, ops)
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO a VALUES (1, NULL), (2, 5)")
    before = rows(rt, "a")
    rt.rollback()
    deploy_ops(rt, ops)
    assert rows(rt, "a") == before


def test_foreign_key_cycle_is_refused_at_propose(rt: Runtime) -> None:
    """Was: changes.apply accepts a foreign-key cycle (ddl.entity_order assumes none can be built); the dry-run then fails with a raw catalog error."""
    deploy_ops(rt, [entity("a"), entity("b", {"name": "a_id", "type": "integer", "references": "a.id"})])
    with pytest.raises(ButtressError) as caught:
        rt.propose(
            [
                {
                    "op": "add_field",
                    "entity": "a",
                    "field": {"name": "b_id", "type": "integer", "nullable": True, "references": "b.id"},
                }
            ]
        )
    assert caught.value.code == Code.SPEC_INVALID


def test_parent_droppable_after_child_rebuild(rt: Runtime) -> None:
    """Was: ddl.rebuild renames 'c__rebuild' to 'c'; DuckDB keeps the parent's foreign-key link under the old name, so the parent can never be dropped or rebuilt."""
    deploy_ops(
        rt,
        [
            entity("p"),
            entity(
                "c",
                {"name": "x", "type": "integer", "nullable": True},
                {"name": "p_id", "type": "integer", "references": "p.id"},
            ),
        ],
    )
    deploy_ops(rt, [{"op": "alter_field", "entity": "c", "field": "x", "check": "x > 0"}])  # rebuilds c
    assert (
        dry_run_error(rt, [{"op": "drop_entity", "entity": "c"}, {"op": "drop_entity", "entity": "p"}])
        is None
    )


def test_parent_droppable_after_child_rename(rt: Runtime) -> None:
    """Was: same stale link after rename_entity of a child (ALTER TABLE RENAME)."""
    deploy_ops(rt, [entity("p"), entity("c", {"name": "p_id", "type": "integer", "references": "p.id"})])
    deploy_ops(rt, [{"op": "rename_entity", "entity": "c", "new_name": "d"}])
    assert (
        dry_run_error(rt, [{"op": "drop_entity", "entity": "d"}, {"op": "drop_entity", "entity": "p"}])
        is None
    )


def test_rollback_restores_field_then_index(rt: Runtime) -> None:
    """Was: the reverse plan restores the field with ALTER ADD COLUMN + UPDATE and then CREATE INDEX on it in the same transaction: 'Cannot create index with outstanding updates' (plan._add_field restore path, then plan._add_index)."""
    deploy_ops(
        rt,
        [
            entity(
                "a",
                {"name": "x", "type": "integer", "nullable": True},
                indexes=[{"name": "a_x", "columns": ["x"]}],
            )
        ],
    )
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO a VALUES (1, 3)")
    deploy_ops(rt, [{"op": "drop_index", "entity": "a", "name": "a_x"}])
    deploy_ops(rt, [{"op": "drop_field", "entity": "a", "field": "x"}])
    rt.rollback(to_version=1)  # rolling back one version at a time works
    assert rows(rt, "a") == [(1, 3)]


def test_rollback_of_view_replaced_where_added(rt: Runtime) -> None:
    """Was: plan.plan moves every view operation after the table operations; the reverse of [add_entity e, add_view v, replace_view v] is [replace_view v (old SQL on e), drop_view v, drop_entity e], run as drop_entity first, so CREATE OR REPLACE VIEW fails: e does not exist (likewise [add_entity e, add_view v, drop_view v], or add_field + add_view + drop_view)."""
    deploy_ops(
        rt,
        [
            entity("e", {"name": "x", "type": "integer"}),
            {"op": "add_view", "view": {"name": "v", "sql": "SELECT id FROM e"}},
            {"op": "replace_view", "view": {"name": "v", "sql": "SELECT id, x FROM e"}},
        ],
    )
    rt.rollback()
    assert rt.current[1].entities == ()


def test_redeploy_restores_after_rollback_past_a_view(rt: Runtime) -> None:
    """Was: a rollback past a version with a sync_views step filed retained rows under the wrong version's hash."""
    ops = [entity("a")]
    deploy_ops(rt, ops)
    with rt.engine.transaction() as tx:
        tx.execute("INSERT INTO a VALUES (1)")
    deploy_ops(rt, [{"op": "add_view", "view": {"name": "v", "sql": "SELECT id FROM a"}}])
    rt.rollback(to_version=0)
    deploy_ops(rt, ops)
    assert rows(rt, "a") == [(1,)]  # observed: [] (the row stays in the retained copy)
