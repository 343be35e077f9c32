"""Fake external providers: the hook for scenarios whose application calls the outside world.

A scenario lists providers in its seed::

    [[seed.providers]]
    name = "payments"
    factory = "providers.py:payments"        # or "package.module:function"

    [seed.connectors.payments]               # written as [connectors.payments] into buttress.toml
    url = "{providers.payments.url}"

For each run the runner calls ``factory(ProviderContext)``, which returns an ASGI application, and
serves it with uvicorn on a free 127.0.0.1 port for the length of the run; the URL replaces
``{providers.NAME.url}`` in the connector configuration. A provider may keep what it was asked in
``context.state`` (a JSON file in the run's directory) for checks to read after the run.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_server.evals.scenario import Provider, Scenario
from mcp_server.evals.servers import free_port
from runtime.errors import Code, ConfigError

START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ProviderContext:
    """What a provider factory is given."""

    name: str
    scenario: str
    run: int
    state: Path
    """A JSON file the provider may write (what it was asked, what it answered)."""


def load_factory(scenario: Scenario, provider: Provider) -> Callable[[ProviderContext], Any]:
    """The factory ``file.py:function`` (relative to the scenario) or ``package.module:function``."""
    target, _, function = provider.factory.partition(":")
    if not function:
        raise _invalid(scenario, provider, "write the factory as 'file.py:function' or 'module:function'")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(
                f"buttress_eval_provider_{scenario.id.replace('-', '_')}_{provider.name}",
                scenario.root / target,
            )
            if spec is None or spec.loader is None:
                raise ImportError(target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        factory = getattr(module, function)
    except (ImportError, AttributeError, OSError, SyntaxError) as error:
        raise _invalid(scenario, provider, f"cannot load {provider.factory}: {error}") from None
    if not callable(factory):
        raise _invalid(scenario, provider, f"{provider.factory} is not callable")
    return factory  # type: ignore[no-any-return]


def _invalid(scenario: Scenario, provider: Provider, message: str) -> ConfigError:
    return ConfigError(
        Code.CONFIG_INVALID,
        f"scenario {scenario.id}: provider {provider.name!r}: {message}",
        hint="A provider factory takes a ProviderContext and returns an ASGI application.",
    )


class ProviderServer:
    """One provider served by uvicorn on 127.0.0.1, in a thread, for one run."""

    def __init__(self, app: Any, name: str) -> None:
        import uvicorn

        self.name = name
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name=f"eval-provider-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    Code.CONFIG_INVALID,
                    f"provider {self.name!r} did not start on {self.url}",
                    hint="Run the provider's ASGI application on its own to see why.",
                )
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def state_file(directory: Path, name: str) -> Path:
    """Where provider ``name`` of the run in ``directory`` keeps its state (``kind = "provider"``
    checks read it)."""
    return directory / f"provider-{name}.json"


def start(scenario: Scenario, run: int, directory: Path) -> tuple[list[ProviderServer], dict[str, str]]:
    """Start the scenario's providers for one run; the servers and their URLs by name."""
    servers: list[ProviderServer] = []
    try:
        for provider in scenario.manifest.seed.providers:
            factory = load_factory(scenario, provider)
            context = ProviderContext(
                name=provider.name,
                scenario=scenario.id,
                run=run,
                state=state_file(directory, provider.name),
            )
            server = ProviderServer(factory(context), provider.name)
            server.start()
            servers.append(server)
    except BaseException:
        stop(servers)
        raise
    return servers, {server.name: server.url for server in servers}


def stop(servers: list[ProviderServer]) -> None:
    for server in servers:
        server.stop()
