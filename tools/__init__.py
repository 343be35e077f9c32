"""The agent-facing tools, one module per family (``read``, ``change``), sharing ``base``.

``tools.registry.REGISTRY`` is every tool the server registers. This package module stays empty
so that importing ``tools.base`` does not load the tool modules (and the engine behind them).
"""
