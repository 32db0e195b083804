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

from tests.harness import DaemonProcess


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
    garbage = bridge.read()
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
