"""Fixtures for the cancel tests: the purpose-built trainers, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import SESSION_MARKER, SESSION_MARKER_ENV, wait_for

TRAINERS_DIR = Path(__file__).resolve().parents[1] / "trainers"
# Every process a test starts (trainer, workers, grandchildren) inherits this variable,
# so teardown finds them all, whatever became of their parents.
CLEANUP_TOKEN_ENV = "RF_TEST_CLEANUP_TOKEN"


@dataclass
class Trainer:
    """A running rf_test_trainer: its process, its workspace and run folder, its stderr."""

    proc: subprocess.Popen[bytes]
    workspace: Path
    run_dir: Path
    stderr_path: Path | None  # None when stderr is a pipe (``proc.stderr``)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[bytes]:
        assert self.stderr_path is not None
        return self.stderr_path.read_bytes().splitlines()

    def events(self) -> list[dict[str, Any]]:
        """The JSON-object lines with an ``event`` field, in order."""
        found = []
        for line in self.lines():
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if isinstance(document, dict) and "event" in document:
                found.append(document)
        return found

    def event_names(self) -> list[str]:
        return [event["event"] for event in self.events()]

    def wait_ready(self) -> None:
        """Until trainer.pid exists: the trainer's SIGTERM handling is in place."""
        wait_for(lambda: (self.run_dir / "trainer.pid").exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None, f"trainer exited early: {self.proc.returncode}"

    def wait_events(self, name: str, count: int = 1) -> None:
        wait_for(lambda: self.event_names().count(name) >= count)

    def tree(self) -> dict[str, Any]:
        path = self.run_dir / "tree.json"
        wait_for(path.exists)
        document: dict[str, Any] = json.loads(path.read_text())
        return document

    def wait(self) -> int:
        return self.proc.wait(timeout=60)


StartTrainer = Callable[..., Trainer]
Spawn = Callable[..., "subprocess.Popen[bytes]"]


def process_env(token: str, **extra: str) -> dict[str, str]:
    """The environment of every process these tests start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RF_TEST_", "RUNFORGE_"))}
    env.update(
        {
            "PYTHONPATH": str(TRAINERS_DIR),
            CLEANUP_TOKEN_ENV: token,
            SESSION_MARKER_ENV: SESSION_MARKER,
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def spawned() -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """(token, started): kills every process carrying ``token`` at teardown, reaps
    ``started``."""
    token = uuid.uuid4().hex
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield token, started
    finally:
        leftovers = []
        for proc in started:
            # Direct children first, by handle: an environ scan can miss a process caught
            # mid-exec, and this test's own children must not outlive it.
            if proc.poll() is None:
                proc.kill()
        for process in psutil.process_iter():
            try:
                if process.environ().get(CLEANUP_TOKEN_ENV) == token:
                    process.kill()
                    leftovers.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        # A zombie is dead: whoever adopted it reaps it in its own time.
        wait_for(lambda: not any(_alive(process) for process in leftovers))
        for proc in started:
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def spawn(spawned: tuple[str, list[subprocess.Popen[bytes]]]) -> Spawn:
    """``spawn(argv, **popen_kwargs)``: a process that teardown is sure to kill."""
    token, started = spawned

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=process_env(token), **kwargs)
        started.append(proc)
        return proc

    return start


@pytest.fixture
def start_trainer(
    tmp_path: Path, spawned: tuple[str, list[subprocess.Popen[bytes]]]
) -> StartTrainer:
    """``start_trainer(mode, stderr_pipe=False, **env)`` spawns rf_test_trainer the way the
    daemon does: ``-u -m rf_test_trainer train --out .ml/runs/<id> ...`` in a workspace,
    leading its own session. Everything it started is killed at teardown."""
    token, started = spawned

    def start(mode: str, *, stderr_pipe: bool = False, **extra_env: str) -> Trainer:
        number = len(started)
        workspace = tmp_path / f"ws{number}"
        workspace.mkdir()
        run_dir = workspace / ".ml" / "runs" / f"20250101-000000-run{number}"
        argv = [sys.executable, "-u", "-m", "rf_test_trainer", "train"]
        argv += ["--out", str(run_dir.relative_to(workspace)), "--device", "cpu", "--seed", "7"]
        stderr_path = None if stderr_pipe else tmp_path / f"stderr{number}.txt"
        with open(stderr_path or os.devnull, "wb") as sink:
            proc = subprocess.Popen(
                argv,
                cwd=workspace,
                env=process_env(token, RF_TEST_MODE=mode, **extra_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE if stderr_pipe else sink,
                start_new_session=True,
            )
        started.append(proc)
        return Trainer(proc, workspace, run_dir, stderr_path)

    return start


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
