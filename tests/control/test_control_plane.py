"""The control plane as a user and a peer see it: start, reach, query, stop, survive."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import zmq

from runforge_protocol import messages as m
from runforge_protocol.errors import ErrorCode
from tests.harness import DaemonProcess, alive, wait_for


def raw_request(daemon: DaemonProcess, frames: list[bytes], timeout_ms: int = 5000) -> m.Reply:
    """Send raw frames on a DEALER socket and decode the single reply frame."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{daemon.runtime_dir}/control.sock")
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), "no reply from the daemon"
        reply_frames = sock.recv_multipart()
        # A lone empty frame reads as a REQ delimiter: the reply then carries one back.
        assert len(reply_frames) == 1 or reply_frames[:-1] == [b""]
        return m.reply_decoder.decode(reply_frames[-1])
    finally:
        sock.close()
        ctx.term()


def assert_still_serving(daemon: DaemonProcess) -> None:
    reply = raw_request(daemon, [m.encode(m.Ping(id="after"))])
    assert reply.ok and reply.id == "after"


def test_start_ping_status_stop_through_runforgectl(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    started = daemon.ctl("daemon", "start", check=True)
    assert "started" in started.stdout
    ping = daemon.ctl_json("ping")
    assert ping["type"] == "hello" and ping["protocol"] == m.PROTOCOL_VERSION
    status = daemon.ctl_json("status")
    assert status["runtime_dir"] == str(daemon.runtime_dir)
    assert status["stopping"] is False
    human = daemon.ctl("status", check=True).stdout
    assert "serving" in human and str(daemon.runtime_dir) in human
    stopped = daemon.ctl("daemon", "stop", check=True)
    assert "stopped" in stopped.stdout
    wait_for(lambda: not (daemon.runtime_dir / "control.sock").exists())
    assert not alive(ping["pid"])
    daemon.assert_clean_runtime_dir()


def test_sigterm_stops_cleanly_and_removes_sockets_and_lock(daemon: DaemonProcess) -> None:
    assert (daemon.runtime_dir / "control.sock").exists()
    assert daemon.stop() == 0
    daemon.assert_clean_runtime_dir()
    names = [e.get("event") for e in daemon.log_events()]
    assert (
        names.index("daemon_ready") < names.index("daemon_stopping") < names.index("daemon_stopped")
    )


def test_runtime_dir_and_sockets_are_private(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.runtime_dir.stat().st_mode) == 0o700
    for name in ("control.sock", "events.sock"):
        mode = stat.S_IMODE((daemon.runtime_dir / name).stat().st_mode)
        assert mode & 0o077 == 0, f"{name} has mode {mode:o}"


def test_refuses_runtime_dir_accessible_to_others(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    daemon.runtime_dir.mkdir(mode=0o755)
    os.chmod(daemon.runtime_dir, 0o755)
    daemon.start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 1
    assert "must not be accessible to group or others" in daemon.log()
    assert "chmod 700" in daemon.log()


def test_refuses_runtime_dir_owned_by_someone_else(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by another user")
    daemon = daemon_factory()
    daemon.runtime_dir.mkdir(mode=0o700)
    os.chown(daemon.runtime_dir, 65534, 65534)
    daemon.start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 1
    assert "not by you" in daemon.log()


def test_second_daemon_on_same_runtime_dir_is_refused_and_first_keeps_serving(
    daemon: DaemonProcess,
) -> None:
    second = DaemonProcess(root=daemon.root)
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(timeout=30) == 1
    assert "already owns" in second.log()
    assert daemon.ctl("ping").returncode == 0
    assert (daemon.runtime_dir / "control.sock").exists()


def test_stale_lock_and_sockets_of_a_crashed_daemon_are_recovered(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory().start()
    daemon.kill_hard()  # SIGKILL: socket files and lock file stay behind
    assert (daemon.runtime_dir / "control.sock").exists()
    assert daemon.ctl("ping", "--timeout", "1").returncode == 3
    daemon.start()
    assert daemon.ctl("ping").returncode == 0


def test_detach_returns_once_ready(daemon_factory: Callable[..., DaemonProcess]) -> None:
    daemon = daemon_factory()
    result = subprocess.run(
        [sys.executable, "-m", "runforged", "--detach"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert daemon.ctl("ping").returncode == 0  # answers at once: no waiting needed
    assert daemon.ctl("daemon", "stop").returncode == 0
    daemon.assert_clean_runtime_dir()


def test_client_without_daemon_exits_3_with_one_clear_line(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    for args in (["ping"], ["status"], ["runs"], ["events"]):
        result = daemon.ctl(*args)
        assert result.returncode == 3
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "not running" in lines[0] and "runforgectl daemon start" in lines[0]
        assert str(daemon.runtime_dir / "control.sock") in lines[0]


def test_client_timeout_when_daemon_does_not_answer(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        result = daemon.ctl("--timeout", "0.5", "ping", timeout=30)
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert result.returncode == 3
    assert "did not answer within 0.5 s" in result.stderr


def test_usage_error_exits_2(daemon: DaemonProcess) -> None:
    assert daemon.ctl("no-such-command").returncode == 2
    assert daemon.ctl("train", "--seed", "notanumber").returncode == 2


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([b"\xc1garbage"], ErrorCode.BAD_REQUEST, id="undecodable"),
        pytest.param([b"not msgpack at all"], ErrorCode.BAD_REQUEST, id="text"),
        pytest.param(
            [msgspec.msgpack.encode({"type": "explode", "id": "x"})],
            ErrorCode.UNKNOWN_REQUEST,
            id="unknown-tag",
        ),
        pytest.param(
            [msgspec.msgpack.encode({"id": "x"})], ErrorCode.BAD_REQUEST, id="missing-tag"
        ),
        pytest.param(
            [msgspec.msgpack.encode({"type": "trust", "id": "x"})],
            ErrorCode.BAD_REQUEST,
            id="missing-field",
        ),
        pytest.param(
            [msgspec.msgpack.encode({"type": "trust", "id": "x", "path": 42})],
            ErrorCode.BAD_REQUEST,
            id="wrong-type",
        ),
        pytest.param(
            [msgspec.msgpack.encode({"type": "ping", "id": 7})],
            ErrorCode.BAD_REQUEST,
            id="wrong-id-type",
        ),
        pytest.param([msgspec.msgpack.encode([1, 2, 3])], ErrorCode.BAD_REQUEST, id="array"),
        pytest.param([b""], ErrorCode.BAD_REQUEST, id="empty-frame"),
        pytest.param([b"a", b"b", b"c"], ErrorCode.BAD_REQUEST, id="three-frames"),
        pytest.param(
            [b"", m.encode(m.Ping(id="x")), b"extra"],
            ErrorCode.BAD_REQUEST,
            id="delimiter-and-two-frames",
        ),
        pytest.param(
            [msgspec.msgpack.encode({"type": "ping", "id": "x", "protocol": 999})],
            ErrorCode.PROTOCOL_MISMATCH,
            id="protocol-mismatch",
        ),
        pytest.param(
            [b"\x00" * (m.MAX_MESSAGE_BYTES + 1)], ErrorCode.MESSAGE_TOO_LARGE, id="oversized"
        ),
    ],
)
def test_bad_input_gets_structured_error_and_daemon_keeps_serving(
    daemon: DaemonProcess, frames: list[bytes], code: ErrorCode
) -> None:
    reply = raw_request(daemon, frames)
    assert not reply.ok and reply.error is not None
    assert reply.error.code == code
    assert reply.error.message
    assert_still_serving(daemon)


def test_bad_request_echoes_the_id_when_it_can(daemon: DaemonProcess) -> None:
    reply = raw_request(daemon, [msgspec.msgpack.encode({"type": "trust", "id": "abc"})])
    assert reply.id == "abc"
    assert reply.error is not None and "path" in reply.error.message


def test_frames_beyond_the_hard_limit_are_dropped_and_the_daemon_keeps_serving(
    daemon: DaemonProcess,
) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{daemon.runtime_dir}/control.sock")
        sock.send(b"\x00" * (m.HARD_MAX_MESSAGE_BYTES + 1))
        # libzmq cuts the connection; no reply can come.
        assert sock.poll(1000) == 0
    finally:
        sock.close()
        ctx.term()
    assert_still_serving(daemon)


def test_req_socket_peers_are_answered_too(daemon: DaemonProcess) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{daemon.runtime_dir}/control.sock")
        sock.send(m.encode(m.Hello(id="req-1", client="test")))
        assert sock.poll(5000)
        reply = m.reply_decoder.decode(sock.recv())
    finally:
        sock.close()
        ctx.term()
    assert reply.ok and reply.id == "req-1"


def test_many_bad_messages_then_status_counts_them(daemon: DaemonProcess) -> None:
    for _ in range(20):
        raw_request(daemon, [b"\xc1"])
    status = daemon.ctl_json("status")
    assert status["counters"]["errors"] >= 20
    assert status["counters"]["requests"] >= 20


def test_events_stream_shows_daemon_stopping(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    watcher = subprocess.Popen(
        [sys.executable, "-m", "runforgectl", "events", "--json"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: daemon.ctl_json("status")["subscriptions"] >= 1)
        daemon.stop()
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    stopping = [e for e in events if e["type"] == "daemon_stopping"]
    assert stopping, f"no daemon_stopping event in {events} ({err})"
    assert stopping[0]["seq"] >= 1 and stopping[0]["run_seq"] == 0


def test_json_logs_when_not_on_a_terminal(daemon: DaemonProcess) -> None:
    daemon.ctl("ping", check=True)
    daemon.stop()
    records = daemon.log_events()
    assert any(r.get("event") == "daemon_ready" and r.get("level") == "info" for r in records)


def test_systemd_notify_ready_watchdog_stopping(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    notify_path = daemon.root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(30)
    try:
        daemon.extra_env.update({"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"})
        daemon.start()
        messages: list[str] = []

        def received(text: str) -> bool:
            while not any(text in msg for msg in messages):
                messages.append(sock.recv(4096).decode())
            return True

        received("READY=1")
        while sum("WATCHDOG=1" in msg for msg in messages) < 3:  # keeps pinging
            messages.append(sock.recv(4096).decode())
        daemon.stop()
        received("STOPPING=1")
        assert messages.index(next(x for x in messages if "READY=1" in x)) < messages.index(
            next(x for x in messages if "STOPPING=1" in x)
        )
    finally:
        sock.close()


def test_install_service_writes_a_unit_that_systemd_accepts(daemon: DaemonProcess) -> None:
    target = daemon.root / "units" / "runforged.service"
    result = daemon.ctl_json("daemon", "install-service", "--dest", str(target))
    text = target.read_text()
    assert f"ExecStart={result['exec']} " in text
    assert os.path.isabs(result["exec"])
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "TimeoutStopSec=90"):
        assert line in text
    analyze = "/usr/bin/systemd-analyze"
    if not Path(analyze).exists():
        pytest.skip("systemd-analyze is not installed (.ci/run installs it)")
    verify = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr


def test_committed_unit_matches_the_installed_template() -> None:
    from runforgectl.lifecycle import render_unit

    committed = (Path(__file__).resolve().parents[2] / "systemd" / "runforged.service").read_text()
    assert committed == render_unit("%h/.local/bin/runforged")


def test_stop_timeout_exceeds_default_cancel_grace() -> None:
    from runforgectl.service import UNIT_TEMPLATE

    stop_timeout = int(
        next(
            line for line in UNIT_TEMPLATE.splitlines() if line.startswith("TimeoutStopSec=")
        ).split("=")[1]
    )
    assert stop_timeout > 5 + 5


def test_runforgectl_does_not_import_daemon_code_or_structlog() -> None:
    code = (
        "import sys, runforgectl.cli, runforgectl.parser as p; p.build_parser(); "
        "banned = ('runforged', 'structlog', 'psutil'); "
        "bad = [n for n in sys.modules if n.split('.')[0] in banned]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_daemon_never_imports_the_trainer_packages() -> None:
    # It runs them: a --param is checked against runforge_contract.params, and the
    # packages a trainer or a Ray job gets are found without importing them.
    code = (
        "import sys, pkgutil, runforged; "
        "[__import__(m.name) for m in pkgutil.iter_modules(runforged.__path__, 'runforged.') "
        "if m.name != 'runforged.__main__']; "
        "from runforged.ray_executor import shipped_packages; shipped_packages(); "
        "banned = ('runforge_runner', 'runforge_rayjob'); "
        "print(','.join(n for n in sys.modules if n.split('.')[0] in banned))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_ping_round_trip_is_answered_with_increasing_uptime(daemon: DaemonProcess) -> None:
    first = daemon.ctl_json("ping")["uptime_s"]
    time.sleep(0.05)
    assert daemon.ctl_json("ping")["uptime_s"] > first


def test_start_flag_starts_the_daemon_for_interactive_use(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    result = daemon.ctl("--start", "status", "--json")
    assert result.returncode == 0, result.stderr
    assert "started runforged" in result.stderr
    assert json.loads(result.stdout)["runtime_dir"] == str(daemon.runtime_dir)
    again = daemon.ctl("--start", "ping")
    assert again.returncode == 0 and "started" not in again.stderr
    assert daemon.ctl("daemon", "stop").returncode == 0
    daemon.assert_clean_runtime_dir()


def test_every_command_is_known_to_the_fast_parser() -> None:
    """runforgectl builds only the named command's parser; the list it checks must be the
    full parser's list of commands, or a command would silently lose its options."""
    import argparse

    from runforgectl.commands import BY_NAME
    from runforgectl.parser import build_parser, requested_command

    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(BY_NAME)
    assert requested_command(["--timeout", "3", "train", "--seed", "1"]) == "train"
    assert requested_command(["--json", "nosuch"]) is None
    for name in BY_NAME:
        only = build_parser(name)
        sub = next(a for a in only._actions if isinstance(a, argparse._SubParsersAction))
        assert list(sub.choices) == [name]
