"""Test harness: a real runforged in a private runtime directory, and runforgectl as a
real subprocess. Every process a test starts carries a session marker in its environment
so that the suite can prove none outlives it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINERS_DIR = REPO_ROOT / "tests" / "trainers"
SESSION_MARKER_ENV = "RUNFORGE_TEST_SESSION"
SESSION_MARKER = f"{os.getpid()}-{time.time_ns()}"


TEMP_PREFIX = f"rf-{os.getpid()}-"


def short_tempdir() -> Path:
    """A private temp dir with a short path (ipc:// socket paths are limited to 107 bytes),
    named after this test session so that the leak check sees only its own."""
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir="/tmp"))


def base_env(runtime_dir: Path, config_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test daemon and its clients: private runtime, config and state
    directories (state beside config), and the session marker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNFORGE_", "NOTIFY_"))}
    env.update(
        {
            "RUNFORGE_RUNTIME_DIR": str(runtime_dir),
            "RUNFORGE_CONFIG_DIR": str(config_dir),
            "RUNFORGE_STATE_DIR": str(config_dir.parent / "state"),
            SESSION_MARKER_ENV: SESSION_MARKER,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


@dataclass
class DaemonProcess:
    """A runforged started by a test, with its runtime and config directories."""

    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.runtime_dir, self.config_dir, **self.extra_env)

    def start(self, *args: str, wait: bool = True) -> DaemonProcess:
        self.log_path = self.root / f"daemon-{time.time_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runforged", "--log-format", "json", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
            )
        if wait:
            wait_for(self._answers, timeout=60)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"runforged exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.ctl("ping", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False  # a loaded machine: ask again until wait_for's own deadline

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def ctl(
        self,
        *args: str,
        timeout: float = 60,
        check: bool = False,
        cwd: Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "runforgectl", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=cwd or self.root,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"runforgectl {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def ctl_json(self, *args: str, **kwargs: Any) -> Any:
        result = self.ctl(*args, "--json", **kwargs)
        assert result.stdout.strip(), f"no JSON output; stderr: {result.stderr}"
        return json.loads(result.stdout)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait for a clean exit, and check it left nothing behind."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"runforged did not stop within {timeout} s:\n{self.log()}"
            ) from None
        return code

    def assert_clean_runtime_dir(self) -> None:
        leftovers = (
            [p.name for p in self.runtime_dir.iterdir()] if self.runtime_dir.exists() else []
        )
        leftovers = [n for n in leftovers if n != "runforged.log"]
        assert leftovers == [], f"runtime dir not clean after stop: {leftovers}"

    def kill_hard(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def marked_processes() -> list[psutil.Process]:
    """Every live process started by this test session (by its environment marker)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if (
                proc.environ().get(SESSION_MARKER_ENV) == SESSION_MARKER
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_marked_processes() -> list[str]:
    leftovers = marked_processes()
    described = []
    for proc in leftovers:
        try:
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(leftovers, timeout=5)
    return described


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def trainer_workspace(
    daemon: DaemonProcess,
    name: str = "ws",
    settings: dict[str, Any] | None = None,
    parent: Path | None = None,
) -> Path:
    """A trusted workspace whose runner is the purpose-built test trainer (switched by
    ``RF_TEST_*`` variables in the daemon's environment), with a tiny dataset; in the
    daemon's folder unless ``parent`` is given."""
    workspace = (parent or daemon.root) / name
    workspace.mkdir()
    (workspace / "rf_test_trainer").symlink_to(TRAINERS_DIR / "rf_test_trainer")
    (workspace / "data.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    (workspace / ".vscode").mkdir()
    document = {"runforge.mlRunnerModule": "rf_test_trainer", "runforge.datasetPath": "data.csv"}
    document.update(settings or {})
    (workspace / ".vscode" / "settings.json").write_text(json.dumps(document))
    daemon.ctl("trust", str(workspace), check=True)
    return workspace


# ---------------------------------------------------------------- what a run leaves on disk


def run_dir(workspace: Path, run_id: str) -> Path:
    return workspace / ".ml" / "runs" / run_id


def index_path(workspace: Path) -> Path:
    return workspace / ".ml" / "outputs" / "index.json"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def events_on_disk(workspace: Path, run_id: str) -> list[dict[str, Any]]:
    return json_lines((run_dir(workspace, run_id) / "events.jsonl").read_text())


def index_ids(workspace: Path) -> list[str]:
    """Run ids in the workspace index, in file order ([] when there is no index)."""
    path = index_path(workspace)
    return [entry["run_id"] for entry in read_json(path)["runs"]] if path.exists() else []


def wait_result(workspace: Path, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """The daemon's result.json of a run once it is terminal (written once the index
    update, if any, is done)."""
    path = run_dir(workspace, run_id) / "result.json"

    def terminal() -> dict[str, Any] | None:
        if not path.exists():
            return None
        events = events_on_disk(workspace, run_id)
        return read_json(path) if any(e["type"] == "run_terminal" for e in events) else None

    result: dict[str, Any] = wait_for(terminal, timeout=timeout, interval=0.05)
    return result


def start_detached(daemon: DaemonProcess, workspace: Path, *args: str) -> str:
    """``runforgectl train --detach``: the new run's id."""
    reply = daemon.ctl_json("train", "--workspace", str(workspace), "--detach", *args)
    run_id: str = reply["run"]["run_id"]
    return run_id
