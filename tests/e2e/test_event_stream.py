"""Every watcher sees every event: several `runforgectl events` subscribers receive a
run's events in order with no gap and no duplicate, and a watcher that joins mid-run
replays what it missed, then continues live without a gap."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.conftest import (
    events_on_disk,
    json_lines,
    run_dir,
    start_detached,
    wait_result,
)
from tests.harness import DaemonProcess, wait_for

WATCHERS = 3


@dataclass
class Watcher:
    """A ``runforgectl events ... --json`` process writing to a file."""

    proc: subprocess.Popen[bytes]
    out: Path

    def events(self) -> list[dict[str, Any]]:
        # A live watcher may be mid-line: only complete lines count.
        text = self.out.read_text()
        return json_lines(text[: text.rfind("\n") + 1])

    def finish(self) -> list[dict[str, Any]]:
        """Wait for a watcher that ends by itself (``--run``) and check its exit."""
        code = self.proc.wait(timeout=120)
        assert code == 0, self.out.with_suffix(".err").read_text()
        return self.events()


@contextmanager
def watchers(daemon: DaemonProcess, *args: str, count: int = WATCHERS) -> Iterator[list[Watcher]]:
    """``count`` concurrent ``runforgectl events ARGS --json`` processes, killed on exit."""
    made = []
    try:
        for n in range(count):
            out = daemon.root / f"watcher-{time.time_ns()}-{n}.jsonl"
            with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "runforgectl", "events", *args, "--json"],
                    stdout=stdout,
                    stderr=stderr,
                    env=daemon.env,
                    cwd=daemon.root,
                )
            made.append(Watcher(proc, out))
        yield made
    finally:
        for watcher in made:
            if watcher.proc.poll() is None:
                watcher.proc.kill()
            watcher.proc.wait()


def wait_all_receiving(procs: list[Watcher], run_id: str) -> None:
    """Until every watcher has printed at least one event of the run (it has joined)."""
    for watcher in procs:
        wait_for(
            lambda w=watcher: any(e["run_id"] == run_id for e in w.events()),  # type: ignore[misc]
            timeout=60,
            interval=0.05,
        )


def wait_terminal(procs: list[Watcher], run_id: str) -> None:
    """Until every live watcher has printed the run's terminal event."""

    def has_terminal(watcher: Watcher) -> bool:
        assert watcher.proc.poll() is None, watcher.out.with_suffix(".err").read_text()
        events = watcher.events()
        return any(e["type"] == "run_terminal" and e["run_id"] == run_id for e in events)

    for watcher in procs:
        wait_for(lambda w=watcher: has_terminal(w), timeout=60, interval=0.1)  # type: ignore[misc]


def last_run_seq(workspace: Path, run_id: str) -> int:
    path = run_dir(workspace, run_id) / "events.jsonl"
    if not path.exists():
        return 0
    return max((e["run_seq"] for e in events_on_disk(workspace, run_id)), default=0)


