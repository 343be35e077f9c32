"""Run application actions: validated arguments, analysed SQL, the writer lane, invariants, idempotency.

A mutation runs on the single writer lane, one at a time, in one transaction holding its
statements, the check of every invariant whose tables meet its write set, the idempotency
record and the audit row: they commit together or not at all. Since DuckDB offers only
snapshot isolation (write skew commits), serializing writers is what makes the invariant
check sound. Queries run concurrently on read-only snapshots.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from runtime.errors import ActionError, ButtressError, Code, NotFound
from runtime.schema.spec import ActionSpec, AppSpec, canonical_json
from runtime.schema.types import python_type
from runtime.sql import sqlcheck
from runtime.store.engine import Session, Tx
from runtime.store.values import plain, records

if TYPE_CHECKING:
    from runtime.runtime import Runtime

MAX_ATTEMPTS = 3
SAMPLE = 5


class ActionResult(BaseModel):
    action: str
    kind: str
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    rows_affected: int
    replayed: bool = False
    version: int


@dataclass(frozen=True)
class Prepared:
    """An action analysed against one spec: its argument model, statements and the checks it needs."""

    spec: ActionSpec
    args_model: type[BaseModel]
    statements: tuple[sqlcheck.Analysis, ...]
    reads: frozenset[str]
    writes: frozenset[str]
    invariants: tuple[tuple[str, str, str], ...]  # (name, description, sql) meeting the write set


def args_model(action: ActionSpec) -> type[BaseModel]:
    """A pydantic model of the action's parameters (nullable ones may be omitted)."""
    fields: dict[str, Any] = {}
    for param in action.params:
        base = python_type(param.type)
        annotation: Any = base | None if param.nullable else base
        fields[param.name] = (annotation, None if param.nullable else ...)
    return create_model(f"{action.name}_args", __config__=ConfigDict(extra="forbid"), **fields)


def prepare(spec: AppSpec, action: ActionSpec) -> Prepared:
    relations = spec.relations()
    analyses = tuple(
        sqlcheck.analyze_statement(s, relations, allow_writes=action.kind == "mutation")
        for s in action.statements
    )
    reads = frozenset().union(*(a.reads for a in analyses))
    writes = frozenset().union(*(a.writes for a in analyses))
    invariants = []
    for invariant in spec.invariants:
        touched = sqlcheck.analyze_query(invariant.sql, relations).reads
        if touched & _expand(spec, writes):
            invariants.append((invariant.name, invariant.description, sqlcheck.embed(invariant.sql)))
    return Prepared(action, args_model(action), analyses, reads, writes, tuple(invariants))


def _expand(spec: AppSpec, tables: frozenset[str]) -> frozenset[str]:
    """Tables plus the views that read them (an invariant over a view meets writes to its tables)."""
    out = set(tables)
    relations = spec.relations()
    for view in spec.views:
        if sqlcheck.analyze_query(view.sql, relations).reads & out:
            out.add(view.name)
    return frozenset(out)


