"""The product: an application held as a declarative spec over DuckDB, changed by planned, dry-run and
reversible proposals, run through typed actions and durable workflows, every call decided by the
operator's policy and audited. ``runtime.runtime.Runtime`` is its one facade."""
