"""runforgectl bridge: the protocol as JSON lines over a subprocess's stdin/stdout."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import (
    DaemonProcess,
    events_on_disk,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)


class Bridge:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runforgectl", "bridge"],
            env=daemon.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # A thread reads the lines: select() on a buffered pipe would miss lines that an
        # earlier readline() already pulled into the buffer.
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, line: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 30) -> Any:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError("the bridge printed nothing") from None

    def reply(self, request_id: str) -> Any:
        while True:
            out = self.read()
            if out.get("id") == request_id:
                return out

    def until(self, predicate: Any, timeout: float = 120) -> list[Any]:
        """Every line up to and including the first one ``predicate`` accepts."""
        seen = []
        while True:
            out = self.read(timeout)
            seen.append(out)
            if predicate(out):
                return seen

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        return code


@pytest.fixture
def bridge(daemon: DaemonProcess) -> Iterator[Bridge]:
    b = Bridge(daemon)
    yield b
    if b.proc.poll() is None:
        b.proc.kill()
        b.proc.wait()


def test_bridge_forwards_requests_and_answers_garbage(bridge: Bridge) -> None:
    bridge.send({"type": "ping", "id": "a"})
    assert bridge.reply("a")["result"]["type"] == "hello"
    bridge.send("this is not json")
    garbage = bridge.reply("")
    assert garbage["ok"] is False and garbage["error"]["code"] == "BAD_REQUEST"
    bridge.send({"type": "trust", "id": "b"})
    assert bridge.reply("b")["error"]["code"] == "BAD_REQUEST"
    bridge.send({"type": "status", "id": "c"})
    assert bridge.reply("c")["result"]["type"] == "status"
    assert bridge.close() == 0


def test_bridge_streams_subscribed_events(bridge: Bridge) -> None:
    bridge.send({"type": "subscribe", "prefix": "daemon/", "id": "s"})
    assert bridge.reply("s") == {
        "id": "s",
        "ok": True,
        "result": {"type": "subscribe", "prefix": "daemon/"},
    }
    for attempt in range(200):  # until the daemon has seen the subscription
        bridge.send({"type": "status", "id": f"st{attempt}"})
        if bridge.reply(f"st{attempt}")["result"]["subscriptions"] >= 1:
            break
    bridge.send({"type": "shutdown", "id": "stop"})
    while True:
        out = bridge.read()
        if "event" in out:
            break
    assert out["event"]["type"] == "daemon_stopping"
    assert out["topic"] == "daemon/daemon_stopping"
    assert bridge.close() == 0


def test_bridge_without_daemon_exits_3(daemon: DaemonProcess) -> None:
    daemon.stop()
    result = daemon.ctl("bridge", input="")
    assert result.returncode == 3


def _run_events(lines: list[Any], run_id: str) -> list[dict[str, Any]]:
    return [x["event"] for x in lines if "event" in x and x["event"]["run_id"] == run_id]


def _terminal_of(run_id: str) -> Any:
    def accept(out: Any) -> bool:
        e = out.get("event")
        return bool(e and e["run_id"] == run_id and e["type"] == "run_terminal")

    return accept


def test_bridge_ids_are_the_adapters_own(bridge: Bridge) -> None:
    """Integer and string ids come back unchanged; an id already in flight is refused; the
    bridge's own requests (its hello) never take an adapter's id."""
    ready = bridge.until(lambda out: out.get("notify") == "ready")
    assert ready[-1]["data"]["type"] == "hello"
    bridge.send({"type": "ping", "id": 7})
    bridge.send({"type": "ping", "id": "~bridge-1"})
    assert bridge.reply(7)["result"]["type"] == "hello"
    assert bridge.reply("~bridge-1")["result"]["type"] == "hello"
    bridge.send({"type": "ping", "id": True})
    assert bridge.reply("")["error"]["code"] == "BAD_REQUEST"
    bridge.send({"type": "status", "id": "x"})
    bridge.send({"type": "ping", "id": "x"})
    first = bridge.read()
    second = bridge.read()
    replies = sorted([first, second], key=lambda r: r["ok"])
    assert replies[0]["id"] == "x" and replies[0]["error"]["code"] == "BAD_REQUEST"
    assert replies[1]["id"] == "x" and replies[1]["result"]["type"] == "status"
    assert bridge.close() == 0


def test_watch_delivers_every_run_event_once_in_order(
    daemon_factory: Any,
) -> None:
    """A watched workspace: a run trained through the bridge and one started from a
    terminal both arrive complete, each event exactly once, in run_seq order."""
    daemon = daemon_factory(RF_TEST_STEPS="5", RF_TEST_STEP_S="0.05").start()
    workspace = trainer_workspace(daemon)
    b = Bridge(daemon)
    try:
        b.send({"type": "watch", "workspace": str(workspace), "id": "w"})
        watch = b.reply("w")
        assert watch["ok"] and watch["result"]["workspace"] == str(workspace.resolve())
        b.send({"type": "train", "workspace": str(workspace), "id": 1})
        lines = b.until(lambda out: out.get("id") == 1)
        run_id = lines[-1]["result"]["run"]["run_id"]
        lines += b.until(_terminal_of(run_id))
        other = start_detached(daemon, workspace)  # "from a terminal"
        lines += b.until(_terminal_of(other))
        for rid in (run_id, other):
            seqs = [e["run_seq"] for e in _run_events(lines, rid)]
            assert seqs == list(range(1, len(seqs) + 1))
            wait_result(workspace, rid)  # the daemon's log may be flushed after the publish
            assert seqs == [e["run_seq"] for e in events_on_disk(workspace, rid)]
            assert _run_events(lines, rid)[-1]["data"]["state"] == "completed"
        assert b.close() == 0
    finally:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def test_watch_survives_a_daemon_crash(daemon_factory: Any) -> None:
    """SIGKILL the daemon mid-run: the bridge says the daemon went away, answers requests
    with DAEMON_UNAVAILABLE meanwhile, says when it is back (a new pid); the run went on
    under its monitor, and a cancel through the new daemon ends it, every event shown
    once and in order across the restart."""
    daemon = daemon_factory(RF_TEST_MODE="graceful", RF_TEST_STEPS="10000", RF_TEST_STEP_S="0.2")
    daemon.start()
    workspace = trainer_workspace(daemon)
    b = Bridge(daemon)
    try:
        b.send({"type": "watch", "workspace": str(workspace), "id": "w"})
        lines = b.until(lambda out: out.get("id") == "w")
        b.send({"type": "train", "workspace": str(workspace), "id": "t", "grace_s": 2})
        lines += b.until(lambda out: out.get("id") == "t")
        run_id = lines[-1]["result"]["run"]["run_id"]
        lines += b.until(
            lambda out: (
                out.get("event", {}).get("type") == "train_progress"
                and out["event"]["run_id"] == run_id
            )
        )
        wait_for((run_dir(workspace, run_id) / "trainer.pid").exists, timeout=60)
        old_pid = daemon.proc.pid if daemon.proc else 0
        daemon.kill_hard()
        lines += b.until(lambda out: out.get("notify") == "daemon_lost")
        b.send({"type": "ping", "id": "while-away"})
        lines += b.until(lambda out: out.get("id") == "while-away")
        assert lines[-1]["error"]["code"] == "DAEMON_UNAVAILABLE"
        daemon.start()
        lines += b.until(lambda out: out.get("notify") == "daemon_back")
        back = lines[-1]["data"]
        assert back["restarted"] is True and back["previous_pid"] == old_pid
        assert not any(_terminal_of(run_id)(out) for out in lines)  # the run goes on
        b.send({"type": "cancel", "workspace": str(workspace), "run_id": run_id, "id": "c"})
        lines += b.until(lambda out: out.get("id") == "c")
        assert lines[-1]["ok"] is True, lines[-1]
        if not any(_terminal_of(run_id)(out) for out in lines):
            lines += b.until(_terminal_of(run_id))
        events = _run_events(lines, run_id)
        # Each event once, in order, run_terminal last: events are on disk before they are
        # published, so the next daemon never reuses a run_seq already shown.
        seqs = [e["run_seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [e["type"] for e in events].count("run_terminal") == 1
        assert events[-1]["type"] == "run_terminal"
        assert events[-1]["data"]["state"] in ("cancelled_graceful", "cancelled_forced")
        b.send({"type": "ping", "id": "after"})
        assert b.reply("after")["ok"] is True
        assert b.close() == 0
    finally:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()
