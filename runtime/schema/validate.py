"""Validating a spec (pure): the structure every operation must leave, and a target spec as a whole
against the base it was changed from.

``validate_structure`` checks keys, references, defaults and checks of every entity; ``apply``
runs it after each operation. ``validate`` then checks views, invariants, actions and flows
against the target spec, and judges shape coherence against ``base``: it refuses an action the
change breaks, an INSERT that fills its table by position (in an action the proposal writes, or in
a stored one whose table's columns change), and a type mismatch the base did not have
(``runtime.schema.usage``). Every object that no longer fits is reported in one error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.errors import ButtressError, Code, SpecError, SqlError
from runtime.schema import flows, usage
from runtime.schema.spec import ActionSpec, AppSpec, EntitySpec, FieldSpec, Ref
from runtime.schema.types import constant_fits
from runtime.sql import sqlcheck
from runtime.sql.facts import Analysis


def fail(message: str, hint: str | None = None, **details: Any) -> SpecError:
    """A ``spec.invalid`` error with ``details``, for the caller to raise."""
    return SpecError(Code.SPEC_INVALID, message, hint=hint, details=details)


# ------------------------------------------------------------------- structure, after each operation


def validate_structure(spec: AppSpec) -> None:
    """Keys, references, defaults and checks of every entity (run after each operation)."""
    seen: set[str] = set()
    for entity in spec.entities:
        if entity.name in seen:
            raise fail(f"duplicate entity {entity.name!r}")
        seen.add(entity.name)
        _validate_entity(spec, entity)
    _refuse_reference_cycles(spec)


def _refuse_reference_cycles(spec: AppSpec) -> None:
    """Foreign keys must form no cycle: tables are created parents first, and rebuilt the same way."""
    parents = {e.name: {f.reference[0] for f in e.fields if f.reference} for e in spec.entities}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise fail(
                f"foreign keys form a cycle: {' -> '.join(cycle)}",
                "Break the cycle: make one of the references a plain field, or use a link entity.",
                cycle=cycle,
            )
        state[name] = 1
        for parent in sorted(parents.get(name, ())):
            visit(parent, [*path, name])
        state[name] = 2

    for entity in sorted(parents):
        visit(entity, [])


def _validate_entity(spec: AppSpec, entity: EntitySpec) -> None:
    names = entity.field_names
    if len(set(names)) != len(names):
        raise fail(f"entity {entity.name!r} has duplicate field names", entity=entity.name)
    where = f"entity {entity.name!r}"
    _require_columns(entity, entity.primary_key, f"{where} primary key")
    if len(set(entity.primary_key)) != len(entity.primary_key):
        raise fail(f"{where} primary key repeats a field")
    for f in entity.fields:
        if f.name in entity.primary_key and f.nullable:
            raise fail(f"{entity.name}.{f.name} is in the primary key and cannot be nullable")
    for cols in entity.unique:
        _require_columns(entity, cols, f"{where} unique set")
    for index in entity.indexes:
        _require_columns(entity, index.columns, f"{where} index {index.name!r}")
    for f in entity.fields:
        _validate_field(spec, entity, f)


def _require_columns(entity: EntitySpec, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if entity.field(c) is None]
    if missing:
        raise fail(f"{what} names unknown fields {missing}", f"Fields: {', '.join(entity.field_names)}.")


def _validate_field(spec: AppSpec, entity: EntitySpec, f: FieldSpec) -> None:
    label = f"{entity.name}.{f.name}"
    expr = f.default_expr
    if expr is not None:
        allowed = {
            "now()": {"timestamp", "timestamptz", "date"},
            "current_date": {"date", "timestamp", "timestamptz"},
            "uuid()": {"uuid", "text"},
            "autoincrement": {"integer", "bigint"},
        }[expr.expr]
        if f.type not in allowed:
            raise fail(
                f"default {expr.expr} does not fit {label} of type {f.type}", f"Use it on: {sorted(allowed)}."
            )
    elif f.default is not None:
        check_constant(f.default, f.type, f"{label} default")
    if f.check is not None:
        sqlcheck.analyze_expression(f.check, entity.field_names, context=f"check of {label}")
    ref = f.reference
    if f.references is not None:
        if ref is None or not ref[1]:
            raise fail(f"{label} references {f.references!r}; write it as 'entity.field'")
        if ref[0] == entity.name:
            raise fail(
                f"{label} references its own entity",
                "Self-references are not supported yet; use a link entity.",
            )
        target = spec.entity(ref[0])
        if target is None:
            raise fail(f"{label} references unknown entity {ref[0]!r}")
        target_field = target.field(ref[1])
        if target_field is None:
            raise fail(f"{label} references unknown field {f.references!r}")
        if (ref[1],) != target.primary_key and (ref[1],) not in target.unique:
            raise fail(
                f"{label} references {f.references}, which is neither the primary key nor unique",
                "Reference a single-field primary key, or add a unique set on it first.",
            )
        if target_field.type != f.type:
            raise fail(f"{label} is {f.type} but references {f.references} of type {target_field.type}")
    if f.on_delete != "restrict":
        if f.references is None:
            raise fail(f"{label} references nothing: on_delete has no meaning for it")
        if spec.checked_by != "buttress":
            raise fail(
                f"{label}: on_delete {f.on_delete} needs references checked by buttress",
                'Add {"op": "set_checked_by", "by": "buttress"} first (DuckDB constraints only restrict).',
            )
        if f.on_delete == "set_null" and not f.nullable:
            raise fail(f"{label}: on_delete set_null needs a nullable field", "Make the field nullable.")


def check_constant(value: Any, logical: str, label: str) -> None:
    """Refuse a constant that does not fit its logical type."""
    if not constant_fits(value, logical):
        raise fail(f"{label} {value!r} is not a valid {logical} value")


# ------------------------------------------------------------------ the whole spec, against its base


def validate(
    spec: AppSpec,
    *,
    changed_actions: frozenset[str] | None = None,
    changed: frozenset[str] = frozenset(),
    base: AppSpec | None = None,
) -> None:
    """Validate a whole spec: structure, then views, invariants and actions against it.

    Every object that no longer fits is reported at once, in one error (``details.problems``), so an
    agent fixes a dropped entity's view, invariant and actions in one proposal, not one per attempt.
    Every action is analysed; what a change may newly break is judged against ``base`` (the spec the
    change applies to): a type mismatch the base did not have, an INSERT that fills a table by
    position (stored before column lists were made explicit) when that table's columns change.
    ``changed_actions`` (None: all) are the actions the proposal writes: their statements must not
    depend on column order at all. ``changed`` names the objects the proposal itself writes
    (``view:x``, ``invariant:x``), whose hint is to fix their SQL rather than to replace them.
    """
    validate_structure(spec)
    names: set[str] = {e.name for e in spec.entities}
    relations: dict[str, tuple[str, ...]] = {e.name: e.field_names for e in spec.entities}
    entities = frozenset(e.name for e in spec.entities)
    problems: list[tuple[str, str, ButtressError]] = []
    for view in spec.views:
        if view.name in names:
            raise fail(f"view {view.name!r} collides with another entity or view")
        try:
            analysis = sqlcheck.analyze_query(view.sql, relations)
            relations[view.name] = analysis.output_columns
            if f"view:{view.name}" in changed:
                usage.refuse_order_dependence(analysis, spec, where=f"view {view.name!r}")
        except SqlError as error:
            problems.append(("view", view.name, error))
        names.add(view.name)
    for invariant in spec.invariants:
        try:
            analysis = sqlcheck.analyze_query(invariant.sql, relations)
            if f"invariant:{invariant.name}" in changed:
                usage.refuse_order_dependence(analysis, spec, where=f"invariant {invariant.name!r}")
        except SqlError as error:
            problems.append(("invariant", invariant.name, error))
    base_types = _type_problem_keys(base) if base is not None else None
    for action in spec.actions:
        written = changed_actions is None or action.name in changed_actions
        try:
            analyses = check_action(action, relations, entities)
            if written:
                for index, analysis in enumerate(analyses):
                    _refuse_positional(action, index, analysis, spec)
            elif base is not None:
                _refuse_reordered(action, analyses, spec, base)
            mismatches = usage.type_problems(action, analyses, spec)
            if not written and base_types is not None:
                mismatches = [m for m in mismatches if (action.name, *_type_key(m)) not in base_types]
            if mismatches:
                raise usage.type_error(action, mismatches)
        except ButtressError as error:
            problems.append(("action", action.name, error))
    if problems:
        raise _objects_misfit(problems, changed | {f"action:{a}" for a in changed_actions or ()})
    if len({a.name for a in spec.actions}) != len(spec.actions):
        raise fail("duplicate action names")
    flows.validate_flows(spec)
    if len({i.name for i in spec.invariants}) != len(spec.invariants):
        raise fail("duplicate invariant names")


def _type_key(problem: usage.TypeProblem) -> tuple[Any, ...]:
    return (problem.link, problem.other_type, problem.column_type)


_TYPE_KEYS: dict[str, frozenset[tuple[Any, ...]]] = {}


def _type_problem_keys(spec: AppSpec) -> frozenset[tuple[Any, ...]]:
    """The type mismatches ``spec``'s own actions already had (cached per spec): a change is judged
    on what it newly breaks."""
    key = spec.hash()
    found = _TYPE_KEYS.get(key)
    if found is None:
        relations = spec.relations()
        entities = frozenset(e.name for e in spec.entities)
        keys: set[tuple[Any, ...]] = set()
        for action in spec.actions:
            try:
                analyses = check_action(action, relations, entities)
            except ButtressError:
                continue
            keys.update((action.name, *_type_key(m)) for m in usage.type_problems(action, analyses, spec))
        if len(_TYPE_KEYS) > 256:
            _TYPE_KEYS.clear()
        found = _TYPE_KEYS[key] = frozenset(keys)
    return found


def _refuse_positional(action: ActionSpec, index: int, analysis: Analysis, spec: AppSpec) -> None:
    """A statement the proposal writes must name the columns it fills (``explicit_operations`` gives
    an INSERT its list; what is left could not be given one)."""
    where = f"action {action.name!r} statement {index}"
    usage.refuse_order_dependence(analysis, spec, where=where)
    if any(d.kind == "insert_without_columns" for d in analysis.order_dependent):
        usage.explicit_insert(analysis.sql, spec, where=where)  # raises what makes it impossible
        raise SqlError(
            Code.SQL_MISMATCH,
            f"{where}: an INSERT without a column list fills its table by position",
            hint="Name the columns: INSERT INTO <table> (<columns>) VALUES (...).",
            details={"action": action.name, "statement": index},
        )


def _refuse_reordered(action: ActionSpec, analyses: Sequence[Analysis], spec: AppSpec, base: AppSpec) -> None:
    """An unchanged action stored with an INSERT that fills its table by position breaks when the
    change alters that table's columns: the values would land in other columns."""
    for index, analysis in enumerate(analyses):
        for found in analysis.order_dependent:
            if found.kind != "insert_without_columns" or found.table is None:
                continue
            before, after = base.entity(found.table), spec.entity(found.table)
            if before is None or after is None or before.field_names == after.field_names:
                continue
            try:
                explicit = usage.explicit_insert(analysis.sql, base)
            except ButtressError:
                explicit = f"INSERT INTO {found.table} ({', '.join(before.field_names)}) ..."
            raise SqlError(
                Code.SQL_MISMATCH,
                f"action {action.name!r} statement {index} fills {found.table} by position, and this change "
                f"makes its columns ({', '.join(before.field_names)}) into ({', '.join(after.field_names)}): "
                "its values would land in other columns",
                hint=f"Replace the action in the same proposal with its columns named, e.g. {explicit}",
                details={
                    "action": action.name,
                    "statement": index,
                    "table": found.table,
                    "columns_before": list(before.field_names),
                    "columns_after": list(after.field_names),
                    "explicit": explicit,
                },
            )


