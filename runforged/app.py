"""Assembles the daemon: sockets and handlers, plus the services behind the requests."""

from __future__ import annotations

import runforged.handlers  # noqa: F401 - registers every request handler
from runforge_protocol.discovery import Endpoints
from runforged.server import Daemon
from runforged.services import Services


def open_daemon(endpoints: Endpoints) -> Daemon:
    """Take the runtime directory, bind the sockets, and attach the services.
    Raises RuntimeDirError when the runtime directory cannot be used."""
    daemon = Daemon(endpoints)
    daemon.open()
    try:
        daemon.services = Services(daemon)
    except BaseException:
        daemon.close()
        raise
    return daemon