class ActionRunner:
    """Caches prepared actions per spec version and runs them."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._prepared: dict[tuple[str, str], Prepared] = {}
        self._lock = threading.Lock()

    def prepared(self, name: str) -> tuple[int, Prepared]:
        number, spec = self.rt.current
        action = spec.action(name)
        if action is None:
            raise NotFound("action", name, hint="describe_app lists the deployed actions.")
        key = (spec.hash(), name)
        with self._lock:
            found = self._prepared.get(key)
        if found is None:
            found = prepare(spec, action)
            with self._lock:
                self._prepared[key] = found
        return number, found

    def run(
        self, name: str, args: dict[str, Any] | None, *, idempotency_key: str | None, actor: str
    ) -> ActionResult:
        audit_args = {"action": name, "args": _jsonable(args or {}), "idempotency_key": idempotency_key}
        try:
            number, prepared = self.prepared(name)
            values = _validate(prepared, args or {})
            if prepared.spec.kind == "query":
                result = self._query(number, prepared, values)
                self.rt.record_read("run_action", actor, audit_args)
                return result
            return self._mutate(number, prepared, values, idempotency_key, actor, audit_args)
        except ButtressError as error:
            self.rt.record_refusal("run_action", actor, audit_args, error)
            raise

    def _query(self, number: int, prepared: Prepared, values: dict[str, Any]) -> ActionResult:
        with self.rt.engine.snapshot(timeout=self.rt.limits.action_timeout_s) as cursor:
            columns, rows, affected = _run_statements(cursor, prepared, values)
        return ActionResult(
            action=prepared.spec.name,
            kind="query",
            columns=columns,
            rows=rows,
            row_count=len(rows),
            rows_affected=affected,
            version=number,
        )

    def _mutate(
        self,
        number: int,
        prepared: Prepared,
        values: dict[str, Any],
        key: str | None,
        actor: str,
        audit_args: dict[str, Any],
    ) -> ActionResult:
        args_hash = hashlib.sha256(canonical_json(_jsonable(values)).encode()).hexdigest()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.rt.engine.transaction(timeout=self.rt.limits.action_timeout_s) as tx:
                    return self._mutate_once(tx, number, prepared, values, key, args_hash, actor, audit_args)
            except ButtressError as error:
                if error.code == Code.ENGINE_CONFLICT and attempt < MAX_ATTEMPTS:
                    continue
                if error.code == Code.ENGINE_CONSTRAINT:
                    raise ActionError(
                        Code.ACTION_CONSTRAINT,
                        f"action {prepared.spec.name!r}: {error.message}",
                        hint="The arguments break a key, NOT NULL, CHECK or foreign key; read details.reason.",
                        details=error.details,
                    ) from None
                raise
        raise AssertionError("unreachable")

    def _mutate_once(
        self,
        tx: Tx,
        number: int,
        prepared: Prepared,
        values: dict[str, Any],
        key: str | None,
        args_hash: str,
        actor: str,
        audit_args: dict[str, Any],
    ) -> ActionResult:
        name = prepared.spec.name
        if key is not None:
            row = tx.fetchone(
                "SELECT args_hash, result FROM _buttress.idempotency WHERE action = ? AND key = ?",
                [name, key],
            )
            if row is not None:
                if row[0] != args_hash:
                    raise ActionError(
                        Code.ACTION_IDEMPOTENCY_CONFLICT,
                        f"idempotency key {key!r} was already used for {name} with different arguments",
                        hint="Use a new key for a new request; reuse a key only to retry the same call.",
                        details={"action": name, "idempotency_key": key},
                    )
                stored = ActionResult.model_validate_json(row[1]).model_copy(update={"replayed": True})
                self.rt.audit.append(
                    tx,
                    actor=actor,
                    operation="run_action",
                    arguments=audit_args,
                    outcome="replayed",
                    version_before=number,
                    version_after=number,
                )
                return stored
        columns, rows, affected = _run_statements(tx, prepared, values)
        for inv_name, description, sql in prepared.invariants:
            sample = records(tx.execute(f"SELECT * FROM {sql} AS violations LIMIT {SAMPLE}"))
            if sample:
                raise ActionError(
                    Code.INVARIANT_VIOLATED,
                    f"invariant {inv_name!r} would be violated: {description}",
                    hint="This is a business rule, not a bug: the call was rolled back and nothing changed.",
                    details={"invariant": inv_name, "action": name, "rows": sample},
                )
        result = ActionResult(
            action=name,
            kind="mutation",
            columns=columns,
            rows=rows,
            row_count=len(rows),
            rows_affected=affected,
            version=number,
        )
        if key is not None:
            tx.execute(
                "INSERT INTO _buttress.idempotency VALUES (?, ?, ?, ?, ?, ?)",
                [name, key, args_hash, result.model_dump_json(), number, _now()],
            )
        self.rt.audit.append(
            tx,
            actor=actor,
            operation="run_action",
            arguments=audit_args,
            outcome="ok",
            version_before=number,
            version_after=number,
        )
        return result


def _run_statements(
    session: Session, prepared: Prepared, values: dict[str, Any]
) -> tuple[list[str], list[list[Any]], int]:
    columns: list[str] = []
    rows: list[list[Any]] = []
    affected = 0
    for analysis in prepared.statements:
        params = {p: values.get(p) for p in analysis.params}
        result = session.execute(analysis.sql, params or None)
        fetched = result.fetchall()
        if analysis.kind == "select" or analysis.output_columns:
            columns = [d[0] for d in result.description or []]
            rows = [[plain(v) for v in r] for r in fetched]
        elif fetched and len(fetched[0]) == 1 and isinstance(fetched[0][0], int):
            affected += int(fetched[0][0])
    return columns, rows, affected


def _validate(prepared: Prepared, args: dict[str, Any]) -> dict[str, Any]:
    try:
        model = prepared.args_model.model_validate(args)
    except ValidationError as error:
        problems = [
            {"param": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
            for e in error.errors(include_url=False)
        ]
        raise ActionError(
            Code.ACTION_INVALID_ARGS,
            f"invalid arguments for {prepared.spec.name}: {problems[0]['problem']} ({problems[0]['param']})",
            hint="describe_app lists each parameter with its type.",
            details={"problems": problems},
        ) from None
    values = model.model_dump()
    for param in prepared.spec.params:
        if (
            param.type == "json"
            and values.get(param.name) is not None
            and not isinstance(values[param.name], str)
        ):
            values[param.name] = json.dumps(values[param.name])
    return values


def _jsonable(value: Any) -> Any:
    return json.loads(canonical_json(value))


def _now() -> str:
    from runtime.store.audit import now_iso

    return now_iso()
