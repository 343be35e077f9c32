"""Property: whatever sequence of schema changes, action changes, rollbacks and pinned runs an agent
goes through, every deploy or rollback that succeeds leaves every action, and every step a run in
flight will take, putting each value into the column it was meant for — or it was refused.

The oracle knows the *identity* of every field (it survives renames and widening type changes) and
every action parameter names the identity it is meant for (``p_<identity>``); values are tokens of
their identity (``f3:17``, or ``3*100000+17`` for integers), so a value in the wrong column is seen at
once. Actions come in every shape agents write: INSERT by position, INSERT with columns, UPDATE, and
upsert. Runs wait for a signal before their action step, so schema changes land under them.

Derandomized in the default run; ``pytest --hypothesis-profile=explore`` searches longer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from runtime.errors import ButtressError
from runtime.runtime import Runtime

KINDS = ("positional", "explicit", "update", "upsert")
EVOLUTIONS: list[int] = [0]
"""Successful deploys and rollbacks, counted across examples (reported in the test's output)."""


@dataclass(frozen=True)
class Field:
    identity: int
    name: str
    type: str  # integer, bigint or text


@dataclass
class Model:
    fields: list[Field] = field(default_factory=list)
    actions: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    """action name -> (kind, identities of the fields it writes, in its parameter order)."""
    workflows: dict[str, str] = field(default_factory=dict)
    """workflow name -> the action its step calls."""

    def copy(self) -> Model:
        return Model(list(self.fields), dict(self.actions), dict(self.workflows))

    def by_identity(self, identity: int) -> Field | None:
        return next((f for f in self.fields if f.identity == identity), None)


def token(f: Field | None, identity: int, n: int) -> Any:
    kind = f.type if f is not None else "text"
    return identity * 100_000 + n if kind in {"integer", "bigint"} else f"f{identity}:{n}"


def identity_of(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value // 100_000
    text = str(value)
    if text.startswith("f") and ":" in text:
        return int(text[1:].split(":", 1)[0])
    return int(text) // 100_000  # an integer token read back from a text column


def action_op(
    name: str, kind: str, model: Model, identities: tuple[int, ...], *, replace: bool
) -> dict[str, Any]:
    fields = [model.by_identity(i) for i in identities]
    assert all(f is not None for f in fields)
    named = [f for f in fields if f is not None]
    params = [{"name": "id", "type": "integer"}] + [
        {"name": f"p_{f.identity}", "type": f.type, "nullable": True} for f in named
    ]
    if kind == "positional":
        values = ", ".join(["$id", *(f"$p_{f.identity}" for f in named)])
        sql = f"insert into item values ({values})"
    elif kind == "explicit":
        columns = ", ".join(["id", *(f.name for f in named)])
        values = ", ".join(["$id", *(f"$p_{f.identity}" for f in named)])
        sql = f"insert into item ({columns}) values ({values})"
    elif kind == "update":
        sets = ", ".join(f"{f.name} = $p_{f.identity}" for f in named)
        sql = f"update item set {sets} where id = $id"
    else:
        columns = ", ".join(["id", *(f.name for f in named)])
        values = ", ".join(["$id", *(f"$p_{f.identity}" for f in named)])
        sets = ", ".join(f"{f.name} = excluded.{f.name}" for f in named)
        sql = f"insert into item ({columns}) values ({values}) on conflict (id) do update set {sets}"
    return {
        "op": "replace_action" if replace else "add_action",
        "action": {"name": name, "kind": "mutation", "params": params, "statements": [sql]},
    }


def workflow_op(name: str, action: str, model: Model, *, replace: bool) -> dict[str, Any]:
    _, identities = model.actions[action]
    params = [{"name": "id", "type": "integer"}] + [
        {"name": f"p_{i}", "type": model.by_identity(i).type, "nullable": True}  # type: ignore[union-attr]
        for i in identities
    ]
    return {
        "op": "replace_workflow" if replace else "add_workflow",
        "workflow": {
            "name": name,
            "params": params,
            "steps": [
                {"name": "hold", "kind": "wait", "signal": "go"},
                {
                    "name": "write",
                    "kind": "action",
                    "action": action,
                    "args": {p["name"]: {"from": f"input.{p['name']}"} for p in params},
                },
            ],
        },
    }


class ShapeCoherence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="buttress-shape-"))
        self.rt = Runtime.open(self.dir / "app.duckdb", audit_reads=False)
        self.models: dict[int, Model] = {}
        self.model = Model()
        self.counter = itertools.count(1)
        self.rows = itertools.count(1)
        self.pending: dict[str, tuple[str, tuple[int, ...], int]] = {}
        """run id -> (action, identities it passes, row id)."""
        self.refusals: list[str] = []

    # ------------------------------------------------------------------------------- helpers

    def apply(self, ops: list[dict[str, Any]], model: Model) -> bool:
        """Propose, dry-run and deploy; on success the model becomes ``model``. A refusal must name why."""
        try:
            proposal = self.rt.propose(ops)
            report = self.rt.dry_run(proposal.proposal_id)
            if not report.passed:
                assert report.error is not None and report.error["code"]
                self.refusals.append(str(report.error["code"]))
                return False
            version = self.rt.deploy(proposal.proposal_id).version
        except ButtressError as error:
            assert error.code and error.message
            self.refusals.append(str(error.code))
            return False
        self.model = model
        self.models[version] = model.copy()
        EVOLUTIONS[0] += 1
        return True

    def users(self, identity: int) -> list[str]:
        return [name for name, (_, ids) in self.model.actions.items() if identity in ids]

    def repaired(self, model: Model, ops: list[dict[str, Any]], touched: int, *, drop: bool) -> None:
        """Replace (or drop) the actions using ``touched`` and the workflows calling them, in ``ops``."""
        for name in self.users(touched):
            kind, ids = model.actions[name]
            callers = [w for w, a in model.workflows.items() if a == name]
            for workflow in callers:
                ops.append({"op": "drop_workflow", "name": workflow})
                del model.workflows[workflow]
            if drop:
                ids = tuple(i for i in ids if i != touched)
                if not ids and kind != "positional":
                    ops.append({"op": "drop_action", "name": name})
                    del model.actions[name]
                    continue
            if kind == "positional":
                ids = tuple(f.identity for f in model.fields)
            model.actions[name] = (kind, ids)
            ops.append(action_op(name, kind, model, ids, replace=True))

    # --------------------------------------------------------------------------------- rules

    @initialize()
    def create(self) -> None:
        base = Model(fields=[Field(1, "c1", "text"), Field(2, "c2", "integer")])
        ops = [
            {
                "op": "add_entity",
                "entity": {
                    "name": "item",
                    "primary_key": ["id"],
                    "fields": [{"name": "id", "type": "integer"}]
                    + [{"name": f.name, "type": f.type, "nullable": True} for f in base.fields],
                },
            }
        ]
        assert self.apply(ops, base)
        self.models[0] = Model()
        next(self.counter)
        next(self.counter)

    @precondition(lambda self: bool(self.model.fields))  # the entity exists (not back at version 0)
    @rule(kind=st.sampled_from(["text", "integer"]))
    def add_field(self, kind: str) -> None:
        identity = next(self.counter) + 2
        model = self.model.copy()
        model.fields.append(Field(identity, f"c{identity}", kind))
        op = {
            "op": "add_field",
            "entity": "item",
            "field": {"name": f"c{identity}", "type": kind, "nullable": True},
        }
        self.apply([op], model)  # positional actions were stored with their columns: they still fit

    @precondition(lambda self: len(self.model.fields) > 1)
    @rule(data=st.data(), repair=st.booleans())
    def drop_field(self, data: st.DataObject, repair: bool) -> None:
        target = data.draw(st.sampled_from(self.model.fields))
        model = self.model.copy()
        model.fields = [f for f in model.fields if f.identity != target.identity]
        ops: list[dict[str, Any]] = []
        if repair:
            self.repaired(model, ops, target.identity, drop=True)
        ops.insert(0, {"op": "drop_field", "entity": "item", "field": target.name})
        self.apply(ops, model)

    @precondition(lambda self: bool(self.model.fields))
    @rule(data=st.data(), repair=st.booleans())
    def rename_field(self, data: st.DataObject, repair: bool) -> None:
        target = data.draw(st.sampled_from(self.model.fields))
        model = self.model.copy()
        renamed = Field(target.identity, f"{target.name}r{next(self.counter)}", target.type)
        model.fields = [renamed if f.identity == target.identity else f for f in model.fields]
        ops: list[dict[str, Any]] = [
            {"op": "rename_field", "entity": "item", "field": target.name, "new_name": renamed.name}
        ]
        if repair:
            self.repaired(model, ops, target.identity, drop=False)
        self.apply(ops, model)

    @precondition(lambda self: any(f.type == "integer" for f in self.model.fields))
    @rule(data=st.data())
    def widen_field(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from([f for f in self.model.fields if f.type == "integer"]))
        model = self.model.copy()
        model.fields = [
            Field(f.identity, f.name, "bigint") if f.identity == target.identity else f for f in model.fields
        ]
        self.apply([{"op": "alter_field", "entity": "item", "field": target.name, "type": "bigint"}], model)

    @precondition(lambda self: bool(self.model.fields))
    @rule(kind=st.sampled_from(KINDS), data=st.data())
    def add_action(self, kind: str, data: st.DataObject) -> None:
        if kind == "positional":
            ids = tuple(f.identity for f in self.model.fields)
        else:
            chosen = data.draw(st.lists(st.sampled_from(self.model.fields), min_size=1, unique=True))
            ids = tuple(f.identity for f in chosen)
        name = f"a{next(self.counter)}"
        model = self.model.copy()
        model.actions[name] = (kind, ids)
        self.apply([action_op(name, kind, model, ids, replace=False)], model)

    @precondition(lambda self: bool(self.model.actions))
    @rule(data=st.data())
    def add_workflow(self, data: st.DataObject) -> None:
        action = data.draw(st.sampled_from(sorted(self.model.actions)))
        name = f"w{next(self.counter)}"
        model = self.model.copy()
        model.workflows[name] = action
        self.apply([workflow_op(name, action, model, replace=False)], model)

    @precondition(lambda self: bool(self.model.workflows))
    @rule(data=st.data())
    def start_run(self, data: st.DataObject) -> None:
        workflow = data.draw(st.sampled_from(sorted(self.model.workflows)))
        action = self.model.workflows[workflow]
        kind, ids = self.model.actions[action]
        row = next(self.rows)
        if kind == "update":
            self.seed_row(row)
        args: dict[str, Any] = {"id": row}
        for identity in ids:
            args[f"p_{identity}"] = token(self.model.by_identity(identity), identity, row)
        run = self.rt.start_workflow(workflow, args)
        self.rt.scheduler.drain()
        self.pending[run.run_id] = (action, ids, row)

    @precondition(lambda self: len(self.models) > 1)
    @rule()
    def rollback(self) -> None:
        try:
            result = self.rt.rollback()
        except ButtressError as error:
            assert error.code and error.message
            self.refusals.append(str(error.code))
            return
        self.model = self.models[result.restored_version].copy()
        self.models[result.version] = self.model.copy()
        EVOLUTIONS[0] += 1

    @precondition(lambda self: bool(self.pending))
    @rule()
    def release_runs(self) -> None:
        for run_id in list(self.pending):
            self.rt.signal_run(run_id, "go")
        self.rt.scheduler.drain()
        for run_id, (_, identities, row) in list(self.pending.items()):
            run = self.rt.get_run(run_id)
            assert run.status == "completed", (run.status, run.error)
            self.check_row(row, identities)
            del self.pending[run_id]

    # ----------------------------------------------------------------------------- the oracle

    def seed_row(self, row: int) -> None:
        with self.rt.engine.transaction() as tx:
            tx.execute("INSERT INTO item (id) VALUES (?) ON CONFLICT DO NOTHING", [row])

    def check_row(self, row: int, identities: tuple[int, ...]) -> None:
        result = self.rt.query("select * from item where id = $id", {"id": row})
        assert len(result.rows) == 1, f"row {row} missing"
        values = dict(zip(result.columns, result.rows[0], strict=True))
        names = {f.name: f.identity for f in self.model.fields}
        for column, value in values.items():
            if column == "id" or value is None:
                continue
            assert column in names, f"column {column} is not in the model"
            assert identity_of(value) == names[column], (
                f"{value!r} landed in {column} (identity {names[column]})"
            )

    @invariant()
    def every_action_puts_every_value_in_its_column(self) -> None:
        for name, (kind, ids) in sorted(self.model.actions.items()):
            row = next(self.rows)
            if kind == "update":
                self.seed_row(row)
            args: dict[str, Any] = {"id": row}
            for identity in ids:
                args[f"p_{identity}"] = token(self.model.by_identity(identity), identity, row)
            self.rt.run_action(name, args)
            self.check_row(row, ids)

    def teardown(self) -> None:
        self.rt.close()


ShapeCoherence.TestCase.settings = settings(
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestShapeCoherence = ShapeCoherence.TestCase


def test_the_evolutions_ran_and_some_were_refused() -> None:
    """The machine above really deployed and rolled back (it cannot pass by refusing everything)."""
    assert EVOLUTIONS[0] >= 20, EVOLUTIONS
