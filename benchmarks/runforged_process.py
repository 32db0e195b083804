"""A real runforged for the benchmarks: private runtime/config/state directories in a
temp dir, the in-process client, workspaces running the purpose-built test trainer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.processes import command, read_int_file, terminate, wait_until
from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforgectl.client import Client, DaemonUnavailable

REPO = Path(__file__).resolve().parents[1]
TEST_TRAINER = REPO / "tests" / "trainers" / "rf_test_trainer"
START_TIMEOUT_S = 60


def short_tempdir(prefix: str) -> Path:
    """A temp dir with a short path: ipc:// socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class RunforgedProcess:
    """One daemon. ``trainer_env`` (``RF_TEST_MODE``...) is given to the daemon, which
    passes it on to every trainer it spawns; ``user_config`` is its ``config.json``."""

    def __init__(
        self,
        trainer_env: dict[str, str] | None = None,
        user_config: dict[str, Any] | None = None,
    ) -> None:
        self.root = short_tempdir("rf-bench-")
        self.trainer_env = trainer_env or {}
        self.config_dir.mkdir()
        if user_config:
            (self.config_dir / "config.json").write_text(json.dumps(user_config))
        self.endpoints = Endpoints(self.root / "run")
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Client | None = None

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNFORGE_", "RF_TEST_"))}
        env.update(self.trainer_env)
        env.update(
            {
                "RUNFORGE_RUNTIME_DIR": str(self.endpoints.runtime_dir),
                "RUNFORGE_CONFIG_DIR": str(self.config_dir),
                "RUNFORGE_STATE_DIR": str(self.root / "state"),
            }
        )
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> float:
        """Start ``runforged`` in the foreground; seconds until it first answers a ping."""
        started = time.perf_counter()
        with open(self.root / "runforged.log", "ab") as log:
            self.proc = subprocess.Popen(
                [command("runforged"), "--log-format", "json"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
            )
        probe = Client(self.endpoints, timeout_s=1.0)
        try:
            while True:
                try:
                    probe.call(m.Ping(), timeout_s=1.0)
                    break
                except DaemonUnavailable:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"runforged exited: {self.log_tail()}") from None
                    if time.perf_counter() - started > START_TIMEOUT_S:
                        raise
                    time.sleep(0.0005)
        finally:
            probe.close()
        return time.perf_counter() - started

    def stop(self) -> float:
        """SIGTERM; seconds until the process has exited."""
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return time.perf_counter() - started

    def close(self) -> None:
        """Stop the daemon (and with it its runs) and remove every file it had."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None:
            terminate(self.proc, timeout_s=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RunforgedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self) -> str:
        path = self.root / "runforged.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    # ------------------------------------------------------------------ requests

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.endpoints, timeout_s=60)
        return self._client

    def ctl(self, *args: str) -> list[str]:
        """The argv of a whole-process ``runforgectl`` command for this daemon (run it
        with ``self.env``)."""
        return [command("runforgectl"), *args]

    def trainer_workspace(self, name: str, settings: dict[str, Any] | None = None) -> Path:
        """A trusted workspace whose runner is ``rf_test_trainer``, with a tiny CSV."""
        workspace = self.root / name
        workspace.mkdir()
        (workspace / "rf_test_trainer").symlink_to(TEST_TRAINER)
        (workspace / "data.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
        document = {"runforge.mlRunnerModule": "rf_test_trainer"}
        document.update(settings or {})
        (workspace / ".vscode").mkdir()
        (workspace / ".vscode" / "settings.json").write_text(json.dumps(document))
        self.trust(workspace)
        return workspace

    def trust(self, workspace: Path) -> None:
        self.client.result(m.TrustPath(path=str(workspace)))

    def train(self, workspace: Path, grace_s: float | None = None) -> str:
        """Start a run (detached); its run id."""
        result = self.client.result(
            m.Train(workspace=str(workspace), dataset=str(workspace / "data.csv"), grace_s=grace_s)
        )
        assert isinstance(result, m.TrainResult)
        return result.run.run_id

    def trainer_pid(self, workspace: Path, run_id: str, timeout_s: float = 60) -> int:
        """The trainer's pid, once its SIGTERM handling is in place."""
        pid_file = workspace / ".ml" / "runs" / run_id / "trainer.pid"
        return wait_until(lambda: read_int_file(pid_file), timeout_s, f"{pid_file}")

    def wait_terminal(self, workspace: Path, run_ids: set[str], timeout_s: float = 120) -> None:
        """Until none of ``run_ids`` is live in the daemon any more."""

        def none_live() -> bool:
            result = self.client.result(m.Active(workspace=str(workspace)))
            assert isinstance(result, m.ActiveResult)
            return not run_ids & {r.run_id for r in result.runs}

        wait_until(none_live, timeout_s, f"runs {sorted(run_ids)} to end", interval_s=0.01)
