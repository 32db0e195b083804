"""Process mechanics shared by the measures: commands of this installation, timed runs,
waiting for files, exact death times (pidfds) and memory of a live process."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")
BIN_DIR = Path(sys.executable).parent


def command(name: str) -> str:
    """A console script of the interpreter running the suite (``runforgectl``,
    ``circusctl``...): the same installation for us and for the peers."""
    return str(BIN_DIR / name)


def timed_run(
    argv: list[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run a whole process to its end; seconds from fork to reaped exit."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=120)
    seconds = time.perf_counter() - started
    if done.returncode not in ok_codes:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return seconds, done


def wait_until(
    predicate: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.001
) -> T:
    """Poll ``predicate`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def read_int_file(path: Path) -> int | None:
    """The integer in ``path`` (a pid file), or None while it does not exist yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.strip() else None


class DeathWatch:
    """Records the CLOCK_MONOTONIC time at which each watched process dies.

    A pidfd becomes readable the moment its process exits (before anyone reaps it), so a
    thread blocked in poll() on the pidfds sees each death within microseconds, whoever
    the parent is."""

    def __init__(self, pids: Iterable[int]) -> None:
        self._fds = {os.pidfd_open(pid): pid for pid in pids}
        self.deaths_ns: dict[int, int] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        while len(self.deaths_ns) < len(self._fds):
            for fd, _ in poller.poll(1000):
                self.deaths_ns.setdefault(self._fds[fd], time.monotonic_ns())
                poller.unregister(fd)

    def wait(self, timeout_s: float) -> dict[int, int]:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"{len(self._fds) - len(self.deaths_ns)} process(es) still alive")
        for fd in self._fds:
            os.close(fd)
        return self.deaths_ns


def rss_mib(pid: int) -> float:
    """Resident set size now."""
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of the resident set size (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def terminate(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM a process we started and reap it; SIGKILL if it does not go in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
