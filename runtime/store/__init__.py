"""The engine boundary: the only place DuckDB is connected to (``engine``; statements run on its
``sessions``), the system schema (``catalog``), the hash-chained audit log (``audit``, ``auditchain``),
what people read about the application (``activity`` and its ``*_view`` modules, ``browse``), the live
catalog's fingerprint, and value conversion."""
