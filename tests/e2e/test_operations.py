"""Operating runforged (issue 10): NO_COLOR, syslog priorities for journald, where the
detached daemon logs, `daemon start` without a reachable systemd, `install-service` and
lingering, and the size cap on settings files. Real daemons, real files, a real pty."""

from __future__ import annotations

import json
import os
import pty
import pwd
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import error_of, write_settings
from tests.harness import DaemonProcess, wait_for


def foreground_daemon(daemon: DaemonProcess, stderr: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runforged", *env.pop("ARGS", "").split()],
        stdin=subprocess.DEVNULL,
        stdout=stderr,
        stderr=stderr,
        env={**daemon.env, **env},
        cwd=daemon.root,
    )


def stop(daemon: DaemonProcess, proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def console_log_on_a_tty(daemon: DaemonProcess, **env: str) -> str:
    master, slave = pty.openpty()
    proc = foreground_daemon(daemon, slave, ARGS="--log-format console", **env)
    os.close(slave)
    out = b""
    try:
        wait_for(lambda: daemon.ctl("ping", timeout=10).returncode == 0, timeout=60)
        stop(daemon, proc)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    return out.decode(errors="replace")


def test_console_logs_are_coloured_on_a_terminal_unless_no_color_is_set(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    coloured = console_log_on_a_tty(daemon)
    assert "\x1b[" in coloured
    plain = console_log_on_a_tty(daemon, NO_COLOR="1")
    assert "daemon" in plain.lower() and "\x1b[" not in plain


def test_under_journald_every_line_carries_its_syslog_priority(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    log = daemon.root / "journal.log"
    with open(log, "wb") as stream:
        st = os.fstat(stream.fileno())
        proc = foreground_daemon(
            daemon,
            stream.fileno(),
            ARGS="--log-format json",
            JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}",
        )
    wait_for(lambda: daemon.ctl("ping", timeout=10).returncode == 0, timeout=60)
    workspace = daemon.root / "ws"
    (workspace / ".ml" / "outputs").mkdir(parents=True)
    (workspace / ".ml" / "outputs" / "index.json").write_text("{ corrupt")
    daemon.ctl("runs", "-w", str(workspace), check=True)
    stop(daemon, proc)
    lines = [line for line in log.read_text().splitlines() if line]
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>", "<2>") for line in lines)
    records = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert records["index_corrupt_moved_aside"] == "<4>"
    assert "<6>" in records.values()
    # A stream that is not the one JOURNAL_STREAM names gets no prefixes.
    other = daemon.root / "plain.log"
    with open(other, "wb") as stream:
        proc = foreground_daemon(
            daemon, stream.fileno(), ARGS="--log-format json", JOURNAL_STREAM="1:2"
        )
    wait_for(lambda: daemon.ctl("ping", timeout=10).returncode == 0, timeout=60)
    stop(daemon, proc)
    assert all(line.startswith("{") for line in other.read_text().splitlines() if line)


def test_a_detached_daemon_logs_into_the_state_directory_not_the_runtime_directory(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory()
    state_home = daemon.root / "state-home"
    env = {k: v for k, v in daemon.env.items() if k != "RUNFORGE_STATE_DIR"}
    env["XDG_STATE_HOME"] = str(state_home)
    # The systemd unit lives in XDG_CONFIG_HOME; no user manager answers here, so
    # `daemon start` detaches (and says where the log is).
    env["XDG_CONFIG_HOME"] = str(daemon.root / "xdg-config")
    install = subprocess.run(
        [sys.executable, "-m", "runforgectl", "daemon", "install-service"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert install.returncode == 0, install.stderr
    started = subprocess.run(
        [sys.executable, "-m", "runforgectl", "daemon", "start"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert started.returncode == 0, started.stderr
    log = state_home / "runforge" / "runforged.log"
    assert f"detached: log: {log}" in started.stdout
    stopped = subprocess.run(
        [sys.executable, "-m", "runforgectl", "daemon", "stop"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert log.is_file() and "daemon_" in log.read_text()
    assert not (daemon.runtime_dir / "runforged.log").exists()
    assert oct(state_home.joinpath("runforge").stat().st_mode & 0o777) == "0o700"


def test_install_service_writes_the_unit_atomically_and_warns_without_lingering(
    daemon: DaemonProcess,
) -> None:
    target = daemon.root / "units" / "runforged.service"
    target.parent.mkdir()
    target.write_text("old unit\n")
    result = daemon.ctl("daemon", "install-service", "--dest", str(target), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert target.read_text().startswith("[Unit]")
    assert sorted(p.name for p in target.parent.iterdir()) == ["runforged.service"]
    user = pwd.getpwuid(os.getuid()).pw_name
    if document["linger"] is True:
        assert "enable-linger" not in result.stderr
    else:
        assert f"loginctl enable-linger {user}" in result.stderr
        assert "log out" in result.stderr and "training run" in result.stderr


def test_a_settings_file_over_the_size_cap_is_refused_naming_it(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    from runforged.settings import MAX_SETTINGS_FILE_BYTES

    path = write_settings(sample_workspace, "{}")
    with open(path, "w") as handle:
        handle.write('{"other.setting": "')
        handle.write("x" * MAX_SETTINGS_FILE_BYTES)
        handle.write('"}')
    error = error_of(daemon.ctl("settings", "-w", str(sample_workspace), "--json"))
    assert error["code"] == "SETTINGS_INVALID"
    assert str(path) in error["message"] and "larger than" in error["message"]
    assert daemon.ctl("ping").returncode == 0


def test_ping_is_answered_while_a_large_settings_file_is_being_parsed(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    """Settings files are parsed off the event loop: a ping sent after a `settings` request
    for a workspace with a ~1.5 MiB settings.json is answered first."""
    import threading

    from runforge_protocol import messages as m
    from runforge_protocol.discovery import Endpoints
    from runforgectl.client import Client

    path = write_settings(sample_workspace, "{}")
    body = ",\n".join(f'  "other.extension.key{i}": [1, 2.5, "x", null]' for i in range(30_000))
    path.write_text('{\n  "runforge.profile": "fast",\n' + body + "\n}\n")
    endpoints = Endpoints.resolve(daemon.runtime_dir)
    answered: list[str] = []
    sent = threading.Event()

    def read_settings() -> None:
        with Client(endpoints, timeout_s=300) as client:
            sent.set()
            result = client.result(m.GetSettings(workspace=str(sample_workspace)))
            assert isinstance(result, m.SettingsResult)
            answered.append("settings")

    reader = threading.Thread(target=read_settings)
    reader.start()
    sent.wait()
    time.sleep(0.2)  # the settings request is on its way; its parse takes seconds
    with Client(endpoints, timeout_s=300) as client:
        client.result(m.Ping())
        answered.append("ping")
    reader.join()
    assert answered == ["ping", "settings"]


def test_a_fifo_planted_as_the_settings_file_is_refused_without_hanging(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    path = sample_workspace / ".vscode" / "settings.json"
    path.unlink()
    os.mkfifo(path)
    error = error_of(daemon.ctl("settings", "-w", str(sample_workspace), "--json"))
    assert error["code"] == "SETTINGS_INVALID" and "not a regular file" in error["message"]
    assert daemon.ctl("ping").returncode == 0
