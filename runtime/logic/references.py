"""References checked by the runtime, at the end of each transaction, on the rows it touched.

DuckDB checks FOREIGN KEYs statement by statement against indexes that do not see the transaction's
own deletes, so deleting child rows and then their parent fails, and a referenced table cannot be
altered without rebuilding its children. When a spec has ``checked_by = "buttress"`` the
tables carry no FOREIGN KEY; instead, after an action's statements ran:

1. every referenced key that the transaction removed (deleted, or changed) and that no longer exists
   is followed to the rows pointing at it, by each reference's ``on_delete``: ``restrict`` refuses
   the transaction naming them, ``cascade`` deletes them (and follows their own references),
   ``set_null`` sets the field to NULL;
2. every reference value the transaction wrote must exist in the referenced entity.

Both look rows up through indexes: the referenced key is a primary key or unique set, and the runtime
keeps an index on every reference field (``ddl.indexes_of``). Their cost follows the rows touched,
not the size of the tables. ``orphans`` checks a whole reference, for deploys and for writes whose
touched rows could not be captured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from runtime.errors import ActionError, Code, DeployError
from runtime.logic import fieldchecks
from runtime.migrate.ddl import cols, q
from runtime.schema.spec import AppSpec
from runtime.store.engine import Session
from runtime.store.values import plain

SAMPLE: Final = 5
INLINE_KEYS: Final = 64


@dataclass(frozen=True)
class Reference:
    """``child.field`` references ``parent.key``."""

    child: str
    field: str
    parent: str
    key: str
    on_delete: str
    child_key: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.child}.{self.field} -> {self.parent}.{self.key}"


def references_of(spec: AppSpec) -> tuple[Reference, ...]:
    """The references the runtime enforces (none when DuckDB does)."""
    if spec.checked_by != "buttress":
        return ()
    out = []
    for child in spec.entities:
        for f in child.fields:
            ref = f.reference
            if ref is not None:
                out.append(Reference(child.name, f.name, ref[0], ref[1], f.on_delete, child.primary_key))
    return tuple(out)


def columns_needed(references: Iterable[Reference]) -> dict[str, set[str]]:
    """For each table, the columns whose old or new values the checks need from touched rows."""
    out: dict[str, set[str]] = {}
    for ref in references:
        out.setdefault(ref.child, set()).add(ref.field)
        out.setdefault(ref.parent, set()).add(ref.key)
    return out


def reachable(references: Sequence[Reference], tables: Iterable[str]) -> set[str]:
    """``tables`` and every table a cascade or set-null from them can write to."""
    found = set(tables)
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        for ref in references:
            if ref.parent == parent and ref.on_delete != "restrict" and ref.child not in found:
                found.add(ref.child)
                frontier.append(ref.child)
    return found


@dataclass
class Touched:
    """Column values of the rows one transaction wrote, per table: new values (inserted, updated) and
    old values (deleted, or updated where a captured column changed)."""

    new: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    old: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    inexact: set[str] = field(default_factory=set)
    """Tables whose touched rows are not all known: their checks run in full."""

    def add(self, table: str, rows: list[dict[str, Any]], *, old: bool) -> None:
        (self.old if old else self.new).setdefault(table, []).extend(rows)

    @property
    def tables(self) -> set[str]:
        return set(self.new) | set(self.old) | self.inexact

    def values(self, table: str, columns: Iterable[str]) -> list[Any]:
        out: list[Any] = []
        for image in [*self.old.get(table, ()), *self.new.get(table, ())]:
            out.extend(image[c] for c in columns if c in image)
        return out


def enforce(
    session: Session,
    references: Sequence[Reference],
    touched: Touched,
    capture: dict[str, set[str]],
    checks: Mapping[str, Sequence[fieldchecks.FieldCheck]] | None = None,
) -> None:
    """Follow removed keys (restrict, cascade, set null), then require every written reference to exist.

    ``checks``: the field checks the runtime enforces, per entity; rows ``set_null`` changes meet them.
    """
    if not references:
        return
    followed: set[tuple[str, Any]] = set()
    while True:
        removed = _removed_keys(session, references, touched, followed)
        if not removed:
            break
        for ref, keys in removed:
            _follow(session, ref, keys, touched, capture, (checks or {}).get(ref.child, ()))
    for ref in references:
        if ref.child in touched.inexact or ref.parent in touched.inexact:
            _raise_orphans(session, ref)
            continue
        values = sorted(
            {v for v in (image.get(ref.field) for image in touched.new.get(ref.child, ())) if v is not None},
            key=repr,
        )
        if not values:
            continue
        found = {
            row[0]
            for row in session.fetchall(
                *_lookup(f"SELECT {q(ref.key)} FROM {q(ref.parent)}", ref.key, values)
            )
        }
        missing = [v for v in values if v not in found]
        if missing:
            raise ActionError(
                Code.ACTION_CONSTRAINT,
                f"{ref.child}.{ref.field} refers to {ref.parent}.{ref.key} {plain(missing[0])!r}, which does not exist",
                hint=f"Create the {ref.parent} row first (in the same action is fine), or use an existing {ref.key}.",
                details={"reference": ref.label, "missing": [plain(v) for v in missing[:SAMPLE]]},
            )


def _removed_keys(
    session: Session, references: Sequence[Reference], touched: Touched, followed: set[tuple[str, Any]]
) -> list[tuple[Reference, list[Any]]]:
    """Referenced keys the transaction removed (old values no longer present), not yet followed."""
    out: list[tuple[Reference, list[Any]]] = []
    for parent in {ref.parent for ref in references}:
        for key in {ref.key for ref in references if ref.parent == parent}:
            old = {image[key] for image in touched.old.get(parent, ()) if image.get(key) is not None}
            candidates = sorted((k for k in old if (f"{parent}.{key}", k) not in followed), key=repr)
            if not candidates:
                continue
            present = {
                row[0]
                for row in session.fetchall(*_lookup(f"SELECT {q(key)} FROM {q(parent)}", key, candidates))
            }
            gone = [k for k in candidates if k not in present]
            followed.update((f"{parent}.{key}", k) for k in candidates)
            if gone:
                out.extend((ref, gone) for ref in references if ref.parent == parent and ref.key == key)
    return out


def _follow(
    session: Session,
    ref: Reference,
    keys: list[Any],
    touched: Touched,
    capture: dict[str, set[str]],
    checks: Sequence[fieldchecks.FieldCheck] = (),
) -> None:
    wanted = sorted(capture.get(ref.child, set()) | {ref.field, *ref.child_key})
    if ref.on_delete == "restrict":
        sql, params = _lookup(
            f"SELECT {cols(ref.child_key)}, {q(ref.field)} FROM {q(ref.child)}", ref.field, keys
        )
        rows = session.fetchall(f"{sql} LIMIT {SAMPLE}", params)
        if rows:
            names = [*ref.child_key, ref.field]
            raise ActionError(
                Code.ACTION_CONSTRAINT,
                f"removing {ref.parent}.{ref.key} {plain(keys[0])!r} would leave {ref.child} rows pointing at it "
                f"({ref.child}.{ref.field}, on_delete restrict)",
                hint=f"Delete or repoint those {ref.child} rows first (in the same action is fine), or declare "
                "on_delete cascade or set_null on the reference.",
                details={
                    "reference": ref.label,
                    "rows": [dict(zip(names, (plain(v) for v in row), strict=True)) for row in rows],
                },
            )
        return
    if ref.on_delete == "cascade":
        sql, params = _lookup(f"DELETE FROM {q(ref.child)}", ref.field, keys)
        rows = session.execute(f"{sql} RETURNING {cols(wanted)}", params).fetchall()
        touched.add(ref.child, [dict(zip(wanted, row, strict=True)) for row in rows], old=True)
        return
    select, params = _lookup(f"SELECT {cols(wanted)} FROM {q(ref.child)}", ref.field, keys)
    before = session.fetchall(select, params)
    update, params = _lookup(f"UPDATE {q(ref.child)} SET {q(ref.field)} = NULL", ref.field, keys)
    report = fieldchecks.report_columns(ref.child_key, checks) if checks else ()
    verdicts = ", ".join(e.sql(dialect="duckdb") for e in fieldchecks.returning(checks, report, None))
    after = session.execute(
        f"{update} RETURNING {cols(wanted)}" + (f", {verdicts}" if verdicts else ""), params
    ).fetchall()
    fieldchecks.refuse(checks, report, (row[len(wanted) :] for row in after))
    touched.add(ref.child, [dict(zip(wanted, row, strict=True)) for row in before], old=True)
    touched.add(ref.child, [dict(zip(wanted, row[: len(wanted)], strict=True)) for row in after], old=False)


def _lookup(prefix: str, column: str, keys: Sequence[Any]) -> tuple[str, dict[str, Any] | list[Any]]:
    """``<prefix> WHERE column IN (...)``: inline parameters for a few keys (the index serves them), one
    list parameter for many."""
    if len(keys) <= INLINE_KEYS:
        names = [f"__r{i}" for i in range(len(keys))]
        placeholders = ", ".join(f"${n}" for n in names)
        return f"{prefix} WHERE {q(column)} IN ({placeholders})", dict(zip(names, keys, strict=True))
    return f"{prefix} WHERE {q(column)} IN (SELECT unnest($__keys))", {"__keys": list(keys)}


def orphan_sql(ref: Reference) -> str:
    """Rows of the child whose reference names no row of the parent."""
    return (
        f"SELECT {', '.join('c.' + q(k) for k in ref.child_key)}, c.{q(ref.field)} FROM {q(ref.child)} AS c "
        f"WHERE c.{q(ref.field)} IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {q(ref.parent)} AS p WHERE p.{q(ref.key)} = c.{q(ref.field)})"
    )


def _raise_orphans(session: Session, ref: Reference) -> None:
    rows = session.fetchall(f"{orphan_sql(ref)} LIMIT {SAMPLE}")
    if rows:
        names = [*ref.child_key, ref.field]
        raise ActionError(
            Code.ACTION_CONSTRAINT,
            f"{ref.child}.{ref.field} refers to {ref.parent}.{ref.key} values that do not exist",
            hint=f"Point those {ref.child} rows at existing {ref.parent} rows, or delete them.",
            details={
                "reference": ref.label,
                "rows": [dict(zip(names, (plain(v) for v in row), strict=True)) for row in rows],
            },
        )


def check_all(session: Session, references: Sequence[Reference]) -> None:
    """Every row of every reference points at an existing row (deploys: the data moved by a plan)."""
    for ref in references:
        rows = session.fetchall(f"{orphan_sql(ref)} LIMIT {SAMPLE}")
        if rows:
            names = [*ref.child_key, ref.field]
            raise DeployError(
                Code.DEPLOY_DRY_RUN_FAILED,
                f"{ref.child}.{ref.field} would refer to {ref.parent}.{ref.key} values that do not exist",
                hint=f"Fix or remove the {ref.child} rows named in details.rows, then dry-run again.",
                details={
                    "reference": ref.label,
                    "rows": [dict(zip(names, (plain(v) for v in row), strict=True)) for row in rows],
                },
            )
