"""Runs outlive the daemon: SIGKILL it (or stop it with --keep-runs, or restart it) with
runs in flight and start a new one; every run goes on under its monitor to its normal
end, is classified and indexed exactly once, and its events stay contiguous for a
follower that stayed connected and for one that joined late."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import (
    DaemonProcess,
    alive,
    events_on_disk,
    index_ids,
    index_path,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)


def params(**values: object) -> tuple[str, ...]:
    """``--param NAME=VALUE`` for each of ``values`` (the test trainer's switches)."""
    return tuple(arg for name, value in values.items() for arg in ("--param", f"{name}={value}"))


SLOW = params(RF_TEST_STEPS=40, RF_TEST_STEP_S=0.1)


def daemon_and_workspace(
    daemon_factory: Callable[..., DaemonProcess],
    settings: dict[str, Any] | None = None,
    **env: str,
) -> tuple[DaemonProcess, Path]:
    """A started daemon whose trainers run in ``env``'s mode, and a trusted workspace."""
    daemon = daemon_factory(**env).start()
    return daemon, trainer_workspace(daemon, settings=settings)


def crash_and_restart(daemon: DaemonProcess) -> None:
    """SIGKILL the daemon (its runs' monitors go on), then start a new one."""
    daemon.kill_hard()
    daemon.start()


def tree_pids(workspace: Path, run_id: str) -> list[int]:
    """The trainer and the descendants the grandchildren mode wrote to ``tree.json``."""
    tree_file = run_dir(workspace, run_id) / "tree.json"
    wait_for(tree_file.exists, timeout=60)
    tree = json.loads(tree_file.read_text())
    return [tree["trainer"]] + [d["pid"] for d in tree["descendants"]]


def ended_in(workspace: Path, run_id: str, state: str) -> dict[str, Any]:
    """The run's result once it has ended in ``state``, its events contiguous."""
    result = wait_result(workspace, run_id)
    assert result["state"] == state, result
    assert_contiguous(events_on_disk(workspace, run_id))
    return result


def record_dir(daemon: DaemonProcess, run_id: str) -> Path:
    return daemon.root / "state" / "runs" / run_id


def trainer_pid(workspace: Path, run_id: str) -> int:
    path = run_dir(workspace, run_id) / "trainer.pid"
    wait_for(path.exists, timeout=60)
    return int(path.read_text())


def follower(daemon: DaemonProcess, workspace: Path, run_id: str) -> subprocess.Popen[str]:
    """``runforgectl events --run`` (replay, then live, to run_terminal) in the background."""
    argv = ["events", "-w", str(workspace), "--run", run_id, "--json"]
    return subprocess.Popen(
        [sys.executable, "-m", "runforgectl", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon.env,
    )


def followed(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    seqs = [e["run_seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    kinds = [e["type"] for e in events]
    assert kinds.count("run_terminal") == 1 and kinds[-1] == "run_terminal", kinds


def test_runs_go_on_through_a_daemon_kill_with_events_contiguous_for_every_follower(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon, ws = daemon_and_workspace(
        daemon_factory, {"runforge.maxConcurrentRuns": 3}, RF_TEST_MODE="complete"
    )
    first = start_detached(daemon, ws, *SLOW)
    second = start_detached(daemon, ws, *SLOW)
    cancelled = start_detached(daemon, ws, *params(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S=2))
    pids = [trainer_pid(ws, r) for r in (first, second, cancelled)]
    early = follower(daemon, ws, first)
    wait_for(lambda: len(events_on_disk(ws, first)) > 8, timeout=60)
    daemon.ctl(
        "cancel", cancelled, "--workspace", str(ws), "--grace", "30", "--no-wait", check=True
    )
    daemon.kill_hard()
    assert all(alive(pid) for pid in pids)  # nothing died with the daemon

    daemon.start()
    late = follower(daemon, ws, first)
    assert wait_result(ws, first)["state"] == "completed"
    assert wait_result(ws, second)["state"] == "completed"
    result = wait_result(ws, cancelled)
    assert result["state"] == "cancelled_graceful", result
    assert result["cancel_requested"] is True
    for run_id in (first, second, cancelled):
        assert_contiguous(events_on_disk(ws, run_id))
        assert not record_dir(daemon, run_id).exists()
    for events in (followed(early), followed(late)):
        assert_contiguous(events)
        assert [e["run_seq"] for e in events] == [e["run_seq"] for e in events_on_disk(ws, first)]
    assert sorted(index_ids(ws)) == sorted([first, second])

    daemon.stop()
    daemon.start()  # a second start changes nothing
    assert sorted(index_ids(ws)) == sorted([first, second])
    assert_contiguous(events_on_disk(ws, first))


def test_a_run_that_ends_while_no_daemon_runs_is_classified_at_the_next_start(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon, ws = daemon_and_workspace(daemon_factory, RF_TEST_MODE="complete")
    run_id = start_detached(daemon, ws, *params(RF_TEST_STEPS=20, RF_TEST_STEP_S=0.05))
    pid = trainer_pid(ws, run_id)
    daemon.kill_hard()
    wait_for(lambda: (record_dir(daemon, run_id) / "exit.json").exists(), timeout=60)
    assert not alive(pid)
    assert not (run_dir(ws, run_id) / "result.json").exists()
    daemon.start()
    assert ended_in(ws, run_id, "completed")["exit_code"] == 0
    assert index_ids(ws).count(run_id) == 1


def test_queued_runs_survive_a_daemon_kill_and_start_in_order_under_the_next(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon, ws = daemon_and_workspace(daemon_factory, RF_TEST_MODE="complete")
    runs = [start_detached(daemon, ws, *SLOW) for _ in range(3)]
    trainer_pid(ws, runs[0])
    assert not (run_dir(ws, runs[1]) / "trainer.pid").exists()
    crash_and_restart(daemon)
    for run_id in runs:
        ended_in(ws, run_id, "completed")
    ends = {r: events_on_disk(ws, r)[-1]["ts"] for r in runs}
    spawns = {
        r: next(e["ts"] for e in events_on_disk(ws, r) if e["type"] == "run_spawned") for r in runs
    }
    assert ends[runs[0]] < spawns[runs[1]] and ends[runs[1]] < spawns[runs[2]]
    assert index_ids(ws) == runs


def test_a_cancel_before_a_crash_keeps_its_deadline_and_its_explicit_grace(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon, ws = daemon_and_workspace(
        daemon_factory, {"runforge.cancelGraceSeconds": 1}, RF_TEST_MODE="ignore_sigterm"
    )
    run_id = start_detached(daemon, ws)
    pid = trainer_pid(ws, run_id)
    daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "6", "--no-wait", check=True)
    crash_and_restart(daemon)
    result = ended_in(ws, run_id, "cancelled_forced")
    assert result["cancel_requested"] is True
    assert not alive(pid)
    events = events_on_disk(ws, run_id)
    requested = next(e for e in events if e["type"] == "cancel_requested")
    escalated = next(e for e in events if e["type"] == "cancel_escalated")
    assert requested["data"]["grace_s"] == 6  # not the setting's 1 s
    assert escalated["ts"] - requested["ts"] >= 6 - 0.05  # the deadline was kept, not reset
    countdown = [e["data"]["seconds_remaining"] for e in events if e["type"] == "cancel_countdown"]
    assert countdown == [6, 5, 4, 3, 2, 1]


def test_a_cancel_after_a_restart_counts_down_and_kills_the_whole_tree(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon, ws = daemon_and_workspace(
        daemon_factory, RF_TEST_MODE="grandchildren", RF_TEST_GRANDCHILDREN="3"
    )
    run_id = start_detached(daemon, ws)
    pids = tree_pids(ws, run_id)
    crash_and_restart(daemon)
    assert all(alive(p) for p in pids)
    reply = daemon.ctl_json("cancel", run_id, "--workspace", str(ws), "--grace", "1", "--no-wait")
    assert reply["already_cancelling"] is False
    result = wait_result(ws, run_id)
    assert result["state"] == "cancelled_forced"
    wait_for(lambda: not any(alive(p) for p in pids), timeout=30)
    kinds = [e["type"] for e in events_on_disk(ws, run_id)]
    assert kinds.index("cancel_requested") < kinds.index("cancel_escalated")
    assert_contiguous(events_on_disk(ws, run_id))


def test_daemon_stop_keep_runs_and_daemon_restart_leave_runs_running(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon, ws = daemon_and_workspace(daemon_factory, RF_TEST_MODE="complete")
    run_id = start_detached(daemon, ws, *params(RF_TEST_STEPS=300, RF_TEST_STEP_S=0.1))
    pid = trainer_pid(ws, run_id)
    stopped = daemon.ctl_json("daemon", "stop", "--keep-runs")
    assert stopped["stopped"] is True and stopped["kept_runs"] == [run_id]
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0
    assert alive(pid)
    daemon.start()
    restarted = daemon.ctl("daemon", "restart")
    assert restarted.returncode == 0, restarted.stderr
    assert daemon.proc.wait(timeout=30) == 0  # the harness's daemon left; a new one serves
    assert alive(pid)
    assert ended_in(ws, run_id, "completed")["cancel_requested"] is False
    assert daemon.ctl("daemon", "stop").returncode == 0


def test_a_sigkilled_monitor_takes_its_trainer_and_workers_with_it(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Defined behaviour: a trainer never runs unmonitored. PR_SET_PDEATHSIG kills the
    trainer with its monitor, the daemon sweeps the rest of the run (by the run id in
    their environment), and the run fails saying why."""
    daemon, ws = daemon_and_workspace(
        daemon_factory, RF_TEST_MODE="grandchildren", RF_TEST_GRANDCHILDREN="3"
    )
    run_id = start_detached(daemon, ws)
    pids = tree_pids(ws, run_id)
    monitor_pid = json.loads((record_dir(daemon, run_id) / "monitor.json").read_text())["pid"]
    os.kill(monitor_pid, signal.SIGKILL)
    result = wait_result(ws, run_id)
    assert result["state"] == "failed"
    assert "monitor was killed" in result["reason"]
    wait_for(lambda: not any(alive(p) for p in pids), timeout=30)
    assert_contiguous(events_on_disk(ws, run_id))


def test_a_reused_pid_is_never_mistaken_for_a_monitor(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """The monitor's record names a live stranger's pid: only the lock the monitor held
    for its life says whether it runs, so the stranger is neither attached to nor
    signalled, and the run is classified as one whose monitor is gone."""
    daemon, ws = daemon_and_workspace(daemon_factory, RF_TEST_MODE="graceful")
    run_id = start_detached(daemon, ws)
    trainer = trainer_pid(ws, run_id)
    record = record_dir(daemon, run_id)
    monitor = json.loads((record / "monitor.json").read_text())
    daemon.kill_hard()
    os.kill(monitor["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(trainer), timeout=30)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        monitor["pid"] = stranger.pid
        (record / "monitor.json").write_text(json.dumps(monitor))
        daemon.start()
        result = wait_result(ws, run_id)
        assert result["state"] == "failed" and "monitor was killed" in result["reason"]
        assert stranger.poll() is None, "the daemon signalled a process that was not its run"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_verdict_on_disk_is_final_and_interrupted_writes_are_cleaned_up(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """A crash after result.json but before the run's record was dropped: the next
    daemon finishes the bookkeeping without classifying again (even with an exit record
    that would say otherwise), and removes temp files of interrupted writes."""
    daemon, ws = daemon_and_workspace(daemon_factory, RF_TEST_MODE="complete")
    run_id = start_detached(daemon, ws, *SLOW)
    trainer_pid(ws, run_id)
    saved = daemon.root / "accepted.json"
    shutil.copy(record_dir(daemon, run_id) / "accepted.json", saved)
    assert wait_result(ws, run_id)["state"] == "completed"
    daemon.stop()
    record = record_dir(daemon, run_id)
    record.mkdir()
    shutil.copy(saved, record / "accepted.json")
    (record / "exit.json").write_text(json.dumps({"exit_code": 1, "killed": False}))
    stale = [
        record / ".exit.json.tmp.999999999",
        run_dir(ws, run_id) / ".result.json.tmp.999999999.7f",
        index_path(ws).parent / ".index.json.tmp.999999999.7f",
    ]
    for path in stale:
        path.write_text("{")
    daemon.start()
    wait_for(lambda: not record.exists(), timeout=30)
    result = json.loads((run_dir(ws, run_id) / "result.json").read_text())
    assert result["state"] == "completed"
    assert index_ids(ws).count(run_id) == 1
    assert_contiguous(events_on_disk(ws, run_id))
    assert not stale[1].exists()  # the run folder's, at the run's (second) end
    daemon.ctl("recover", "--workspace", str(ws), check=True)
    assert not stale[2].exists()


def test_every_event_a_subscriber_sees_is_already_on_disk_so_a_kill_loses_none(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    # Events are persisted before they are published (the monitor's own and the daemon's:
    # run_queued, run_terminal...): a daemon SIGKILLed at any moment leaves events.jsonl
    # holding everything a follower was shown, and the next daemon, numbering from that
    # file, never reuses a run_seq.
    import msgspec
    import zmq

    daemon, ws = daemon_and_workspace(daemon_factory, RF_TEST_MODE="complete")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"ipc://{daemon.runtime_dir}/events.sock")
    try:
        # The subscription takes effect asynchronously: a ping run until events arrive.
        first = start_detached(daemon, ws, *params(RF_TEST_STEPS=2))
        wait_result(ws, first)
        runs = [
            start_detached(daemon, ws, *params(RF_TEST_STEPS=10, RF_TEST_STEP_S=0))
            for _ in range(3)
        ]
        seen: dict[str, list[int]] = {r: [] for r in runs}
        missing: list[tuple[str, int, str]] = []
        ended: set[str] = set()
        while ended != set(runs):
            assert sub.poll(60_000), f"no event for 60 s; ended {ended} of {runs}"
            _topic, payload = sub.recv_multipart()
            event = msgspec.msgpack.decode(payload)
            run_id = event["run_id"]
            if run_id not in seen:
                continue
            on_disk = {e["run_seq"] for e in events_on_disk(ws, run_id)}
            if event["run_seq"] not in on_disk:
                missing.append((run_id, event["run_seq"], event["type"]))
            seen[run_id].append(event["run_seq"])
            if event["type"] == "run_terminal":
                ended.add(run_id)
        assert missing == []
        daemon.kill_hard()  # right after the last run_terminal went out
        for run_id in runs:
            assert_contiguous(events_on_disk(ws, run_id))
            assert set(seen[run_id]) <= {e["run_seq"] for e in events_on_disk(ws, run_id)}
        daemon.start()
        for run_id in runs:
            assert_contiguous(events_on_disk(ws, run_id))
    finally:
        sub.close()
        context.term()
