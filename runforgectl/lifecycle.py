"""The daemon's life cycle seen from the client: is one answering, start one in the
background, wait for one to go, find the systemd unit running it, write the systemd user
unit."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforgectl.client import Client, DaemonError, DaemonUnavailable

SERVICE_NAME = "runforged.service"


def running_pid(endpoints: Endpoints) -> int | None:
    """The pid of the daemon answering on this runtime directory, if one does."""
    try:
        with Client(endpoints, timeout_s=2) as probe:
            reply = probe.result(m.Hello(client="runforgectl"))
    except (DaemonUnavailable, DaemonError):
        return None
    return reply.pid if isinstance(reply, m.HelloResult) else None


def start_detached(endpoints: Endpoints, timeout_s: float) -> str:
    """Run ``runforged --detach``, which returns once the daemon answers; returns what it
    said (``runforged: started (log: PATH)``)."""
    import subprocess

    proc = subprocess.run(
        [*runforged_command(), "--runtime-dir", str(endpoints.runtime_dir), "--detach"],
        capture_output=True,
        text=True,
        timeout=max(timeout_s, 30),
    )
    if proc.returncode != 0:
        raise DaemonUnavailable(
            f"could not start runforged: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout.strip()


def runforged_command() -> list[str]:
    # Prefer the interpreter we run under: the same installation as this client.
    return [sys.executable, "-m", "runforged"]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # The state follows the parenthesised command name, which may contain spaces.
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Stopped means the process is gone (its socket files go just before it exits)."""
    import time

    deadline = time.monotonic() + timeout_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not process_alive(pid)


def systemd_unit_of(pid: int) -> str | None:
    """The systemd service running ``pid`` (from its cgroup), or None."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    for line in text.splitlines():
        name = line.rpartition("/")[2]
        if name.endswith(".service") and not name.startswith("user@"):
            return name
    return None


def unit_dir() -> Path:
    return (
        Path(os.environ.get("XDG_CONFIG_HOME", str(Path.home() / ".config"))) / "systemd" / "user"
    )


def render_unit(runforged: str) -> str:
    from runforgectl.service import UNIT_TEMPLATE

    return UNIT_TEMPLATE.replace("@RUNFORGED@", runforged)


# ---------------------------------------------------------------------- systemd


def systemd_unit_runtime_dir() -> Path | None:
    """The runtime directory the installed unit's daemon uses: the default one of the
    user manager's environment (``$XDG_RUNTIME_DIR/runforge``)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    return Path(xdg) / "runforge" if xdg and os.path.isabs(xdg) else None


def systemd_unit_loaded() -> bool:
    """Whether a systemd user manager answers and knows ``runforged.service`` (installed
    with ``daemon install-service``)."""
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    try:
        probe = subprocess.run(
            [systemctl, "--user", "show", "--property=LoadState", "--value", SERVICE_NAME],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.strip() == "loaded"


def start(endpoints: Endpoints, timeout_s: float) -> str:
    """Start the daemon for ``endpoints``: through systemd when its user unit is installed
    and serves this runtime directory (logs then go to journald and ``Restart=`` applies),
    else detached. Returns how it started and where the logs go, for people."""
    unit_dir_ = systemd_unit_runtime_dir()
    if unit_dir_ is not None and unit_dir_ == endpoints.runtime_dir and systemd_unit_loaded():
        import subprocess
        import time

        started = subprocess.run(
            ["systemctl", "--user", "start", SERVICE_NAME],
            capture_output=True,
            text=True,
            timeout=max(timeout_s, 90),
        )
        if started.returncode != 0:
            raise DaemonUnavailable(
                f"systemctl --user start {SERVICE_NAME} failed: {started.stderr.strip()} "
                f"(see: journalctl --user -u runforged)"
            )
        # Type=notify: start returns once READY=1 was sent; allow for a slow socket file.
        deadline = time.monotonic() + max(timeout_s, 30)
        while running_pid(endpoints) is None:
            if time.monotonic() > deadline:
                raise DaemonUnavailable(
                    f"{SERVICE_NAME} started but runforged does not answer on "
                    f"{endpoints.control_path} (see: journalctl --user -u runforged)"
                )
            time.sleep(0.1)
        return "systemd: logs: journalctl --user -u runforged"
    said = start_detached(endpoints, timeout_s)
    log = said.partition("(log: ")[2].rstrip(")")
    return f"detached: log: {log}" if log else "detached"


def lingering(user: str) -> bool | None:
    """Whether systemd keeps ``user``'s services running after their last logout (None:
    cannot tell, e.g. no systemd-logind)."""
    import shutil
    import subprocess

    linger_dir = Path("/var/lib/systemd/linger")
    if (linger_dir / user).exists():
        return True
    loginctl = shutil.which("loginctl")
    if loginctl is not None:
        try:
            shown = subprocess.run(
                [loginctl, "show-user", user, "--property=Linger", "--value"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            shown = None
        if shown is not None and shown.returncode == 0 and shown.stdout.strip() in ("yes", "no"):
            return shown.stdout.strip() == "yes"
    return False if linger_dir.is_dir() else None


def write_atomically(target: Path, text: str) -> None:
    """``text`` into ``target`` in one step: a reader (systemd) sees the old file or the
    whole new one, never a part."""
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
