"""Durable workflows, messages and external effects, in the application's own database.

``tables``: the system tables and the SQL the planner writes over them (pure). ``values``: resolving
``Ref`` values and checking payloads (pure). ``store``: reading and writing runs, steps, messages
and effects in a transaction. ``connectors``: the operator's external endpoints and the HTTP call.
``scheduler``: the loop in ``buttress serve`` that advances runs and delivers messages.
"""
