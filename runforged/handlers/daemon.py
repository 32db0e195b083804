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
from runforged.context import DaemonContext


def _hello(ctx: DaemonContext) -> HelloResult:
    return HelloResult(
        protocol=PROTOCOL_VERSION,
        daemon_version=__version__,
        pid=ctx.server.pid,
        uptime_s=ctx.server.uptime(),
    )


def hello(ctx: DaemonContext, request: Hello) -> HelloResult:
    return _hello(ctx)


def ping(ctx: DaemonContext, request: Ping) -> HelloResult:
    return _hello(ctx)


async def status(ctx: DaemonContext, request: Status) -> StatusResult:
    server = ctx.server
    workspace = None
    if request.workspace is not None:
        workspace = await ctx.workspace_status(request.workspace)
    return StatusResult(
        protocol=PROTOCOL_VERSION,
        daemon_version=__version__,
        pid=server.pid,
        uptime_s=server.uptime(),
        runtime_dir=str(server.endpoints.runtime_dir),
        control_endpoint=server.endpoints.control,
        events_endpoint=server.endpoints.events,
        stopping=server.stopping,
        counters=server.counters,
        active_runs=ctx.supervisor.active_count(),
        queued_runs=ctx.supervisor.queued_count(),
        subscriptions=server.subscriptions,
        workspace=workspace,
    )


def shutdown(ctx: DaemonContext, request: Shutdown) -> ShutdownResult:
    in_flight = sorted(ctx.supervisor.in_flight_ids())
    # Answer first; the stop begins on the next loop iteration.
    asyncio.get_running_loop().call_soon(
        functools.partial(ctx.server.request_stop, keep_runs=request.keep_runs)
    )
    if request.keep_runs or ctx.server.keep_runs:
        return ShutdownResult(kept_runs=in_flight, pid=ctx.server.pid)
    return ShutdownResult(cancelling_runs=in_flight, pid=ctx.server.pid)
