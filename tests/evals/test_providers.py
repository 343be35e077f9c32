"""The hook for scenarios with external effects: fake providers served on 127.0.0.1 for each run,
their URLs written into the connectors of the run's buttress.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mcp_server.evals import scenario as scenarios
from mcp_server.evals.runner import Options, run
from runtime.errors import ButtressError

PROVIDER = '''
import json


def ledger(context):
    """An ASGI app answering every request with its own name; it records that it was built."""
    context.state.write_text(json.dumps({"provider": context.name, "run": context.run}))

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": context.name.encode()})

    return app
'''


def test_a_provider_is_served_per_run_and_its_url_reaches_the_connectors(
    example: Path, tmp_path: Path
) -> None:
    (example / "providers.py").write_text(PROVIDER, encoding="utf-8")
    manifest = example / "scenario.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace(
            "[[seed.rows]]",
            '[[seed.providers]]\nname = "payments"\nfactory = "providers.py:ledger"\n\n'
            '[seed.connectors.payments]\nurl = "{providers.payments.url}"\ndescription = "fake payments"\n\n[[seed.rows]]',
            1,
        ),
        encoding="utf-8",
    )
    keep = tmp_path / "kept"
    card = run([scenarios.load(example)], Options(keep=keep))
    directory = Path(str(card.scenarios[0].runs[0].directory))
    config = tomllib.loads((directory / "project" / "buttress.toml").read_text(encoding="utf-8"))
    url = config["connectors"]["payments"]["url"]
    assert (
        url.startswith("http://127.0.0.1:")
        and config["connectors"]["payments"]["description"] == "fake payments"
    )
    assert (directory / "provider-payments.json").read_text() == '{"provider": "payments", "run": 1}'
    assert card.exit_code == 0


def test_a_provider_factory_that_cannot_be_loaded_is_refused(example: Path) -> None:
    manifest = example / "scenario.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8")
        + '\n[[seed.providers]]\nname = "mail"\nfactory = "nowhere.py:app"\n',
        encoding="utf-8",
    )
    with pytest.raises(ButtressError) as caught:
        run([scenarios.load(example)], Options())
    assert caught.value.code == "config.invalid" and "provider 'mail'" in caught.value.message
