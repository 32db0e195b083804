"""Buggy or hostile trainers through the real daemon (issue 12, items 4, 5, 6, 13, 14):
the run's monitor absorbs them, the run gets its verdict, and the daemon keeps serving."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import (
    DaemonProcess,
    alive,
    events_on_disk,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)


def test_event_lines_no_codec_can_carry_are_skipped_counted_and_the_run_completes(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Item 4: 10**30, -2**63-1, 5,000-deep nesting, NaN, Infinity, 1e400, a lone
    surrogate and bad UTF-8 on stderr; the reader survives every one of them."""
    daemon = daemon_factory(RF_TEST_MODE="codec_garbage").start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    assert wait_result(ws, run_id)["state"] == "completed"
    events = events_on_disk(ws, run_id)
    reasons = [e["data"]["reason"] for e in events if e["type"] == "invalid_event_line"]
    assert len(reasons) == 9
    assert daemon.ctl_json("status")["counters"]["invalid_trainer_lines"] == 9
    # The replay of the whole run decodes, and a follower ends with it.
    replayed = daemon.ctl("events", "-w", str(ws), "--run", run_id, "--json", check=True)
    assert json.loads(replayed.stdout.splitlines()[-1])["type"] == "run_terminal"


def test_a_stdout_flood_is_capped_and_the_daemon_answers_meanwhile(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Item 5: logs.txt stops at maxLogBytes (said in the file and in an event), one line
    is bounded, and ping is answered all through the flood."""
    daemon = daemon_factory(RF_TEST_MODE="flood_stdout", RF_TEST_FLOOD_BYTES="200000000").start()
    ws = trainer_workspace(daemon, settings={"runforge.maxLogBytes": 5_000_000})
    run_id = start_detached(daemon, ws)
    wait_for((run_dir(ws, run_id) / "trainer.pid").exists, timeout=60)
    pings = 0
    while not (run_dir(ws, run_id) / "result.json").exists():
        assert daemon.ctl("ping", timeout=30).returncode == 0
        pings += 1
    assert pings >= 1
    assert wait_result(ws, run_id)["state"] == "completed"
    logs = (run_dir(ws, run_id) / "logs.txt").read_bytes()
    assert len(logs) <= 5_000_000 + 1000
    assert b"reached its cap of 5000000 bytes (runforge.maxLogBytes)" in logs
    truncated = [e for e in events_on_disk(ws, run_id) if e["type"] == "logs_truncated"]
    assert [e["data"]["max_log_bytes"] for e in truncated] == [5_000_000]


def test_an_escaped_double_forked_grandchild_is_killed_when_the_run_ends(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Item 6: its parent exited and it left the session; the run's monitor is a child
    subreaper, so it was re-parented there and dies with the run."""
    daemon = daemon_factory(RF_TEST_MODE="double_fork").start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(
        daemon, ws, "--param", "RF_TEST_STEPS=20", "--param", "RF_TEST_STEP_S=0.1"
    )
    tree_file = run_dir(ws, run_id) / "tree.json"
    wait_for(tree_file.exists, timeout=60)
    escaped = json.loads(tree_file.read_text())["descendants"][0]["pid"]
    assert alive(escaped)
    assert wait_result(ws, run_id)["state"] == "completed"
    wait_for(lambda: not alive(escaped), timeout=30)


def test_the_run_ends_when_the_trainer_is_reaped_though_workers_hold_its_pipes(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Item 13: the trainer exits 0 leaving three workers (10-minute sleepers) holding
    stdout and stderr; the run completes at once and the workers are killed."""
    daemon = daemon_factory(
        RF_TEST_MODE="grandchildren", RF_TEST_STEPS="3", RF_TEST_STEP_S="0"
    ).start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    tree_file = run_dir(ws, run_id) / "tree.json"
    wait_for(tree_file.exists, timeout=60)
    workers = [d["pid"] for d in json.loads(tree_file.read_text())["descendants"]]
    result = wait_result(ws, run_id, timeout=120)
    assert result["state"] == "completed"
    wait_for(lambda: not any(alive(w) for w in workers), timeout=30)


@pytest.fixture
def small_disk(
    daemon_factory: Callable[..., DaemonProcess],
) -> Iterator[tuple[DaemonProcess, Path]]:
    """A daemon and a mount point for a 4 MiB tmpfs (root and mount(2) needed)."""
    daemon = daemon_factory(RF_TEST_MODE="flood_stdout", RF_TEST_FLOOD_BYTES="50000000")
    mount_point = daemon.root / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield daemon, mount_point
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_still_gives_every_run_a_verdict_frees_its_slot_and_lets_stop_finish(
    small_disk: tuple[DaemonProcess, Path],
) -> None:
    """Item 14 (the supervisor's part): the flood fills the workspace's disk; writing
    and closing the run's files fail, yet the run ends, the queued run after it gets its
    turn, a run after space is freed completes, and the daemon stops cleanly."""
    daemon, mount_point = small_disk
    daemon.extra_env.update(RF_TEST_MODE="complete")  # per run below, by --param
    daemon.start()
    ws = trainer_workspace(daemon, "small/ws", settings={"runforge.maxLogBytes": 1 << 30})
    # One run at a time: the flood and the run after it are accepted while a first run
    # holds the slot, before the disk is full.
    gate = start_detached(
        daemon, ws, "--param", "RF_TEST_STEPS=30", "--param", "RF_TEST_STEP_S=0.1"
    )
    flood = start_detached(daemon, ws, "--param", "RF_TEST_MODE=flood_stdout")
    queued = start_detached(daemon, ws)
    assert wait_result(ws, gate)["state"] == "completed"

    # Both end (neither stays running nor queued for ever), though result.json may not
    # be writable: the verdict is in the daemon's answers.
    wait_for(lambda: daemon.ctl_json("active")["runs"] == [], timeout=100, interval=0.2)
    verdicts = {
        e["run_id"]: e["state"] for e in daemon.log_events() if e.get("event") == "run_terminal"
    }
    assert verdicts.get(flood) in ("failed", "completed"), verdicts
    assert verdicts.get(queued) in ("failed", "completed"), verdicts
    (run_dir(ws, flood) / "logs.txt").unlink()
    time.sleep(0.1)
    after = start_detached(daemon, ws)
    assert wait_result(ws, after)["state"] == "completed"
    assert daemon.stop(timeout=60) == 0
    assert mount_point.is_dir()
