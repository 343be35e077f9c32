"""``python -m mcp_server``: the ``buttress`` command line."""

from mcp_server.cli import main

raise SystemExit(main())
