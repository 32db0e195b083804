"""systemd's notify protocol (READY, STOPPING, WATCHDOG) over its datagram socket."""

from __future__ import annotations

import os
import socket


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
