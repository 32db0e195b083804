"""The per-run monitor on its own: a real monitor process (started the way the daemon starts
it) and a real test trainer, attached to over the monitor's socket. What it guarantees
without any daemon: events numbered and persisted, hostile lines skipped, logs capped,
the whole tree killed when the trainer is reaped, the exit status on disk."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from runforged import monitor
from tests.harness import (
    REPO_ROOT,
    SESSION_MARKER,
    SESSION_MARKER_ENV,
    TRAINERS_DIR,
    alive,
    remove_tree,
    short_tempdir,
    wait_for,
)

RUN_ID = "20260101-000000-0000abcd"


@dataclass
class MonitoredRun:
    root: Path
    pid: int = 0

    @property
    def workspace(self) -> Path:
        return self.root / "ws"

    @property
    def run_dir(self) -> Path:
        return self.workspace / ".ml" / "runs" / RUN_ID

    @property
    def record_dir(self) -> Path:
        return self.root / "state" / "runs" / RUN_ID

    def start(
        self, mode: str, *, max_log_bytes: int = 1 << 20, grace_s: float = 5.0, **env: str
    ) -> int:
        """Write accepted.json and start the monitor; the monitor's pid."""
        self.run_dir.mkdir(parents=True)
        self.record_dir.mkdir(parents=True)
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("RF_TEST_")}
        child_env.update(
            RF_TEST_MODE=mode,
            PYTHONPATH=f"{TRAINERS_DIR}{os.pathsep}{REPO_ROOT}",
            RUNFORGE_RUN_ID=RUN_ID,
            **{SESSION_MARKER_ENV: SESSION_MARKER},
            **env,
        )
        spec = {
            "run_id": RUN_ID,
            "workspace": str(self.workspace),
            "run_dir": str(self.run_dir),
            "cwd": str(self.workspace),
            "argv": [
                sys.executable,
                "-u",
                "-m",
                "rf_test_trainer",
                "train",
                f"--out={self.run_dir}",
            ],
            "env": child_env,
            "grace_s": grace_s,
            "max_log_bytes": max_log_bytes,
        }
        (self.record_dir / monitor.ACCEPTED).write_text(json.dumps({"spec": spec}))
        with open(self.record_dir / monitor.MONITOR_LOG, "ab") as log:
            first = subprocess.run(
                [sys.executable, "-I", "-S", monitor.__file__, str(self.record_dir), "1"],
                stdout=subprocess.PIPE,
                stderr=log,
                env={SESSION_MARKER_ENV: SESSION_MARKER},
                start_new_session=True,
                timeout=60,
                check=True,
            )
        assert first.stdout.startswith(b"READY "), first.stdout
        self.pid = int(first.stdout.split()[1])
        return self.pid

    def attach(self, since: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.record_dir / monitor.SOCKET))
        sock.sendall(json.dumps({"op": "attach", "since": since}).encode() + b"\n")
        return sock

    def exit_record(self, timeout: float = 120) -> dict[str, Any]:
        record: dict[str, Any] = wait_for(
            lambda: monitor.read_exit_record(str(self.record_dir)), timeout=timeout, interval=0.05
        )
        return record

    def events(self) -> list[dict[str, Any]]:
        path = self.run_dir / monitor.EVENTS_FILE
        return [json.loads(line) for line in path.read_text().splitlines()]

    def tree(self) -> dict[str, Any]:
        path = self.run_dir / "tree.json"
        wait_for(path.exists, timeout=60)
        data: dict[str, Any] = json.loads(path.read_text())
        return data


