"""Run application actions: validated arguments, analysed SQL, the writer lane, invariants, idempotency.

A mutation runs on the single writer lane, one at a time, in one transaction holding its
statements, the check of every invariant whose tables meet its write set, the idempotency
record and the audit row: they commit together or not at all. Since DuckDB offers only
snapshot isolation (write skew commits), serializing writers is what makes the invariant
check sound. Queries run concurrently on read-only snapshots.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from runtime.boundary.policy import Acting
from runtime.errors import ActionError, ButtressError, Code, NotFound, PolicyError
from runtime.logic import capture, fieldchecks, invariants, references
from runtime.logic.prepared import Prepared, prepare
from runtime.registry import OPERATOR
from runtime.results import ActionResult
from runtime.schema import graph
from runtime.schema.spec import canonical_json
from runtime.store.audit import now_iso
from runtime.store.engine import Session, Tx
from runtime.store.values import fetch, plain, records
from runtime.workflows import outbox

if TYPE_CHECKING:
    from runtime.context import ActionContext

MAX_ATTEMPTS = 3
SAMPLE = 5


class ActionRunner:
    """Caches prepared actions per spec version and runs them.

    A mutation is prepared again inside its own transaction, against the version committed when the
    writer lane let it in: a deploy that committed while it waited (a new invariant, a replaced
    action) is what it runs against, and the version in its result is that version.
    """

    def __init__(self, rt: ActionContext) -> None:
        self.rt = rt
        self._prepared: dict[tuple[str, str], Prepared] = {}
        self._lock = threading.Lock()

    def prepared(self, name: str) -> tuple[int, Prepared]:
        """The action as the committed version defines it (cached by spec hash)."""
        state = self.rt.state
        action = state.spec.action(name)
        if action is None:  # another server's version may define it (this server may be taking it now)
            self.rt.catch_up()
            state = self.rt.state
            action = state.spec.action(name)
        number, spec = state.number, state.spec
        if action is None:
            raise NotFound("action", name, hint="describe_app lists the deployed actions.")
        key = (state.hash, name)
        with self._lock:
            found = self._prepared.get(key)
        if found is None:
            found = prepare(spec, action)
            with self._lock:
                if len(self._prepared) > 1024:
                    self._prepared.clear()
                self._prepared[key] = found
        return number, found

    def run(
        self, name: str, args: dict[str, Any] | None, *, idempotency_key: str | None, actor: str
    ) -> ActionResult:
        audit_args = {"action": name, "args": _jsonable(args or {}), "idempotency_key": idempotency_key}
        with self.rt.refusing("run_action", actor, audit_args):
            self.rt.authorize_action(actor, name)
            number, prepared = self.prepared(name)
            if prepared.spec.emits and actor != OPERATOR:  # what its emits set running is decided now
                self.rt.policy.decide(actor, graph.of_action(prepared.app, name), f"run action {name!r}")
            values = _validate(prepared, args or {})
            budget = self.rt.limits.action_timeout_s
            if prepared.spec.kind == "query":
                if idempotency_key is not None:
                    raise ActionError(
                        Code.ACTION_INVALID_ARGS,
                        f"action {name!r} is a query: it changes nothing, so an idempotency_key means nothing",
                        hint="Call it again without idempotency_key; retrying a query is always safe.",
                        details={"action": name},
                    )
                result = self.rt.engine.sharing_memory(
                    lambda: self._query(number, prepared, values), budget=budget
                )
                self.rt.record_read("run_action", actor, audit_args)
                return result
            # each try is its own transaction, rolled back when it failed: safe to run again
            return self.rt.engine.sharing_memory(
                lambda: self._mutate(name, args or {}, idempotency_key, actor, audit_args), budget=budget
            )

    def _query(self, number: int, prepared: Prepared, values: dict[str, Any]) -> ActionResult:
        with self.rt.engine.snapshot(timeout=self.rt.limits.action_timeout_s) as reader:
            return self._statements(reader, number, prepared, values)

    def _mutate(
        self, name: str, args: dict[str, Any], key: str | None, actor: str, audit_args: dict[str, Any]
    ) -> ActionResult:
        limits = self.rt.limits
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.rt.engine.transaction(
                    timeout=limits.action_timeout_s, wait=limits.lane_wait_s
                ) as tx:
                    number, prepared = self.prepared(name)  # the version committed as the lane let us in
                    if prepared.spec.kind != "mutation":
                        raise ActionError(
                            Code.ACTION_INVALID_ARGS,
                            f"action {name!r} became a query in version {number} while this call waited",
                            hint="Call it again; it now only reads.",
                            details={"action": name, "version": number},
                        )
                    values = _validate(prepared, args)
                    return self._mutate_once(tx, number, prepared, values, key, actor, audit_args)
            except ButtressError as error:
                if error.code == Code.ENGINE_CONFLICT and attempt < MAX_ATTEMPTS:
                    continue
                raise _constraint(name, error) from None
        raise AssertionError("unreachable")

    def _mutate_once(
        self,
        tx: Tx,
        number: int,
        prepared: Prepared,
        values: dict[str, Any],
        key: str | None,
        actor: str,
        audit_args: dict[str, Any],
    ) -> ActionResult:
        name = prepared.spec.name
        args_hash = ""
        if key is not None:
            args_hash = hashlib.sha256(canonical_json(_jsonable(values)).encode()).hexdigest()
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
        acting = self.rt.policy.acting(actor, operator=actor == OPERATOR)
        result = self.apply(tx, number, prepared, values, actor, acting)
        if key is not None:
            tx.execute(
                "INSERT INTO _buttress.idempotency VALUES (?, ?, ?, ?, ?, ?)",
                [name, key, args_hash, result.model_dump_json(), number, now_iso()],
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

    def apply(
        self,
        tx: Tx,
        number: int,
        prepared: Prepared,
        values: dict[str, Any],
        actor: str,
        acting: Acting | None = None,
    ) -> ActionResult:
        """A mutation's statements, its reference and invariant checks, and its emits, in ``tx``; the
        emits' messages and runs carry ``acting``."""
        name = prepared.spec.name
        touched = references.Touched()
        result = self._statements(tx, number, prepared, values, touched)
        references.enforce(tx, prepared.references, touched, prepared.capture, prepared.field_checks)
        check_invariants(tx, prepared.checks, touched, action=name, version=number)
        if prepared.spec.emits:
            outbox.emit(tx, prepared.app, prepared.spec, number, values, result, actor=actor, acting=acting)
        return result

    def run_in(
        self, tx: Tx, name: str, args: dict[str, Any], *, actor: str, acting: Acting | None = None
    ) -> ActionResult:
        """Run an action inside ``tx``, which the caller commits with its own record (a workflow step's
        outcome, a subscription's cursor) and audits itself; the version is the one current now.

        ``acting``: on whose behalf (a run's, a message's); its grant must cover the action and what its
        emits set running (``policy.denied`` otherwise); None: the operator's."""
        number, prepared = self.prepared(name)
        if acting is not None and acting.grant is not None:
            if not acting.allows("actions", name):
                raise PolicyError(
                    Code.POLICY_DENIED,
                    f"agent {acting.agent!r} may not run action {name!r}",
                    hint="This is the operator's decision (buttress.toml: actions = [...]); ask them rather "
                    "than retrying.",
                    details={"agent": acting.agent, "action": name},
                )
            denied = graph.of_action(prepared.app, name).denied(acting.grant)
            if denied:
                raise PolicyError(
                    Code.POLICY_DENIED,
                    f"agent {acting.agent!r} may not run action {name!r}: its emits would run "
                    + ", ".join(f"{kind[:-1]} {item}" for kind, item in denied),
                    hint="This is the operator's decision (buttress.toml); ask them rather than retrying.",
                    details={"agent": acting.agent, "action": name, "denied": [list(d) for d in denied]},
                )
        values = _validate(prepared, args)
        try:
            return self._run_in(tx, number, prepared, values, actor, acting)
        except ButtressError as error:
            raise _constraint(name, error) from None

    def _run_in(
        self,
        tx: Tx,
        number: int,
        prepared: Prepared,
        values: dict[str, Any],
        actor: str,
        acting: Acting | None,
    ) -> ActionResult:
        if prepared.spec.kind == "query":
            return self._statements(tx, number, prepared, values)
        return self.apply(tx, number, prepared, values, actor, acting)

    def _statements(
        self,
        session: Session,
        number: int,
        prepared: Prepared,
        values: dict[str, Any],
        touched: references.Touched | None = None,
    ) -> ActionResult:
        """Run every statement of the action at version ``number``; the result carries the rows of the
        last row-producing one, within the result limits.

        Statements that return captured columns (``capture.plan``) add the values of the rows they
        touched to ``touched``; the agent's own output columns come first and are what it gets back.
        """
        columns: list[str] = []
        rows: list[list[Any]] = []
        affected = 0
        truncated = False
        limits = self.rt.limits
        with session.as_agent():  # the agent's statements as its role; the checks after as the owner
            for index, statement in enumerate(prepared.statements):
                with _as_written(index, statement):
                    count, produced = self._statement(session, statement, values, touched, limits)
                affected += count
                if produced is not None:
                    columns, rows, truncated = produced
        return ActionResult(
            action=prepared.spec.name,
            kind=prepared.spec.kind,
            columns=columns,
            rows=rows,
            row_count=len(rows),
            rows_affected=affected,
            truncated=truncated,
            version=number,
        )

    def _statement(
        self,
        session: Session,
        statement: capture.Statement,
        values: dict[str, Any],
        touched: references.Touched | None,
        limits: Any,
    ) -> tuple[int, tuple[list[str], list[list[Any]], bool] | None]:
        """Run one statement: (rows affected, (columns, rows, truncated) when it produced rows of its
        own, which become the result unless a later statement produces some)."""
        analysis = statement.analysis
        params = {p: values.get(p) for p in analysis.params} or None
        if (statement.captured or statement.checks) and touched is not None:
            if not statement.exact:
                touched.inexact.add(statement.table or "")
            if statement.before is not None:
                before = {p: values.get(p) for p in statement.before_params} or None
                old = session.execute_agent(statement.before, before).fetchall()
                touched.add(statement.table or "", _images(statement.captured, old), old=True)
            result = session.execute_agent(statement.sql, params)
            raw = result.fetchall()
            width = len(result.description or [])
            own = width - statement.tail
            verdicts = own + len(statement.captured)
            if statement.checks:
                fieldchecks.refuse(statement.checks, statement.report, (r[verdicts:] for r in raw))
            if len(raw) > MAX_CAPTURED:
                touched.inexact.add(statement.table or "")
            else:
                touched.add(
                    statement.table or "",
                    _images(statement.captured, [r[own:verdicts] for r in raw]),
                    old=statement.deletes,
                )
            if statement.outputs == -1:
                return len(raw), None
            columns = [d[0] for d in (result.description or [])[:own]]
            converted = [[plain(v) for v in r[:own]] for r in raw[: limits.max_rows]]
            return len(raw), (columns, converted, len(raw) > limits.max_rows)
        result = session.execute_agent(statement.sql, params)
        if touched is not None:
            for table in analysis.writes:  # written; no check needs its rows' values
                touched.new.setdefault(table, [])
        if analysis.kind == "select" or analysis.output_columns:
            columns = [d[0] for d in result.description or []]
            rows, truncated = fetch(
                result, max_rows=limits.max_rows, max_bytes=limits.max_result_bytes, deadline=session.deadline
            )
            affected = len(rows) + _count_rest(result) if analysis.kind != "select" else 0
            return affected, (columns, rows, truncated)
        counted = result.fetchone()
        return (int(counted[0]) if counted is not None and isinstance(counted[0], int) else 0), None


