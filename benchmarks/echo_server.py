"""The physical floor of a control round trip: a bare pyzmq REP socket echoing every
message, in its own Python process, on an ipc endpoint.

    python echo_server.py ipc:///tmp/dir/echo.sock

Runs until killed (SIGTERM's default action)."""

from __future__ import annotations

import sys

import zmq


def main(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(endpoint)
    while True:
        sock.send(sock.recv())


if __name__ == "__main__":
    main(sys.argv[1])
