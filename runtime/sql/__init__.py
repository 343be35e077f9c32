"""The SQL guard (pure): sqlglot analysis of every piece of agent SQL against the allow-lists
(``allowlists``). Unknown means deny. Never touches a database.

``sqlcheck`` holds the entry points and draws the decision flow; its steps are ``parsing`` (text to
one statement's tokens and tree, and the text helpers), ``inventory`` (the allow-list walk),
``sizes`` (size rules), ``tables`` (table binding), ``columns`` (column resolution) and
``column_order``; ``facts`` holds what it reports, ``refusals`` how it says no."""
