"""Assembles the daemon: sockets, the context behind the requests, and the dispatch."""

from __future__ import annotations

from runforge_protocol.discovery import Endpoints
from runforged.context import DaemonContext
from runforged.dispatch import Dispatcher
from runforged.server import Daemon


def open_daemon(endpoints: Endpoints) -> Daemon:
    """Take the runtime directory, bind the sockets, and attach the context and dispatch.
    Raises RuntimeDirError when the runtime directory cannot be used."""
    daemon = Daemon(endpoints)
    daemon.open()
    try:
        daemon.attach(Dispatcher(DaemonContext(daemon)))
    except BaseException:
        daemon.close()
        raise
    return daemon
