"""Handlers of the daemon's own requests: hello, ping, status, shutdown."""

from __future__ import annotations

import asyncio
import functools

from runforge_protocol.messages import (
    PROTOCOL_VERSION,
    Hello,
    HelloResult,
    Ping,
    Shutdown,
    ShutdownResult,
    Status,
    StatusResult,
)
from runforged import __version__
from runforged.server import Daemon, handles


def _hello(daemon: Daemon) -> HelloResult:
    return HelloResult(
        protocol=PROTOCOL_VERSION,
        daemon_version=__version__,
        pid=daemon.pid,
        uptime_s=daemon.uptime(),
    )


@handles(Hello, while_stopping=True)
def hello(daemon: Daemon, request: Hello) -> HelloResult:
    return _hello(daemon)


@handles(Ping, while_stopping=True)
def ping(daemon: Daemon, request: Ping) -> HelloResult:
    return _hello(daemon)


@handles(Status, while_stopping=True)
async def status(daemon: Daemon, request: Status) -> StatusResult:
    services = daemon.services
    workspace = None
    if request.workspace is not None and services is not None:
        workspace = await services.workspace_status(request.workspace)
    return StatusResult(
        protocol=PROTOCOL_VERSION,
        daemon_version=__version__,
        pid=daemon.pid,
        uptime_s=daemon.uptime(),
        runtime_dir=str(daemon.endpoints.runtime_dir),
        control_endpoint=daemon.endpoints.control,
        events_endpoint=daemon.endpoints.events,
        stopping=daemon.stopping,
        counters=daemon.counters,
        active_runs=services.active_count() if services is not None else 0,
        queued_runs=services.queued_count() if services is not None else 0,
        subscriptions=daemon.subscriptions,
        workspace=workspace,
    )


@handles(Shutdown, while_stopping=True)
def shutdown(daemon: Daemon, request: Shutdown) -> ShutdownResult:
    in_flight = daemon.services.in_flight_ids() if daemon.services is not None else []
    # Answer first; the stop begins on the next loop iteration.
    asyncio.get_running_loop().call_soon(
        functools.partial(daemon.request_stop, keep_runs=request.keep_runs)
    )
    if request.keep_runs or daemon.keep_runs:
        return ShutdownResult(kept_runs=in_flight, pid=daemon.pid)
    return ShutdownResult(cancelling_runs=in_flight, pid=daemon.pid)
