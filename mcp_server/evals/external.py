"""Driving an agent the runner does not script: any command line that runs an MCP client.

The command runs under ``/bin/sh -c`` in the directory ``buttress eval run`` was started from (so
paths in it resolve as typed), with the runner's environment (an LLM CLI keeps its API keys) plus:

==========================  ==================================================================
``BUTTRESS_EVAL_SCENARIO``  the scenario id
``BUTTRESS_EVAL_RUN``       the run number, from 1
``BUTTRESS_EVAL_PROMPT``    the path of the task (a copy of the scenario's ``prompt.md``)
``BUTTRESS_EVAL_WORKDIR``   an empty directory of the run's, for the agent's own files
``BUTTRESS_MCP_TRANSPORT``  ``stdio`` or ``http``
``BUTTRESS_MCP_CONFIG``     an ``mcpServers`` JSON file naming the server ``buttress`` (the format
                            ``claude --mcp-config`` and Claude Desktop read)
``BUTTRESS_MCP_COMMAND``    stdio: the command that serves the project over stdio, as one shell
                            line (split it with ``shlex.split``)
``BUTTRESS_MCP_URL``        http: the streamable HTTP endpoint, on 127.0.0.1
``BUTTRESS_MCP_TOKEN``      http: the agent's bearer token
==========================  ==================================================================

The agent's output goes to ``agent.log`` in the run's directory. The agent is not pointed at the
project: it reaches the application through MCP (over stdio the server command names the project's
directory, as any stdio server command does; over HTTP nothing does).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.abc

from mcp_server.evals.servers import server_env, shell_command

SHELL = "/bin/sh"
ENV_VARS = (
    "BUTTRESS_EVAL_SCENARIO",
    "BUTTRESS_EVAL_RUN",
    "BUTTRESS_EVAL_PROMPT",
    "BUTTRESS_EVAL_WORKDIR",
    "BUTTRESS_MCP_TRANSPORT",
    "BUTTRESS_MCP_CONFIG",
    "BUTTRESS_MCP_COMMAND",
    "BUTTRESS_MCP_URL",
    "BUTTRESS_MCP_TOKEN",
)
"""Every variable an external agent may be given (``environment``)."""


def mcp_config(
    *, argv: list[str] | None = None, url: str | None = None, token: str | None = None
) -> dict[str, object]:
    """An ``mcpServers`` document for the run's server (stdio command, or HTTP URL and token)."""
    if argv is not None:
        server: dict[str, object] = {"command": argv[0], "args": argv[1:], "env": server_env()}
    else:
        server = {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}
    return {"mcpServers": {"buttress": server}}


def environment(
    *,
    scenario: str,
    run: int,
    prompt: Path,
    workdir: Path,
    argv: list[str] | None = None,
    url: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """The variables an external agent is given (see the module docstring)."""
    config = workdir / "mcp.json"
    config.write_text(json.dumps(mcp_config(argv=argv, url=url, token=token), indent=2), encoding="utf-8")
    env = {
        "BUTTRESS_EVAL_SCENARIO": scenario,
        "BUTTRESS_EVAL_RUN": str(run),
        "BUTTRESS_EVAL_PROMPT": str(prompt),
        "BUTTRESS_EVAL_WORKDIR": str(workdir),
        "BUTTRESS_MCP_TRANSPORT": "stdio" if argv is not None else "http",
        "BUTTRESS_MCP_CONFIG": str(config),
    }
    if argv is not None:
        env["BUTTRESS_MCP_COMMAND"] = shell_command(argv, server_env())
    else:
        env["BUTTRESS_MCP_URL"] = str(url)
        env["BUTTRESS_MCP_TOKEN"] = str(token)
    return env


async def run(command: str, *, env: dict[str, str], log: Path, timeout_s: float) -> int | None:
    """Run the agent's command to its end; its exit code, or None when it ran out of time (then its
    whole process group is killed)."""
    with log.open("ab") as output:
        process = await anyio.open_process(
            [SHELL, "-c", command],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        with anyio.move_on_after(timeout_s):
            return await process.wait()
        _kill_group(process)
        with anyio.move_on_after(10):
            await process.wait()
        return None


def _kill_group(process: anyio.abc.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
