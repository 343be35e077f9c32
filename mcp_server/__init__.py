"""The MCP face of Buttress: the server (``server``), its error mapping (``errors``), the project
configuration (``project``), the ``buttress`` command line (``cli``) and the scripted demo (``demo``)."""
