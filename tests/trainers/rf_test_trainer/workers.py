"""Descendants for the ``grandchildren`` mode: processes that ignore SIGTERM and sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

# Long enough for any test, short enough that a leak from a broken test ends on its own.
WORKER_LIFETIME_S = 600.0


def worker_main(spawn_grandchild: bool) -> int:
    """``python -m rf_test_trainer worker``: ignore SIGTERM, optionally start a child of
    our own, report ``ready <pid> [<child pid>]`` on stdout, then sleep."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [os.getpid()]
    children = []
    if spawn_grandchild:
        child, child_pids = _start_worker(own_session=False, spawn_grandchild=False)
        children.append(child)
        pids += child_pids
    sys.stdout.write("ready " + " ".join(str(pid) for pid in pids) + "\n")
    sys.stdout.close()
    time.sleep(WORKER_LIFETIME_S)
    return 0


def start_descendants(count: int) -> tuple[list[subprocess.Popen[bytes]], list[dict[str, Any]]]:
    """Start ``count`` descendants (layout in the package docstring), each ready, i.e.
    already ignoring SIGTERM. Returns our children and every descendant's record."""
    children: list[subprocess.Popen[bytes]] = []
    records: list[dict[str, Any]] = []
    me = os.getpid()
    remaining = count
    if remaining >= 1:
        child, pids = _start_worker(own_session=True, spawn_grandchild=False)
        children.append(child)
        records.append({"pid": pids[0], "ppid": me, "role": "own_session"})
        remaining -= 1
    if remaining >= 2:
        child, pids = _start_worker(own_session=False, spawn_grandchild=True)
        children.append(child)
        records.append({"pid": pids[0], "ppid": me, "role": "parent"})
        records.append({"pid": pids[1], "ppid": pids[0], "role": "grandchild"})
        remaining -= 2
    for _ in range(remaining):
        child, pids = _start_worker(own_session=False, spawn_grandchild=False)
        children.append(child)
        records.append({"pid": pids[0], "ppid": me, "role": "child"})
    return children, records


def _start_worker(
    *, own_session: bool, spawn_grandchild: bool
) -> tuple[subprocess.Popen[bytes], list[int]]:
    argv = [sys.executable, "-u", "-m", "rf_test_trainer", "worker"]
    if spawn_grandchild:
        argv.append("--spawn-grandchild")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=own_session)
    assert process.stdout is not None
    with process.stdout:
        line = process.stdout.readline().decode()
    if not line.startswith("ready "):
        raise RuntimeError(f"worker {process.pid} did not get ready (said {line!r})")
    return process, [int(pid) for pid in line.split()[1:]]
