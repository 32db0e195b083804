"""Reconciliation after a daemon crash: a trainer that died while no daemon ran, and the
in-flight records of a daemon from before per-run monitors (its trainers were its own
children), where no stranger's process is ever signalled. Runs that outlive the daemon
are in test_runs_outlive_the_daemon.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from tests.harness import (
    DaemonProcess,
    alive,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)


def test_a_trainer_killed_while_no_daemon_runs_is_failed_from_its_exit_record(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="graceful", RF_TEST_STEPS="10000").start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_for((run_dir(ws, run_id) / "trainer.pid").exists, timeout=60)
    pid = int((run_dir(ws, run_id) / "trainer.pid").read_text())
    daemon.kill_hard()
    psutil.Process(pid).kill()
    wait_for(lambda: not alive(pid), timeout=30)
    daemon.start()
    # Its monitor saw it die and recorded the status: nothing is lost.
    result = wait_result(ws, run_id)
    assert result["state"] == "failed"
    assert result["exit_code"] == -9 and "SIGKILL" in result["reason"]
    runs = daemon.ctl_json("runs", "--workspace", str(ws))["runs"]
    assert [r["state"] for r in runs if r["run_id"] == run_id] == ["failed"]


def test_a_reused_pid_in_a_legacy_inflight_record_is_never_mistaken_for_a_run(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        ws = daemon.root / "ws"
        (ws / ".ml" / "runs" / "20260101-000000-aaaaaaaa").mkdir(parents=True)
        state = daemon.root / "state" / "inflight"
        state.mkdir(parents=True)
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot_id = handle.read().strip()
        record = {
            "run_id": "20260101-000000-aaaaaaaa",
            "workspace": str(ws),
            "run_dir": ".ml/runs/20260101-000000-aaaaaaaa",
            "pid": bystander.pid,  # alive, but not the trainer: its start time differs
            "create_time": psutil.Process(bystander.pid).create_time() - 1000.0,
            "boot_id": boot_id,
            "started_at": "2026-01-01T00:00:00Z",
            "cancel_requested": False,
            "cancel_grace_s": 1.0,
        }
        (state / "20260101-000000-aaaaaaaa.json").write_text(json.dumps(record))
        daemon.start()
        time.sleep(0.5)
        assert bystander.poll() is None, "the daemon signalled a process that was not its run"
        result = json.loads((ws / ".ml/runs/20260101-000000-aaaaaaaa/result.json").read_text())
        assert result["state"] == "lost"
        assert not any(state.iterdir())
    finally:
        bystander.kill()
        bystander.wait()
    assert os.path.isdir(daemon.root)
