"""Modes of a buggy or hostile trainer that attack the daemon through their output and
processes (garbage event lines, a stdout flood, an escaped double-forked worker), for the
monitor's tests (see the package docstring)."""

from __future__ import annotations

import os
import signal
import sys
import time

from rf_test_trainer.run_folder import RunFolder, utc_now, write_stderr
from runforge_contract.atomicio import write_json_atomic

ESCAPED_LIFETIME_S = 600.0


def codec_lines(run: RunFolder) -> list[bytes]:
    """Event lines that parse as JSON somewhere but that no codec of the daemon can carry,
    in the documented order (nine lines, each invalid)."""
    stamp = f'"timestamp": "{utc_now()}", "run_id": "{run.run_id}"'.encode()
    progress = b'{"event": "train_progress", ' + stamp + b', "total_epochs": 3, "epoch": '
    deep = b"[" * 5000 + b"]" * 5000
    return [
        progress + str(10**30).encode() + b"}\n",
        progress + str(-(2**63) - 1).encode() + b"}\n",
        progress + b'0, "pad": ' + deep + b"}\n",
        progress + b'0, "pad": ' + b"[" * 100 + b"]" * 100 + b"}\n",
        progress + b'0, "loss": NaN}\n',
        progress + b'0, "loss": Infinity}\n',
        progress + b'0, "loss": 1e400}\n',
        progress + b'0, "note": "\\ud800"}\n',
        progress + b'0, "note": "\xff\xfe"}\n',
    ]


def codec_garbage(run: RunFolder) -> int:
    run.write_pid()
    run.announce()
    run.load()
    run.start_training()
    for line in codec_lines(run):
        write_stderr(line)
    run.progress(0, 1)
    run.compute_metrics()
    run.write_artifacts()
    return 0


def flood_stdout(run: RunFolder) -> int:
    """``RF_TEST_FLOOD_BYTES`` (default 50 MB) of stdout lines as fast as possible, with one
    3 MiB line without a newline half-way, then a normal completion."""
    total = int(os.environ.get("RF_TEST_FLOOD_BYTES", 50_000_000))
    run.write_pid()
    run.announce()
    run.load()
    run.start_training()
    line = b"flood " + b"x" * 93 + b"\n"
    block = line * 1000
    written = 0
    out = sys.stdout.buffer
    while written < total:
        out.write(block)
        written += len(block)
        if written >= total // 2 > written - len(block):
            out.write(b"L" * (3 << 20) + b"\n")
    out.flush()
    run.progress(0, 1)
    run.compute_metrics()
    run.write_artifacts()
    return 0


def double_fork(run: RunFolder) -> int:
    """A child double-forks a grandchild into its own session (it ignores SIGTERM, keeps
    stdout and stderr open and sleeps) and exits at once, so the grandchild's parent is
    gone; its pid goes to ``tree.json`` (role ``escaped``); then a normal completion, slow
    when ``RF_TEST_STEPS``/``RF_TEST_STEP_S`` say so."""
    run.write_pid()
    run.announce()
    run.load()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        if os.fork() == 0:
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(write_fd, f"{os.getpid()}\n".encode())
            os.close(write_fd)
            time.sleep(ESCAPED_LIFETIME_S)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        escaped = int(reader.readline())
    os.waitpid(child, 0)
    write_json_atomic(
        run.path / "tree.json",
        {"trainer": os.getpid(), "descendants": [{"pid": escaped, "role": "escaped"}]},
    )
    steps = int(os.environ.get("RF_TEST_STEPS", 3))
    run.complete(steps, float(os.environ.get("RF_TEST_STEP_S", 0)))
    return 0