@contextlib.contextmanager
def _as_written(index: int, statement: capture.Statement) -> Iterator[None]:
    """An error from one statement names it as the agent wrote it (its index, its text, the entity it
    writes), not as the runtime runs it (with captured columns added)."""
    try:
        yield
    except ButtressError as error:
        if "sql" in error.details:
            error.details["sql"] = statement.analysis.sql
        error.details.setdefault("statement", index)
        written = next(iter(statement.analysis.writes), None)
        if written is not None:
            error.details.setdefault("entity", written)
        raise


_DUPLICATE = re.compile(r'Duplicate key "(?P<key>.*)" violates (?P<kind>primary key|unique) constraint')


def _constraint(name: str, error: ButtressError) -> ButtressError:
    """A DuckDB constraint refusal (key, NOT NULL, CHECK, foreign key) as the action's error, in the
    agent's terms: the entity and the key values a duplicate collides on, the statement as written."""
    if error.code != Code.ENGINE_CONSTRAINT:
        return error
    details = dict(error.details)
    message = f"action {name!r}: {error.message}"
    found = _DUPLICATE.search(str(details.get("reason", "")))
    duplicate = details.pop("duplicate", None)  # PostgreSQL's, from its diagnostics
    if found is not None:
        pairs = [part.split(": ", 1) for part in found.group("key").split(", ")]
        duplicate = {
            "kind": found.group("kind"),
            "values": {k: v for k, v in (p for p in pairs if len(p) == 2)},
        }
    if duplicate is not None:
        values = duplicate["values"]
        entity = details.get("entity")
        key = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        kind = "primary key" if duplicate["kind"] == "primary key" else "unique key"
        message = (
            f"action {name!r}: a row of {entity} with {key} already exists ({kind} {', '.join(values)})"
            if entity
            else f"action {name!r}: a row with {key} already exists ({kind} {', '.join(values)})"
        )
        details.update(key=list(values), values=values)
    return ActionError(
        Code.ACTION_CONSTRAINT,
        message,
        hint="The arguments break a key, NOT NULL or CHECK constraint; read details.reason (details.values "
        "names a duplicate's key).",
        details=details,
    )


