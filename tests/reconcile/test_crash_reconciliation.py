"""Reconciliation after a daemon crash: SIGKILL the daemon with runs in flight, restart it,
and every run ends in a terminal state, completed ones indexed exactly once, no trainer
left behind, and no stranger's process ever signalled."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from tests.harness import (
    DaemonProcess,
    alive,
    index_ids,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
)


def test_sigkilled_daemon_runs_are_classified_on_restart(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_STEP_S="0.2")
    daemon.extra_env.update(RF_TEST_MODE="graceful", RF_TEST_STEPS="10000")
    daemon.start()
    slow_ws = trainer_workspace(daemon, "slow")
    fast_ws = trainer_workspace(daemon, "fast")
    slow = start_detached(daemon, slow_ws)
    wait_for((run_dir(slow_ws, slow) / "trainer.pid").exists, timeout=60)
    slow_pid = int((run_dir(slow_ws, slow) / "trainer.pid").read_text())

    # The fast run's trainer outlives the daemon and finishes while it is down.
    daemon.kill_hard()
    daemon.extra_env.update(RF_TEST_MODE="complete", RF_TEST_STEPS="15")
    daemon.start()
    fast = start_detached(daemon, fast_ws)
    wait_for((run_dir(fast_ws, fast) / "trainer.pid").exists, timeout=60)
    fast_pid = int((run_dir(fast_ws, fast) / "trainer.pid").read_text())
    daemon.kill_hard()
    wait_for(lambda: not alive(fast_pid), timeout=60)
    assert (run_dir(fast_ws, fast) / "run.json").exists()
    assert not (run_dir(fast_ws, fast) / "result.json").exists()

    daemon.start()  # reconciles before it answers
    slow_result = json.loads((run_dir(slow_ws, slow) / "result.json").read_text())
    fast_result = json.loads((run_dir(fast_ws, fast) / "result.json").read_text())
    assert slow_result["state"] == "cancelled_graceful", slow_result
    assert fast_result["state"] == "completed", fast_result
    assert fast_result["index_status"] == "indexed"
    assert index_ids(fast_ws).count(fast) == 1
    assert slow not in index_ids(slow_ws)
    assert not alive(slow_pid)
    assert daemon.ctl_json("active")["runs"] == []

    # A follower of either run sees its end (the terminal event was appended on restart).
    for ws, run_id in ((slow_ws, slow), (fast_ws, fast)):
        follow = daemon.ctl("events", "--workspace", str(ws), "--run", run_id, "--json")
        kinds = [json.loads(line)["type"] for line in follow.stdout.splitlines()]
        assert kinds[-1] == "run_terminal", kinds

    # Restarting again changes nothing: exactly once.
    daemon.stop()
    daemon.start()
    assert index_ids(fast_ws).count(fast) == 1


def test_trainer_gone_without_result_is_lost(daemon_factory: Callable[..., DaemonProcess]) -> None:
    daemon = daemon_factory(RF_TEST_MODE="graceful", RF_TEST_STEPS="10000").start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_for((run_dir(ws, run_id) / "trainer.pid").exists, timeout=60)
    pid = int((run_dir(ws, run_id) / "trainer.pid").read_text())
    daemon.kill_hard()
    psutil.Process(pid).kill()
    wait_for(lambda: not alive(pid), timeout=30)
    daemon.start()
    result = json.loads((run_dir(ws, run_id) / "result.json").read_text())
    assert result["state"] == "lost"
    assert "daemon died" in result["reason"]
    runs = daemon.ctl_json("runs", "--workspace", str(ws))["runs"]
    assert [r["state"] for r in runs if r["run_id"] == run_id] == ["lost"]


def test_a_reused_pid_is_never_mistaken_for_a_run(
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


def test_a_stubborn_tree_left_by_a_crashed_daemon_is_killed_on_restart(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="grandchildren", RF_TEST_GRANDCHILDREN="3").start()
    ws = trainer_workspace(daemon, settings={"runforge.cancelGraceSeconds": 1})
    run_id = start_detached(daemon, ws)
    tree_file = run_dir(ws, run_id) / "tree.json"
    wait_for(tree_file.exists, timeout=60)
    tree = json.loads(tree_file.read_text())
    pids = [tree["trainer"]] + [d["pid"] for d in tree["descendants"]]
    inflight = daemon.root / "state" / "inflight" / f"{run_id}.json"
    wait_for(lambda: len(json.loads(inflight.read_text())["descendants"]) >= 3, timeout=30)
    daemon.kill_hard()
    assert all(alive(p) for p in pids)
    daemon.start()
    wait_for(lambda: not any(alive(p) for p in pids), timeout=30)
    result = json.loads((run_dir(ws, run_id) / "result.json").read_text())
    assert result["state"] == "cancelled_forced"
    assert "restarted" in result["reason"]


def test_a_cancel_in_progress_survives_a_daemon_crash(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="ignore_sigterm").start()
    ws = trainer_workspace(daemon, settings={"runforge.cancelGraceSeconds": 1})
    run_id = start_detached(daemon, ws)
    wait_for((run_dir(ws, run_id) / "trainer.pid").exists, timeout=60)
    pid = int((run_dir(ws, run_id) / "trainer.pid").read_text())
    daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "60", "--no-wait", check=True)
    intents = daemon.root / "state" / "cancel-intents.log"
    assert run_id in intents.read_text().split()  # durable before the SIGTERM went out
    assert stat.S_IMODE(intents.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(intents.stat().st_mode) == 0o600
    daemon.kill_hard()
    daemon.start()
    result = json.loads((run_dir(ws, run_id) / "result.json").read_text())
    assert result["cancel_requested"] is True
    assert result["state"] == "cancelled_forced"
    assert not alive(pid)
    # Nothing is in flight any more: the journal is emptied.
    assert not intents.exists() or intents.read_text() == ""
