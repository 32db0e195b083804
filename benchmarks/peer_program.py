"""The program the peers supervise: the same stand-in trainer for circus and supervisor.

    python peer_program.py stubborn STATE_DIR   # catches SIGTERM, records it, keeps running
    python peer_program.py prompt STATE_DIR     # dies at once on SIGTERM (default action)

Once its SIGTERM disposition is in place it writes ``STATE_DIR/<mode>.pid``; ``stubborn``
records the moment it handled SIGTERM in ``STATE_DIR/sigterm_received`` as
``{"monotonic_ns": ...}`` (CLOCK_MONOTONIC is system-wide, so the benchmark can compare
it with its own clock), exactly as ``rf_test_trainer``'s ``sigterm_probe`` mode does for
RunForge's own trainers. Standard library plus the project's atomic writer.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from runforge_contract.atomicio import write_bytes_atomic, write_json_atomic


def main(argv: list[str]) -> int:
    mode, state_dir = argv[0], Path(argv[1])
    if mode == "stubborn":

        def record_arrival(signum: int, frame: FrameType | None) -> None:
            arrival = time.monotonic_ns()
            write_json_atomic(state_dir / "sigterm_received", {"monotonic_ns": arrival})

        signal.signal(signal.SIGTERM, record_arrival)
    elif mode != "prompt":
        print(f"peer_program: unknown mode {mode!r}", file=sys.stderr)
        return 2
    write_bytes_atomic(state_dir / f"{mode}.pid", f"{os.getpid()}\n".encode())
    # Exits by itself after ten minutes, so that a broken benchmark cannot leak it.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
