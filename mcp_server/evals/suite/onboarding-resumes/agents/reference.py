"""The oracle: the onboarding workflow, one run per member (run_id is the start's idempotency key),
the signal for ada. A signal whose answer is lost is not resent blindly (signal_run has no
idempotency key): the agent looks at the run first and signals again only if it still waits."""

from __future__ import annotations

from mcp_server.evals.agent import Agent, Interrupted

RETRY = {"attempts": 8, "backoff_s": 0.1, "factor": 1.5}
ONBOARDING = {
    "name": "onboarding",
    "description": "Welcome mail, wait for the address to be verified, activate, second mail.",
    "params": [{"name": "member", "type": "text"}, {"name": "email", "type": "text"}],
    "steps": [
        {
            "name": "welcome",
            "kind": "effect",
            "connector": "mail",
            "args": {"to": {"from": "input.email"}, "stage": "welcome"},
            "retry": RETRY,
        },
        {"name": "verified", "kind": "wait", "signal": "verified", "timeout_s": 3600},
        {
            "name": "activate",
            "kind": "action",
            "action": "activate",
            "args": {"id": {"from": "input.member"}},
        },
        {
            "name": "active",
            "kind": "effect",
            "connector": "mail",
            "args": {"to": {"from": "input.email"}, "stage": "active"},
            "retry": RETRY,
        },
    ],
}
WAITING = {"waiting", "completed", "compensated", "failed", "cancelled", "blocked"}


async def run(agent: Agent) -> None:
    await agent.ship([{"op": "add_workflow", "workflow": ONBOARDING}], note="onboarding")
    members = (await agent.ok("app_new_members"))["rows"]
    agent.expect([m[0] for m in members] == ["m1", "m2"], f"two new members expected: {members}")
    for member, email in members:
        await agent.ok(
            "start_workflow",
            workflow="onboarding",
            args={"member": member, "email": email},
            run_id=f"onboard-{member}",
        )
    for member, _email in members:
        run_ = await agent.follow(f"onboard-{member}", until=WAITING)
        agent.expect(run_["waiting_on"] == "signal:verified", f"onboard-{member}: {run_}")
    try:
        await agent.ok("signal_run", run_id="onboard-m1", name="verified")
    except Interrupted:
        # the answer was lost: did the signal land? a run still waiting for it did not get it
        run_ = await agent.ok("get_run", run_id="onboard-m1")
        if run_["status"] == "waiting" and run_["waiting_on"] == "signal:verified":
            await agent.ok("signal_run", run_id="onboard-m1", name="verified")
    done = await agent.follow("onboard-m1")
    agent.expect(done["status"] == "completed", f"onboard-m1: {done}")
    grace = await agent.ok("get_run", run_id="onboard-m2")
    agent.expect(grace["waiting_on"] == "signal:verified", f"onboard-m2 should still wait: {grace}")
