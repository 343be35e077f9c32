"""The SQL guard (pure): sqlglot analysis of every piece of agent SQL (``sqlcheck``) against the
allow-lists (``allowlists``). Unknown means deny. Never touches a database."""