def _objects_misfit(problems: list[tuple[str, str, ButtressError]], changed: frozenset[str]) -> ButtressError:
    """One error for every view, invariant and action that does not fit the proposed schema."""
    kind, name, first = problems[0]
    listed = [
        {
            "kind": k,
            "name": n,
            "code": str(e.code),
            "problem": e.message,
            "written_by_this_proposal": f"{k}:{n}" in changed,
        }
        for k, n, e in problems
    ]
    own = [p for p in listed if p["written_by_this_proposal"]]
    existing = [f"{p['kind']} {p['name']}" for p in listed if not p["written_by_this_proposal"]]
    advice = []
    if own:
        advice.append("Fix the SQL of the objects this proposal adds or replaces.")
    if existing:
        advice.append(
            f"The change breaks {', '.join(existing)}: replace or drop them in the same proposal "
            "(replace_view, drop_invariant + add_invariant, replace_action)."
        )
    advice.append(first.hint)
    label = (
        first.message if first.message.startswith(f"{kind} {name!r}") else f"{kind} {name!r}: {first.message}"
    )
    message = (
        label
        if len(problems) == 1
        else f"{len(problems)} objects do not fit: "
        + "; ".join(
            e.message if e.message.startswith(f"{k} {n!r}") else f"{k} {n!r}: {e.message}"
            for k, n, e in problems
        )
    )
    error = type(first)(first.code, message, hint=" ".join(advice), details={**first.details, kind: name})
    error.details["problems"] = listed
    return error


