"""What describe_app says of each action: the tables and fields its statements read and write (from
the SQL analysis), its parameters, emits and tool name. Pure: a spec in, summaries out."""

from __future__ import annotations

from runtime.errors import ButtressError
from runtime.results import ActionSummary
from runtime.schema.spec import AppSpec
from runtime.sql import sqlcheck


def action_summaries(spec: AppSpec) -> list[ActionSummary]:
    """Every action of ``spec`` with what its statements read and write (a statement the analysis
    cannot read is left out of the counts, not reported: describe_app never fails on one)."""
    relations = spec.relations()
    found: list[ActionSummary] = []
    for action in spec.actions:
        reads: set[str] = set()
        writes: set[str] = set()
        fields_read: set[tuple[str, str]] = set()
        fields_written: set[tuple[str, str]] = set()
        for statement in action.statements:
            try:
                analysis = sqlcheck.analyze_statement(
                    statement, relations, allow_writes=action.kind == "mutation"
                )
            except ButtressError:
                continue
            reads |= analysis.reads
            writes |= analysis.writes
            fields_read |= analysis.columns_read
            fields_written |= analysis.columns_written
        found.append(
            ActionSummary(
                name=action.name,
                kind=action.kind,
                description=action.description,
                params=list(action.params),
                reads=sorted(reads),
                writes=sorted(writes),
                fields_read=sorted(".".join(f) for f in fields_read),
                fields_written=sorted(".".join(f) for f in fields_written),
                emits=list(action.emits),
                tool=f"app_{action.name}",
            )
        )
    return found
