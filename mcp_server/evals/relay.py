"""``python -m mcp_server.evals.relay SOCKET``: the stdio server command an external agent is given
when ``buttress eval run`` injects faults (``intercept.StdioTap``).

It joins its standard input and output to the runner's Unix socket ``SOCKET``; the runner starts the
real ``buttress serve`` behind it, sees each call, and kills the server when a fault is due. The
relay then ends, as a stdio server that died would, and the agent's client starts the command again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CHUNK = 65536


def _up(connection: socket.socket) -> None:
    """Standard input to the socket, until the agent closes it."""
    with contextlib.suppress(OSError):
        while chunk := os.read(sys.stdin.fileno(), CHUNK):
            connection.sendall(chunk)
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mcp_server.evals.relay SOCKET", file=sys.stderr)
        return 2
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(argv[1])
    except OSError as error:
        print(f"relay: cannot reach the evaluation runner at {argv[1]}: {error}", file=sys.stderr)
        return 1
    threading.Thread(target=_up, args=(connection,), daemon=True).start()
    output = sys.stdout.buffer
    with contextlib.suppress(OSError), connection:
        while chunk := connection.recv(CHUNK):
            output.write(chunk)
            output.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