def check_action(
    action: ActionSpec, relations: dict[str, tuple[str, ...]], entities: frozenset[str] | None = None
) -> list[Analysis]:
    """Analyse every statement of an action against the relations; raise on the first problem."""
    entities = frozenset(relations) if entities is None else entities
    declared = {p.name for p in action.params}
    if len(declared) != len(action.params):
        raise fail(f"action {action.name!r} declares a parameter twice")
    analyses = []
    used: set[str] = set()
    for index, statement in enumerate(action.statements):
        try:
            analysis = sqlcheck.analyze_statement(
                statement, relations, allow_writes=action.kind == "mutation"
            )
        except SqlError as error:
            error.details.update(action=action.name, statement=index)
            error.message = f"action {action.name!r} statement {index}: {error.message}"
            raise
        unknown = [p for p in analysis.params if p not in declared]
        if unknown:
            raise SqlError(
                Code.SQL_PARAM,
                f"action {action.name!r} statement {index} uses undeclared parameters {unknown}",
                hint="Declare every $name in params, with its type.",
                details={"action": action.name, "statement": index, "params": unknown},
            )
        views = analysis.writes - entities
        if views:
            raise SqlError(
                Code.SQL_FORBIDDEN,
                f"action {action.name!r} statement {index} writes to views {sorted(views)}",
                hint="Write to entities; views are read-only.",
                details={"action": action.name, "statement": index, "views": sorted(views)},
            )
        used.update(analysis.params)
        analyses.append(analysis)
    for emit in action.emits:  # a parameter may exist only to be emitted
        for value in (*emit.args.values(), emit.run_id):
            if isinstance(value, Ref) and value.parts[0] == "args":
                used.add(value.parts[1])
    unused = sorted(declared - used)
    if unused:
        raise SqlError(
            Code.SQL_PARAM,
            f"action {action.name!r} declares parameters it never uses: {unused}",
            hint="Remove them from params or use them as $name in a statement.",
            details={"action": action.name, "params": unused},
        )
    return analyses