def assert_complete_and_ordered(
    received: list[dict[str, Any]], on_disk: list[dict[str, Any]]
) -> None:
    assert [e["run_seq"] for e in received] == list(range(1, len(on_disk) + 1))
    assert without_seq(received) == without_seq(on_disk)
    # seq is daemon-wide, given at publication; on disk an event numbered by the run's
    # monitor carries 0, so replayed events may show 0.
    seqs = [e["seq"] for e in received if e["seq"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def without_seq(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "seq"} for e in events]


def test_three_run_watchers_each_receive_every_event_in_order(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    """Three ``events --run R`` watchers join while the trainer runs (it trains for a
    minute), the trainer goes on producing events, then it is cancelled: each watcher
    prints exactly the run's persisted events, run_seq 1..N, and ends with the run."""
    daemon, workspace = trainer_daemon(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="0")
    run_id = start_detached(daemon, workspace)
    with watchers(daemon, "--workspace", str(workspace), "--run", run_id) as procs:
        wait_all_receiving(procs, run_id)
        joined_at = max(e["run_seq"] for w in procs for e in w.events())
        wait_for(lambda: last_run_seq(workspace, run_id) >= joined_at + 5, timeout=60)
        assert not (run_dir(workspace, run_id) / "result.json").exists()
        daemon.ctl("cancel", run_id, "--no-wait", check=True)
        received = [watcher.finish() for watcher in procs]
    result = wait_result(workspace, run_id)
    assert result["state"] == "cancelled_graceful"
    on_disk = events_on_disk(workspace, run_id)
    assert on_disk[-1]["type"] == "run_terminal"
    for events in received:
        assert_complete_and_ordered(events, on_disk)
    types = [e["type"] for e in received[0]]
    assert (
        types.index("train_progress")
        < types.index("cancel_requested")
        < types.index("run_cancelled")
        < types.index("run_terminal")
    )


def test_three_workspace_watchers_see_a_flood_of_events_without_a_gap(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    """Live-only watchers (``events --workspace W``, no replay behind them) receive a
    trainer's flood of progress events, every one, in order. A first run proves all three
    are subscribed before the measured one starts."""
    daemon, workspace = trainer_daemon(RF_TEST_MODE="flood", RF_TEST_EVENTS="1000")
    with watchers(daemon, "--workspace", str(workspace)) as procs:
        # Warm-up runs until every watcher has seen one end: all are subscribed.
        for _ in range(20):
            warm_up = start_detached(daemon, workspace)
            wait_result(workspace, warm_up)
            time.sleep(0.2)  # lets a subscribed watcher print the end it just received
            if all(any(e["type"] == "run_terminal" for e in w.events()) for w in procs):
                break
        else:
            raise AssertionError("the watchers never received a whole warm-up run")
        run_id = start_detached(daemon, workspace)
        wait_result(workspace, run_id)
        wait_terminal(procs, run_id)
        received = [[e for e in w.events() if e["run_id"] == run_id] for w in procs]
    on_disk = events_on_disk(workspace, run_id)
    assert len([e for e in on_disk if e["type"] == "train_progress"]) == 1000
    epochs = [e["data"]["epoch"] for e in on_disk if e["type"] == "train_progress"]
    assert epochs == list(range(1000))
    for events in received:
        assert_complete_and_ordered(events, on_disk)


def test_a_watcher_joining_mid_run_replays_then_continues_live_without_gap(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    """``events --run R --since K`` started when the run is past K: it prints K+1 up to
    what had happened (the replay), then what happens next (live), then the end."""
    daemon, workspace = trainer_daemon(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="0")
    run_id = start_detached(daemon, workspace)
    wait_for(lambda: last_run_seq(workspace, run_id) >= 10, timeout=60)
    since = 4
    with watchers(
        daemon, "--workspace", str(workspace), "--run", run_id, "--since", str(since), count=1
    ) as procs:
        wait_all_receiving(procs, run_id)
        joined_at = max(e["run_seq"] for e in procs[0].events())
        wait_for(lambda: last_run_seq(workspace, run_id) >= joined_at + 5, timeout=60)
        daemon.ctl("cancel", run_id, "--no-wait", check=True)
        received = procs[0].finish()
    on_disk = events_on_disk(workspace, run_id)
    assert [e["run_seq"] for e in received] == list(range(since + 1, len(on_disk) + 1))
    assert without_seq(received) == without_seq(on_disk[since:])
    assert received[-1]["type"] == "run_terminal"
    assert since + 1 < joined_at < received[-1]["run_seq"]


def test_a_watcher_of_a_finished_run_replays_it_all_and_ends(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon()
    run_id = start_detached(daemon, workspace)
    wait_result(workspace, run_id)
    result = daemon.ctl("events", "--workspace", str(workspace), "--run", run_id, "--json")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == events_on_disk(workspace, run_id)
    human = daemon.ctl("events", "-w", str(workspace), "--run", run_id, "--since", "2").stdout
    lines = human.splitlines()
    assert f"{run_id}#3 " in lines[0] and "run_terminal" in lines[-1]


def test_status_counts_every_subscriber(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon()
    before = daemon.ctl_json("status")["subscriptions"]
    with watchers(daemon, "--workspace", str(workspace)):
        wait_for(
            lambda: daemon.ctl_json("status")["subscriptions"] >= before + WATCHERS,
            timeout=60,  # watchers are Python processes starting on a possibly busy machine
            interval=0.2,
        )
