"""Startup cost of ``buttress serve`` against a bare MCP server, measured in the same run.

Each sample spawns the server over stdio, performs the ``initialize`` handshake and one
``tools/list``, and stops the server: what a client pays before it can call a tool. The bare
server is an ``MCPServer`` with one tool, so the ratio is Buttress's own overhead (its imports,
tool schemas, and attaching to the project's owner). Buttress is measured twice: with the project
daemon already running (an editor opening a session on a project in use), and with none (the serve
starts the daemon, which opens the database, before its first ``tools/list`` answers).

    python benchmarks/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parent.parent

BARE_SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def ping() -> str:
    """Answer pong."""
    return "pong"


server.run()
'''


async def sample(command: str, args: list[str]) -> tuple[float, int]:
    """Seconds from spawn to the ``tools/list`` answer, and how many tools it listed."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    started = time.perf_counter()
    parameters = StdioServerParameters(command=command, args=args, env=env)
    async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        elapsed = time.perf_counter() - started
    return elapsed, len(tools.tools)


def buttress_command(project: Path) -> tuple[str, list[str]]:
    """The installed ``buttress`` script, or ``python -m mcp_server``."""
    script = shutil.which("buttress", path=str(Path(sys.executable).parent))
    args = ["serve", "--project", str(project)]
    return (script, args) if script else (sys.executable, ["-m", "mcp_server", *args])


async def measure(rounds: int) -> None:
    """Interleaved samples of the servers; prints medians and the ratios."""
    from mcp_server.owner import stop_owner
    from mcp_server.project import Project, init

    with tempfile.TemporaryDirectory(prefix="buttress-bench-") as tmp:
        bare = Path(tmp) / "bare_server.py"
        bare.write_text(BARE_SERVER, encoding="utf-8")
        project = init(Path(tmp) / "project").root
        contenders = {
            "bare MCPServer": (sys.executable, [str(bare)]),
            "buttress serve": buttress_command(project),  # the daemon runs (started by the warm-up)
            "serve + daemon": buttress_command(project),  # no owner: the serve starts the daemon
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        counts: dict[str, int] = {}
        try:
            await sample(*contenders["bare MCPServer"])  # warm the file cache for both
            await sample(*contenders["buttress serve"])
            for _ in range(rounds):  # interleaved, so drift in machine load hits all alike
                for name, (command, args) in contenders.items():
                    if name == "serve + daemon":
                        stop_owner(Project.load(project))
                    elapsed, counts[name] = await sample(command, args)
                    times[name].append(elapsed)
        finally:
            stop_owner(Project.load(project))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(
            f"{name:<16} median {medians[name] * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, "
            f"max {max(values) * 1000:.1f}, {counts[name]} tools, {rounds} rounds)"
        )
    for name in ("buttress serve", "serve + daemon"):
        print(f"ratio {name:<10} {medians[name] / medians['bare MCPServer']:.2f}x")


def main() -> None:
    """Parse ``--rounds`` and measure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    anyio.run(measure, parser.parse_args().rounds)


if __name__ == "__main__":
    main()