MAX_CAPTURED = 10_000
"""More rows touched by one statement than this, and its checks run in full."""


def _images(columns: tuple[str, ...], rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def check_invariants(
    session: Session,
    checks: tuple[invariants.Check, ...],
    touched: references.Touched,
    *,
    action: str,
    version: int,
) -> None:
    """Every invariant the transaction's writes can affect, restricted to the keys it touched where the
    invariant allows (``invariants.analyze``), else in full; the first violation refuses it all."""
    tables = touched.tables
    for check in checks:
        met = check.reads & tables
        if check.reads and not met:
            continue
        restricted = None
        if check.incremental and not (met & touched.inexact):
            keys: list[Any] = []
            for table in met:
                keys.extend(touched.values(table, check.keys.get(table, ())))
            restricted = check.restricted(keys)
        try:
            if restricted is None:
                sample = records(session.execute(f"SELECT * FROM {check.sql} AS violations LIMIT {SAMPLE}"))
            else:
                sql, params = restricted
                sample = records(
                    session.execute(f"SELECT * FROM {sql} AS violations LIMIT {SAMPLE}", params or None)
                )
        except ButtressError as error:
            if error.code in {Code.QUERY_TIMEOUT, Code.LIMIT_MEMORY, Code.ENGINE_CONFLICT}:
                raise
            error.message = f"invariant {check.name!r} could not be checked: {error.message}"
            error.details.update(invariant=check.name, action=action)
            error.hint = "The invariant fails on the data this call writes; tell the operator, or replace it."
            raise
        if sample:
            raise ActionError(
                Code.INVARIANT_VIOLATED,
                f"invariant {check.name!r} would be violated: {check.description}",
                hint="This is a business rule, not a bug: the call was rolled back and nothing changed.",
                details={"invariant": check.name, "action": action, "rows": sample, "version": version},
            )


def _count_rest(result: Any) -> int:
    """Rows left in a result, counted a chunk at a time (never all held at once)."""
    count = 0
    while chunk := result.fetchmany(4096):
        count += len(chunk)
    return count


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
