"""Assembles the daemon: sockets and handlers, plus the services behind the requests."""

from __future__ import annotations

import runforged.handlers  # noqa: F401 - registers every request handler
from protocol.discovery import Endpoints
from runforged.server import Daemon


def build_daemon(endpoints: Endpoints) -> Daemon:
    return Daemon(endpoints)
