"""The planner's rules, one module per family of operations (pure).

A rule takes the spec before and after one operation, the operation and the plan's Context, and returns
the Draft of its step; ``runtime.migrate.plan`` maps each operation type to its rule (``_PLANNERS``).
"""
