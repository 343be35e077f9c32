"""Durable workflows, messages and external effects, in the application's own database.

``status``: the run and step statuses and the sets of them the code asks about, in Python and SQL
(pure). ``tables``: the system tables and the SQL the planner writes over them (pure). ``values``:
resolving ``Ref`` values and checking payloads (pure). ``store``: reading and writing runs, their
steps, signals and timers in a transaction; ``messages`` and ``effects``: the same for messages and
subscription cursors, and for effects. ``connectors``: the operator's external endpoints and the HTTP
call. ``scheduler``: the loop in ``buttress serve`` that hands out due work; ``steps``: how a run takes
each kind of step (and compensates); ``delivery``: messages to subscriptions. ``service``: the
operations behind the ``Runtime`` facade; ``outbox``: an action's emits; ``pinned``: runs in flight
against a new version.
"""
