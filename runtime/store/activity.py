"""What the people who run an application read about it, in one place: the ``Runtime`` facade's
control-room reads import this module. The work in flight (runs by state, unknown effects,
undelivered messages) is counted here; the audit log's pages and counts are ``audit_view``'s,
versions, proposals and approval requests ``proposals_view``'s, runs and their histories
``runs_view``'s, and their functions are importable from here.

Every function takes a snapshot session and returns result models; none writes. Paging and counting
happen in the database, by ``seq`` (the audit log and proposals) or ``number`` (versions), so a page
costs the same with a hundred entries or a million. Filters are fixed clauses with bound values:
no text from a request ever becomes SQL.

The control room (``buttress ui``) reads through these, each page one audited ``Runtime`` read.
"""

from __future__ import annotations

from typing import Final

from runtime.results import Facet, WorkflowSummary
from runtime.store.audit_view import agent_head as agent_head
from runtime.store.audit_view import audit_count as audit_count
from runtime.store.audit_view import audit_page as audit_page
from runtime.store.audit_view import audit_stats as audit_stats
from runtime.store.audit_view import recent as recent
from runtime.store.engine import Session
from runtime.store.proposals_view import approval_request as approval_request
from runtime.store.proposals_view import approval_requests as approval_requests
from runtime.store.proposals_view import latest_version as latest_version
from runtime.store.proposals_view import open_requests as open_requests
from runtime.store.proposals_view import pending_proposals as pending_proposals
from runtime.store.proposals_view import proposal_detail as proposal_detail
from runtime.store.proposals_view import proposal_page as proposal_page
from runtime.store.proposals_view import version_info as version_info
from runtime.store.proposals_view import version_page as version_page
from runtime.store.runs_view import RunSearch as RunSearch
from runtime.store.runs_view import run_history as run_history
from runtime.store.runs_view import search_runs as search_runs

UNDELIVERED: Final = (
    "m.held IS NOT NULL OR (m.external AND m.acked_at IS NULL) OR EXISTS (SELECT 1 FROM _buttress.cursors "
    "AS c WHERE c.active AND c.topic = m.topic AND c.last_seq < m.seq)"
)
"""A message some consumer has still to receive, or one held back (as ``list_messages(undelivered=True)``)."""


def unknown_effects(session: Session) -> int:
    """How many effects have no answer after every attempt (the operator retries or resolves them)."""
    return int(session.scalar("SELECT count(*) FROM _buttress.effects WHERE state = 'unknown'"))


def workflow_summary(session: Session) -> WorkflowSummary:
    """Runs by state (most first), unknown effects and undelivered messages, counted in the database."""
    states = session.fetchall(
        "SELECT status, count(*) AS n FROM _buttress.runs GROUP BY status ORDER BY n DESC, status"
    )
    return WorkflowSummary(
        runs_by_status=[Facet(value=str(status), count=int(count)) for status, count in states],
        unknown_effects=unknown_effects(session),
        undelivered_messages=int(
            session.scalar(f"SELECT count(*) FROM _buttress.messages AS m WHERE {UNDELIVERED}")
        ),
    )