def read_stream(sock: socket.socket, timeout: float = 120) -> list[dict[str, Any]]:
    """Everything the monitor sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def run() -> Iterator[MonitoredRun]:
    root = short_tempdir()
    try:
        monitored = MonitoredRun(root)
        yield monitored
        if monitored.pid:  # it exits right after its goodbye
            wait_for(lambda: not alive(monitored.pid), timeout=30)
    finally:
        remove_tree(root)


def test_a_run_is_numbered_persisted_and_its_exit_recorded(run: MonitoredRun) -> None:
    pid = run.start("complete")
    record = run.exit_record()
    assert record["exit_code"] == 0
    assert record["killed"] is False
    events = run.events()
    assert [e["run_seq"] for e in events] == list(range(2, 2 + len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_spawned"
    assert kinds[-1] == "artifacts_written"
    assert record["last_run_seq"] == events[-1]["run_seq"]
    wait_for(lambda: not alive(pid), timeout=30)
    assert not monitor.monitor_is_running(str(run.record_dir))
    assert not (run.record_dir / monitor.SOCKET).exists()


def test_an_attached_client_gets_replay_then_live_then_the_exit(run: MonitoredRun) -> None:
    run.start("complete", RF_TEST_STEPS="20", RF_TEST_STEP_S="0.05")
    time.sleep(0.5)
    stream = read_stream(run.attach(since=3))
    assert stream[0]["op"] == "hello"
    assert stream[-1]["op"] == "exit"
    seqs = [m["run_seq"] for m in stream[1:-1]]
    assert seqs == list(range(4, 4 + len(seqs)))
    assert seqs[-1] == stream[-1]["last_run_seq"] == run.events()[-1]["run_seq"]


def test_a_client_that_stalls_past_its_backlog_catches_up_with_every_event_once(
    run: MonitoredRun,
) -> None:
    """A daemon that stops reading while the trainer floods (its socket buffer and the
    monitor's 1 MiB backlog fill up) falls behind; reading on, it gets the rest from
    events.jsonl, block by block from where it stopped, then live: every event once, in
    order, and the same lines as on disk. A second client attaching mid-run with ``since``
    starts exactly after it."""
    run.start("flood", RF_TEST_EVENTS="30000")
    stalled = run.attach(since=0)
    # ~30,000 events of ~300 bytes: several times the backlog and the socket buffer.
    events_file = run.run_dir / monitor.EVENTS_FILE
    wait_for(lambda: events_file.stat().st_size > 5_000_000, timeout=120, interval=0.1)
    late = run.attach(since=5_000)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        late_reader = pool.submit(read_stream, late)
        stream = read_stream(stalled)
        late_stream = late_reader.result(timeout=120)
    assert stream[0]["op"] == "hello" and stream[-1]["op"] == "exit"
    on_disk = run.events()
    events = stream[1:-1]
    assert events == on_disk
    seqs = [e["run_seq"] for e in events]
    assert seqs == list(range(2, 2 + len(seqs)))
    assert len(seqs) > 30_000
    assert [e["run_seq"] for e in late_stream[1:-1]] == list(range(5_001, seqs[-1] + 1))


def test_event_lines_no_codec_can_carry_are_skipped_with_a_reason(run: MonitoredRun) -> None:
    """Issue 12 item 4: huge integers, deep nesting, NaN, lone surrogates, bad UTF-8."""
    run.start("codec_garbage")
    record = run.exit_record()
    assert record["exit_code"] == 0
    assert record["invalid_lines"] == 9
    events = run.events()
    invalid = [e["data"]["reason"] for e in events if e["type"] == "invalid_event_line"]
    assert len(invalid) == 9
    assert any("64-bit" in r for r in invalid)
    assert any("nested" in r for r in invalid)
    assert any("surrogate" in r for r in invalid)
    assert any("UTF-8" in r for r in invalid)
    assert events[-1]["type"] == "artifacts_written"  # the reader survived every line
    # Everything persisted decodes with the daemon's own codec.
    import msgspec

    from runforge_protocol.messages import Event

    decoder = msgspec.json.Decoder(Event)
    for line in (run.run_dir / monitor.EVENTS_FILE).read_bytes().splitlines():
        msgspec.msgpack.encode(decoder.decode(line))


def test_a_stdout_flood_is_capped_and_said_so(run: MonitoredRun) -> None:
    """Issue 12 item 5: logs.txt stops at maxLogBytes, with a note and an event."""
    run.start("flood_stdout", max_log_bytes=2_000_000, RF_TEST_FLOOD_BYTES="30000000")
    record = run.exit_record()
    assert record["exit_code"] == 0
    assert record["log_truncated"] is True
    logs = (run.run_dir / monitor.LOGS_FILE).read_bytes()
    assert len(logs) < 2_000_000 + 1000
    assert b"reached its cap of 2000000 bytes" in logs
    assert b"were not written to logs.txt" in logs.splitlines()[-1]
    assert [e["type"] for e in run.events()].count("logs_truncated") == 1


def test_one_line_is_bounded(run: MonitoredRun) -> None:
    run.start("flood_stdout", max_log_bytes=50_000_000, RF_TEST_FLOOD_BYTES="1000000")
    run.exit_record()
    lines = (run.run_dir / monitor.LOGS_FILE).read_bytes().splitlines()
    assert max(len(line) for line in lines) <= monitor.MAX_LINE + 100
    assert any(line.endswith(b"[runforge: line cut at 1048576 bytes]") for line in lines)


def test_an_escaped_double_forked_descendant_is_killed_when_the_trainer_ends(
    run: MonitoredRun,
) -> None:
    """Issue 12 item 6: its parent exited, it is in its own session; the subreaper
    monitor still has it and kills it when the trainer is reaped."""
    pid = run.start("double_fork", RF_TEST_STEPS="10", RF_TEST_STEP_S="0.1")
    escaped = run.tree()["descendants"][0]["pid"]
    assert psutil.Process(escaped).ppid() == pid  # re-parented to the monitor, not init
    assert os.getsid(escaped) == escaped
    record = run.exit_record()
    assert record["exit_code"] == 0
    wait_for(lambda: not alive(escaped), timeout=30)


def test_the_run_ends_when_the_trainer_is_reaped_not_when_its_pipes_close(
    run: MonitoredRun,
) -> None:
    """Issue 12 item 13: workers keep stdout/stderr open (and sleep for ten minutes)."""
    run.start("grandchildren", RF_TEST_STEPS="3", RF_TEST_STEP_S="0")
    tree = run.tree()
    record = run.exit_record(timeout=60)
    assert record["exit_code"] == 0
    for worker in tree["descendants"]:
        wait_for(lambda w=worker: not alive(w["pid"]), timeout=30)


def test_cancel_terms_the_trainer_counts_down_and_kills_the_tree_at_the_deadline(
    run: MonitoredRun,
) -> None:
    run.start("grandchildren", RF_TEST_GRANDCHILDREN="3")
    tree = run.tree()  # written once every descendant ignores SIGTERM
    sock = run.attach()
    sock.sendall(b'{"op":"cancel","grace_s":1.5}\n')
    stream = read_stream(sock)
    kinds = [m.get("type") or m["op"] for m in stream]
    assert kinds.index("cancel_requested") < kinds.index("cancel_escalated")
    countdown = [
        m["data"]["seconds_remaining"] for m in stream if m.get("type") == "cancel_countdown"
    ]
    assert countdown == [2, 1]
    reply = next(m for m in stream if m.get("op") == "cancel")
    assert reply["already"] is False
    assert stream[-1]["op"] == "exit"
    assert stream[-1]["killed"] is True and stream[-1]["cancel_requested"] is True
    for pid in [tree["trainer"], *(d["pid"] for d in tree["descendants"])]:
        wait_for(lambda p=pid: not alive(p), timeout=30)


def test_a_cancel_keeps_its_deadline_with_nobody_attached(run: MonitoredRun) -> None:
    run.start("ignore_sigterm")
    wait_for((run.run_dir / "trainer.pid").exists, timeout=60)
    sock = run.attach()
    sock.sendall(b'{"op":"cancel","grace_s":1}\n')
    sock.recv(4096)
    sock.close()  # the daemon goes away
    record = run.exit_record(timeout=60)
    assert record["killed"] is True
    assert record["exit_code"] == -signal.SIGKILL


def test_sigterm_to_the_monitor_cancels_the_run_gracefully(run: MonitoredRun) -> None:
    pid = run.start("graceful", grace_s=60)  # generous: a loaded machine flushes slowly
    wait_for((run.run_dir / "trainer.pid").exists, timeout=60)
    os.kill(pid, signal.SIGTERM)
    record = run.exit_record(timeout=60)
    assert record["cancel_requested"] is True
    assert record["exit_code"] == 143
    assert (run.run_dir / ".cancelled").exists()


def test_a_sigkilled_monitor_takes_its_trainer_with_it(run: MonitoredRun) -> None:
    """The trainer never runs unmonitored: PR_SET_PDEATHSIG kills it with its monitor;
    the lock is free and no exit.json is written (the daemon classifies from that)."""
    pid = run.start("ignore_sigterm")
    wait_for((run.run_dir / "trainer.pid").exists, timeout=60)
    trainer = int((run.run_dir / "trainer.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(trainer), timeout=30)
    assert not monitor.monitor_is_running(str(run.record_dir))
    assert monitor.read_exit_record(str(run.record_dir)) is None
    assert monitor.read_monitor_record(str(run.record_dir)) is not None


def test_another_users_connection_is_refused_and_a_pid_alone_proves_nothing(
    run: MonitoredRun,
) -> None:
    run.start("graceful")
    record = monitor.read_monitor_record(str(run.record_dir))
    assert record is not None
    assert monitor.same_process(record, "") and monitor.same_process(record, "trainer_")
    forged = {**record, "start_ticks": record["start_ticks"] - 1}
    assert not monitor.same_process(forged, "")
    assert monitor.monitor_is_running(str(run.record_dir))
    sock = run.attach()
    sock.sendall(b'{"op":"cancel","grace_s":0}\n')
    read_stream(sock)
    run.exit_record()
