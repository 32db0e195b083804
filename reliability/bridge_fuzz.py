"""Bridge fuzzer: hostile lines into a real ``runforgectl bridge`` connected to a real
daemon. Every non-blank line deserves exactly one reply line (``{"id", "ok", ...}``); a
line without one within the timeout is a hang, a traceback or an early exit a crash."""

from __future__ import annotations

import json
import queue
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import psutil

from benchmarks.processes import command
from reliability.attacks import LINE_ATTACKS, Targets
from reliability.daemon import FuzzDaemon, ResourceSample
from reliability.fuzzing import AttackMix, ClassResult, collect
from runforgectl.jsonlines import MAX_LINE_BYTES

WINDOW = 25
REPLY_TIMEOUT_S = 60.0
# Long single lines to time the reader on: linear reading keeps MB/s flat as lines grow.
TIMED_LINE_MB = (10, 50)


@dataclass
class BridgeFuzzReport:
    lines_sent: int
    replies: int
    ok: int
    structured_errors: int
    unstructured: int  # output lines that are not JSON objects
    hangs: int
    crashes: int  # the bridge exited early or printed a traceback
    duration_s: float
    resources: list[ResourceSample]
    long_lines: list[tuple[int, float]]  # (MB, seconds from write to its error reply)
    classes: list[ClassResult]

    @property
    def passed(self) -> bool:
        return self.crashes == 0 and self.hangs == 0 and self.unstructured == 0


class _BridgeProcess:
    def __init__(self, daemon: FuzzDaemon) -> None:
        self.proc = subprocess.Popen(
            [command("runforgectl"), "bridge"],
            env=daemon.process.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.replies: queue.Queue[Any] = queue.Queue()
        self.unstructured = 0
        self._stderr: list[bytes] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                document = json.loads(line)
            except ValueError:
                self.unstructured += 1
                continue
            if not isinstance(document, dict):
                self.unstructured += 1
            elif "ok" in document:  # a reply; events and notices are not counted
                self.replies.put(document)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        self._stderr.extend(stream)

    def send(self, lines: list[bytes]) -> None:
        assert self.proc.stdin is not None
        for line in lines:  # no joined copy: a line may be 50 MB
            self.proc.stdin.write(line)
            self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def next_reply(self, wait_s: float) -> dict[str, Any] | None:
        """The next reply line, None if none came within ``wait_s``."""
        try:
            return self.replies.get(timeout=wait_s)
        except queue.Empty:
            return None

    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def close(self) -> int | None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
            code: int | None = self.proc.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            code = None
            self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        return code


def run(
    lines: int, seed: int = 1, progress: Callable[[str], None] | None = None
) -> BridgeFuzzReport:
    """Send ``lines`` hostile lines through a fresh bridge to a fresh daemon."""
    rng = random.Random(seed)
    mix = AttackMix(LINE_ATTACKS)
    with FuzzDaemon() as daemon:
        targets = Targets(daemon.workspace, daemon.elsewhere)
        bridge = _BridgeProcess(daemon)
        samples = [_sample(bridge, 0)]
        sample_every = max(WINDOW, lines // 10)
        started = time.perf_counter()
        sent = 0
        crashed = False
        try:
            while sent < lines:
                attack, result = mix.pick(rng)
                batch = min(WINDOW, lines - sent)
                bridge.send([attack(rng, targets) for _ in range(batch)])
                result.sent += batch
                collect(bridge.next_reply, _classify, batch, result, REPLY_TIMEOUT_S)
                previous, sent = sent, sent + batch
                if bridge.proc.poll() is not None:
                    crashed = True
                    break
                if sent // sample_every != previous // sample_every or sent == lines:
                    samples.append(_sample(bridge, sent))
                    if progress:
                        progress(f"bridge: {sent}/{lines} lines")
            duration = time.perf_counter() - started
            long_lines = [] if crashed else _time_long_lines(bridge)
        finally:
            code = bridge.close()
        crashed = crashed or code != 0 or "Traceback" in bridge.stderr()
    classes = mix.classes()
    return BridgeFuzzReport(
        lines_sent=sent,
        replies=sum(c.replies for c in classes),
        ok=sum(c.ok for c in classes),
        structured_errors=sum(c.structured_errors for c in classes),
        unstructured=bridge.unstructured,
        hangs=sum(c.unanswered for c in classes),
        crashes=int(crashed),
        duration_s=duration,
        resources=samples,
        long_lines=long_lines,
        classes=classes,
    )


def _classify(reply: dict[str, Any], result: ClassResult) -> None:
    if reply.get("ok") is True:
        result.ok += 1
    else:
        result.error(str((reply.get("error") or {}).get("code")))


def _time_long_lines(bridge: _BridgeProcess) -> list[tuple[int, float]]:
    """Seconds for the bridge to get through one line over the limit: from its write to
    the reply to a ping sent right behind it (best of three per size)."""
    timings = []
    for megabytes in TIMED_LINE_MB:
        pad = b"x" * (megabytes << 20)
        line = b'{"type": "ping", "id": "long", "pad": "' + pad + b'"}'
        assert len(line) > MAX_LINE_BYTES
        best = float("inf")
        for attempt in range(3):
            started = time.perf_counter()
            bridge.send([line, b'{"type": "ping", "id": "behind-%d"}' % attempt])
            while bridge.replies.get(timeout=REPLY_TIMEOUT_S).get("id") != f"behind-{attempt}":
                pass
            best = min(best, time.perf_counter() - started)
        timings.append((megabytes, best))
    return timings


def _sample(bridge: _BridgeProcess, after: int) -> ResourceSample:
    proc = psutil.Process(bridge.proc.pid)
    return ResourceSample(after, proc.memory_info().rss, proc.num_fds())
