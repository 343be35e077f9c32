"""Running the application: actions, invariant and reference checks, workflows, messages, effects."""
