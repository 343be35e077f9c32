"""The engine boundary: the only place DuckDB is connected to (``engine``), the system schema
(``catalog``), the hash-chained audit log, the live catalog's fingerprint, and value conversion."""
