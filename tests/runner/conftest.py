"""Fixtures for the runner's tests: a workspace, the runner as a real subprocess, events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runforge_contract.sample_data import BUNDLED_DIR, LARGE_NAME, SMALL_NAME, demo_large_csv
from runforge_contract.trainer_events import SCHEMA_EVENTS
from tests.contracts import validate
from tests.harness import SESSION_MARKER, SESSION_MARKER_ENV

HERE = Path(__file__).resolve().parent
SMALL_DATASET = BUNDLED_DIR / SMALL_NAME
RUNNER = [sys.executable, "-u", "-m", "runforge_runner"]
HELD_RUNNER = [sys.executable, "-u", str(HERE / "held_runner.py")]
CONTRACT_EVENTS = set(SCHEMA_EVENTS)
WAIT_S = 60.0
RUNNER_ENV = {"RUNFORGE_DATASET", "RUNFORGE_CANCEL_GRACE_S", "RUNFORGE_TEST_HOLD_STEP"}


def parse_stderr(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Events (JSON objects with an ``event`` key) and the other (log) lines."""
    events, logs = [], []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            logs.append(line)
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
        else:
            logs.append(line)
    return events, logs


def assert_events_valid(events: list[dict[str, Any]]) -> None:
    """Contract events against the events.v1 format; run_failed against its documented shape."""
    for event in events:
        if event["event"] in CONTRACT_EVENTS:
            validate("events.v1", event)
        else:
            assert event["event"] == "run_failed", event
            assert set(event) <= {"event", "timestamp", "run_id", "error", "step"}, event
            assert isinstance(event["error"]["code"], str) and event["error"]["code"]
            message = event["error"]["message"]
            assert isinstance(message, str) and message and "\n" not in message


@dataclass
class RunnerResult:
    returncode: int
    events: list[dict[str, Any]]
    logs: list[str]
    stdout: str
    run_dir: Path

    def names(self) -> list[str]:
        return [event["event"] for event in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == name]


@dataclass
class Workspace:
    """A workspace folder (the runner's cwd) with runs under ``.ml/runs``."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    def run_dir(self, run_id: str) -> Path:
        return self.root / ".ml" / "runs" / run_id

    def environment(self, dataset: Path | None, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in RUNNER_ENV}
        # Marked, so the suite's leak check finds any runner a test failed to reap.
        env[SESSION_MARKER_ENV] = SESSION_MARKER
        if dataset is not None:
            env["RUNFORGE_DATASET"] = str(dataset)
        env.update(self.env)
        env.update(extra or {})
        return env

    def train_args(self, run_id: str, *extra: str, preset: str = "std-train") -> list[str]:
        return [
            "train",
            "--preset",
            preset,
            "--out",
            f".ml/runs/{run_id}",
            "--device",
            "cpu",
            *extra,
        ]

    def run(
        self,
        args: Sequence[str],
        dataset: Path | None = SMALL_DATASET,
        extra_env: dict[str, str] | None = None,
        command: Sequence[str] = RUNNER,
    ) -> RunnerResult:
        """Run the runner to completion and parse what it printed."""
        completed = subprocess.run(
            [*command, *args],
            cwd=self.root,
            env=self.environment(dataset, extra_env),
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
        )
        events, logs = parse_stderr(completed.stderr)
        return RunnerResult(
            completed.returncode, events, logs, completed.stdout, self._out_dir(args)
        )

    def start(
        self,
        args: Sequence[str],
        dataset: Path | None = SMALL_DATASET,
        extra_env: dict[str, str] | None = None,
        command: Sequence[str] = RUNNER,
    ) -> LiveRunner:
        proc = subprocess.Popen(
            [*command, *args],
            cwd=self.root,
            env=self.environment(dataset, extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return LiveRunner(proc, self._out_dir(args))

    def _out_dir(self, args: Sequence[str]) -> Path:
        if "--out" in args:
            return self.root / args[list(args).index("--out") + 1]
        return self.root


class LiveRunner:
    """A running runner whose stderr lines are collected as they arrive."""

    def __init__(self, proc: subprocess.Popen[str], run_dir: Path) -> None:
        self.proc = proc
        self.run_dir = run_dir
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"line never came; stderr so far:\n{self.text()}")
                self._changed.wait(timeout=min(remaining, 0.5))

    def wait_for_event(self, name: str, count: int = 1) -> None:
        seen = 0

        def matches(line: str) -> bool:
            nonlocal seen
            if f'"event": "{name}"' in line:
                seen += 1
            return seen >= count

        self.wait_for_line(matches)

    def terminate(self) -> float:
        """Send SIGTERM; returns the monotonic time it was sent."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return sent

    def finish(self) -> RunnerResult:
        self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)
        stdout = self.proc.stdout.read() if self.proc.stdout else ""
        events, logs = parse_stderr(self.text())
        return RunnerResult(self.proc.returncode, events, logs, stdout, self.run_dir)

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "workspace"
    root.mkdir()
    return Workspace(root)


@pytest.fixture
def live_runners() -> Iterator[Callable[[LiveRunner], LiveRunner]]:
    """Track started runners; every one is killed and reaped at teardown."""
    started: list[LiveRunner] = []

    def track(runner: LiveRunner) -> LiveRunner:
        started.append(runner)
        return runner

    yield track
    for runner in started:
        runner.kill()


@pytest.fixture(scope="session")
def large_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo_large.csv, generated once per session (the long-fit cancel tests use it)."""
    path = tmp_path_factory.mktemp("large") / LARGE_NAME
    path.write_bytes(demo_large_csv())
    return path
