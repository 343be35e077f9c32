"""The operator's side of the boundary (pure decisions): policy, capabilities, protected objects,
limits, approvals, connectors."""
