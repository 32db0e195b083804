"""Concurrency limits and the queue: one active run per workspace by default, the others
queued and visible as such, started first in, first out; ``maxConcurrentRuns`` lets
several run at once."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import events_on_disk, run_dir, start_detached, wait_result
from tests.harness import DaemonProcess, trainer_workspace, wait_for


def active_by_id(daemon: DaemonProcess, workspace: Path) -> dict[str, dict[str, Any]]:
    runs = daemon.ctl_json("active", "--workspace", str(workspace))["runs"]
    return {run["run_id"]: run for run in runs}


def trainer_started(workspace: Path, run_id: str) -> bool:
    return (run_dir(workspace, run_id) / "trainer.pid").exists()


def spawned_seq(workspace: Path, run_id: str) -> float:
    """When the run's ``run_spawned`` event was stamped (by its monitor, so the on-disk
    daemon-wide ``seq`` is 0: the time orders runs across monitors)."""
    [ts] = [e["ts"] for e in events_on_disk(workspace, run_id) if e["type"] == "run_spawned"]
    return float(ts)


def terminal_seq(workspace: Path, run_id: str) -> float:
    [ts] = [e["ts"] for e in events_on_disk(workspace, run_id) if e["type"] == "run_terminal"]
    return float(ts)


def test_by_default_one_run_per_workspace_and_the_rest_queue_in_fifo_order(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    # Slow trainers that exit at once on cancel: each run lasts until it is cancelled.
    daemon, workspace = trainer_daemon(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="0")
    first, second, third = (start_detached(daemon, workspace) for _ in range(3))
    wait_for(lambda: trainer_started(workspace, first), timeout=60)

    active = active_by_id(daemon, workspace)
    assert active[first]["state"] == "running" and active[first]["pid"]
    assert (active[second]["state"], active[second]["queue_position"]) == ("queued", 1)
    assert (active[third]["state"], active[third]["queue_position"]) == ("queued", 2)
    table = daemon.ctl("active", "--workspace", str(workspace), check=True).stdout
    assert [line.split()[1] for line in table.splitlines()[2:]] == ["running", "queued", "queued"]
    listed = daemon.ctl_json("runs", "--workspace", str(workspace))["runs"]
    assert {r["run_id"]: r["state"] for r in listed} == {
        first: "running",
        second: "queued",
        third: "queued",
    }
    assert not (run_dir(workspace, second) / "logs.txt").exists()  # never spawned

    daemon.ctl("cancel", first, check=True)
    wait_for(lambda: trainer_started(workspace, second), timeout=60)
    active = active_by_id(daemon, workspace)
    assert set(active) == {second, third}
    assert active[second]["state"] == "running"
    assert (active[third]["state"], active[third]["queue_position"]) == ("queued", 1)
    assert not trainer_started(workspace, third)

    daemon.ctl("cancel", second, check=True)
    wait_for(lambda: trainer_started(workspace, third), timeout=60)
    daemon.ctl("cancel", third, check=True)
    for run_id in (first, second, third):
        assert wait_result(workspace, run_id)["state"] == "cancelled_graceful"
    # Each started only after the one before it had ended.
    assert spawned_seq(workspace, first) < terminal_seq(workspace, first)
    assert terminal_seq(workspace, first) < spawned_seq(workspace, second)
    assert terminal_seq(workspace, second) < spawned_seq(workspace, third)
    assert daemon.ctl_json("active")["runs"] == []


def test_queued_runs_complete_one_after_the_other(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(RF_TEST_STEPS="10", RF_TEST_STEP_S="0.05")
    run_ids = [start_detached(daemon, workspace) for _ in range(3)]
    results = [wait_result(workspace, run_id) for run_id in run_ids]
    assert [r["state"] for r in results] == ["completed"] * 3
    for earlier, later in itertools.pairwise(run_ids):
        assert terminal_seq(workspace, earlier) < spawned_seq(workspace, later)
    started = [r["started_at"] for r in results]
    assert started == sorted(started)


def test_max_concurrent_runs_two_lets_two_run_at_once(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(
        {"runforge.maxConcurrentRuns": 2}, RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="0"
    )
    first, second, third = (start_detached(daemon, workspace) for _ in range(3))
    wait_for(lambda: trainer_started(workspace, first), timeout=60)
    wait_for(lambda: trainer_started(workspace, second), timeout=60)
    active = active_by_id(daemon, workspace)
    assert active[first]["state"] == active[second]["state"] == "running"
    assert (active[third]["state"], active[third]["queue_position"]) == ("queued", 1)
    status = daemon.ctl_json("status")
    assert (status["active_runs"], status["queued_runs"]) == (2, 1)

    daemon.ctl("cancel", second, check=True)
    wait_for(lambda: trainer_started(workspace, third), timeout=60)
    assert active_by_id(daemon, workspace)[first]["state"] == "running"
    for run_id in (first, third):
        daemon.ctl("cancel", run_id, check=True)
    for run_id in (first, second, third):
        assert wait_result(workspace, run_id)["state"] == "cancelled_graceful"


def test_the_limit_is_per_workspace(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    """A run queued behind another workspace's run is not held up by it: workspaces
    share only the global limit."""
    daemon, first_ws = trainer_daemon(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="0")
    second_ws = trainer_workspace(daemon, name="ws2")
    first = start_detached(daemon, first_ws)
    queued = start_detached(daemon, first_ws)
    other = start_detached(daemon, second_ws)
    wait_for(lambda: trainer_started(first_ws, first), timeout=60)
    wait_for(lambda: trainer_started(second_ws, other), timeout=60)
    assert active_by_id(daemon, first_ws)[queued]["state"] == "queued"
    for run_id in (queued, other, first):
        daemon.ctl("cancel", run_id, check=True)
    assert wait_result(first_ws, queued)["state"].startswith("cancelled")
    assert not (run_dir(first_ws, queued) / "logs.txt").exists()  # cancelled while queued
