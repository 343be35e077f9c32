"""``buttress eval``: scenarios, a runner and a scorecard for evaluating agents against Buttress.

scenario    the format (one directory per scenario) and its loader; the built-in suite in suite/
seeding     a run's project, copied from a template the scenario's seed was applied to
servers     the real ``buttress serve`` processes of a run (stdio and HTTP), killable
agent       the scripted-agent API (sessions, retries, attempts) scripts drive the server with
external    running any MCP client command as the agent, with the server in its environment
approver    the simulated operator answering approval requests
faults      kill@STEP: SIGKILL the server at a named or random step
providers   fake external providers served for a run (the connectors hook)
fakes       the suite's fake providers: a payment API and a mail sink honouring idempotency keys
checks      evidence (audit log, end state) and the verdict of each check
scorecard   pass@k, pass^k, the table, the expected-failures baseline, the exit code
runner      runs and hygiene (reference passes, null fails, adversaries refused)
cli         ``buttress eval list | run | check``
"""
