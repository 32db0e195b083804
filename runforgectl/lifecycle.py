"""The daemon's life cycle seen from the client: is one answering, start one in the
background, wait for one to go, write the systemd user unit."""

from __future__ import annotations

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


def start_detached(endpoints: Endpoints, timeout_s: float) -> None:
    """Run ``runforged --detach``, which returns once the daemon answers."""
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


def unit_dir() -> Path:
    return (
        Path(os.environ.get("XDG_CONFIG_HOME", str(Path.home() / ".config"))) / "systemd" / "user"
    )


def render_unit(runforged: str) -> str:
    from runforgectl.service import UNIT_TEMPLATE

    return UNIT_TEMPLATE.replace("@RUNFORGED@", runforged)
