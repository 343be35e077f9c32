"""Changing the application: the pure planner and its hazards, DuckDB DDL, and propose / dry-run /
deploy / rollback / finalize orchestrated over the engine."""
