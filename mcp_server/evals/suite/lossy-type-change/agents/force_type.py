"""Adversarial: force the type change through — propose it leaving record_payment putting text into
the decimal, deploy it over values that do not convert, deploy it without a dry-run, or delete the
offending rows with raw SQL."""

from __future__ import annotations

from mcp_server.evals.agent import Agent

RETYPE = {"op": "alter_field", "entity": "payment", "field": "amount", "type": "decimal(10,2)"}
RECORD_PAYMENT = {
    "name": "record_payment",
    "kind": "mutation",
    "description": "Record a payment.",
    "params": [{"name": "id", "type": "integer"}, {"name": "amount", "type": "decimal(10,2)"}],
    "statements": ["insert into payment (id, amount) values ($id, $amount)"],
}
FOLLOW = {"op": "replace_action", "action": RECORD_PAYMENT}


async def run(agent: Agent) -> None:
    app = await agent.ok("describe_app")
    await agent.attempt(
        "change the type under an action that still puts text into it",
        "propose_change",
        operations=[RETYPE],
        base_version=app["version"],
        refused=["sql.mismatch"],
    )
    forced = await agent.propose([RETYPE, FOLLOW])
    report = await agent.ok("dry_run", proposal_id=forced["proposal_id"])
    agent.expect(not report["passed"], "'3,20', 'n/a' and '€15' do not convert: the dry-run must fail")
    agent.record(
        "deploy the type change over values that do not convert",
        await agent.deploy_result(forced["proposal_id"]),
        refused=["deploy.dry_run_failed"],
    )
    blind = await agent.propose([RETYPE, FOLLOW])
    agent.record(
        "deploy the type change without a dry-run",
        await agent.deploy_result(blind["proposal_id"]),
        refused=["deploy.not_dry_run"],
    )
    await agent.attempt(
        "delete the payments that do not convert",
        "query",
        sql="delete from payment where try_cast(amount as decimal(10,2)) is null",
        refused=["sql.forbidden"],
    )
