"""systemd's notify protocol (READY, STOPPING, WATCHDOG) over its datagram socket."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

RESTART_JOB_TYPES = frozenset({"restart", "try-restart", "reload-or-restart"})


class SystemdNotifier:
    """Sends ``sd_notify`` messages when ``$NOTIFY_SOCKET`` is set; a no-op otherwise.

    Plain socket code: the protocol is one datagram of ``KEY=VALUE`` lines to a Unix socket
    (a leading ``@`` names an abstract socket), which is not worth a dependency.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        self.watchdog_interval_s = _watchdog_interval(env)

    def notify(self, *lines: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self._address)
            except OSError:
                # systemd went away (or the socket is wrong): nothing useful to do.
                return

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half the watchdog timeout systemd asked for, or None when it asked for none."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        timeout_s = int(usec) / 1_000_000
    except ValueError:
        return None
    return timeout_s / 2 if timeout_s > 0 else None


def own_unit(cgroup_file: Path = Path("/proc/self/cgroup")) -> str | None:
    """The systemd unit this process runs in (``runforged.service``), read from its
    cgroup path; None outside a service."""
    try:
        text = cgroup_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        for part in reversed(line.rpartition(":")[2].split("/")):
            if part.endswith(".service"):
                return part
    return None


def restart_job_pending(unit: str, list_jobs_output: str) -> bool:
    """Whether ``systemctl --user list-jobs --no-legend`` output (``JOB UNIT TYPE STATE``
    per line) shows a restart of ``unit`` in progress: systemd keeps a restart job's type
    while it stops the service, before it starts it again."""
    for line in list_jobs_output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == unit and fields[2] in RESTART_JOB_TYPES:
            return True
    return False


def stopped_for_restart(environ: dict[str, str] | None = None) -> bool:
    """Under systemd (``$INVOCATION_ID`` set): whether the SIGTERM we got is the stop half
    of a restart of our unit. False outside systemd or when systemctl cannot tell."""
    env = os.environ if environ is None else environ
    if not env.get("INVOCATION_ID"):
        return False
    unit = own_unit()
    if unit is None:
        return False
    try:
        listing = subprocess.run(
            ["systemctl", "--user", "list-jobs", "--no-legend"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return restart_job_pending(unit, listing.stdout)
