"""Handlers of run requests: train, cancel, active, replay."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import OrderedDict

from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import (
    Active,
    ActiveResult,
    Cancel,
    CancelResult,
    Replay,
    ReplayResult,
    Train,
    TrainResult,
)
from runforge_protocol.records import RunState
from runforged import paths, run_folder
from runforged.context import DaemonContext
from runforged.errors import RunforgeError
from runforged.supervisor import LiveRun


class TrainRequestKeys:
    """The runs created for recent ``request_key`` values: a retried ``train`` (the client
    timed out, the script ran again) gets the run the first attempt created. Concurrent
    retries wait for the first attempt; a failed attempt forgets its key, so a retry may
    try again. The most recent ``LIMIT`` keys are kept."""

    LIMIT = 1000

    def __init__(self) -> None:
        self._runs: OrderedDict[tuple[str, str], asyncio.Future[LiveRun]] = OrderedDict()

    async def run_for(self, ctx: DaemonContext, request: Train) -> LiveRun:
        if not request.request_key:
            return await ctx.start_run(request)
        key = (request.workspace, request.request_key)
        known = self._runs.get(key)
        if known is not None:
            return await asyncio.shield(known)
        attempt: asyncio.Future[LiveRun] = asyncio.get_running_loop().create_future()
        self._runs[key] = attempt
        while len(self._runs) > self.LIMIT:
            self._runs.popitem(last=False)
        try:
            run = await ctx.start_run(request)
        except BaseException as exc:
            self._runs.pop(key, None)
            if isinstance(exc, Exception):
                attempt.set_exception(exc)
                attempt.exception()  # retrieved: no "never retrieved" warning
            else:
                attempt.cancel()
            raise
        attempt.set_result(run)
        return run


# One table of request keys per daemon context (a daemon has one context).
_request_keys: weakref.WeakKeyDictionary[DaemonContext, TrainRequestKeys] = (
    weakref.WeakKeyDictionary()
)


async def train(ctx: DaemonContext, request: Train) -> TrainResult:
    keys = _request_keys.setdefault(ctx, TrainRequestKeys())
    run = await keys.run_for(ctx, request)
    return TrainResult(run=ctx.supervisor.summary(run))


async def cancel(ctx: DaemonContext, request: Cancel) -> CancelResult:
    if request.grace_s is not None and not (
        math.isfinite(request.grace_s) and request.grace_s >= 0
    ):
        raise RunforgeError(
            ErrorCode.BAD_REQUEST,
            f"grace must be a number of seconds >= 0, got {request.grace_s!r}",
            "pass --grace 0 to kill at once, or a positive number of seconds",
        )
    supervisor = ctx.supervisor
    run = _run_to_cancel(ctx, request)
    already, deadline = await supervisor.cancel(run, request.grace_s)
    return CancelResult(
        run=supervisor.summary(run), already_cancelling=already, deadline_in_s=deadline
    )


def _run_to_cancel(ctx: DaemonContext, request: Cancel) -> LiveRun:
    supervisor = ctx.supervisor
    workspace = paths.validate_workspace(request.workspace) if request.workspace else None
    if request.run_id is None:
        if workspace is None:
            raise RunforgeError(
                ErrorCode.BAD_REQUEST,
                "cancel needs a run id or a workspace",
                "runforgectl cancel RUN_ID, or run it inside the workspace",
            )
        live = supervisor.live_runs(workspace)
        running = [r for r in live if r.state is not RunState.QUEUED]
        if not running:
            queued = [r.run_id for r in live]
            raise RunforgeError(
                ErrorCode.NO_ACTIVE_RUN,
                f"no active run in {workspace}"
                + (f" ({len(queued)} queued: name one to cancel it)" if queued else ""),
                "list runs with 'runforgectl active'",
                {"workspace": str(workspace), "queued": queued},
            )
        if len(running) > 1:
            ids = [r.run_id for r in running]
            raise RunforgeError(
                ErrorCode.AMBIGUOUS_ACTIVE_RUN,
                f"{len(ids)} runs are active in {workspace}: {', '.join(ids)}",
                "name the run to cancel: runforgectl cancel RUN_ID",
                {"workspace": str(workspace), "active": ids},
            )
        return running[0]
    run_id = paths.validate_run_id(request.run_id)
    run = supervisor.find_live(run_id)
    if run is not None and (workspace is None or run.workspace == workspace):
        return run
    finished = supervisor.find_recent(run_id)
    state: str | None = finished.state.value if finished is not None else None
    if state is None and workspace is not None:
        folder = paths.run_dir(workspace, run_id)
        result = run_folder.load_result(folder)
        if result is not None:
            state = result.state.value
        elif run_folder.exists(folder):
            state = "finished"
    if state is not None:
        raise RunforgeError(
            ErrorCode.RUN_NOT_ACTIVE,
            f"run {run_id} is not active: it already ended ({state})",
            f"see it with 'runforgectl show {run_id}'",
            {"run_id": run_id, "state": state},
        )
    raise RunforgeError(
        ErrorCode.RUN_NOT_FOUND,
        f"no run {run_id}" + (f" in {workspace}" if workspace else " is owned by this daemon"),
        "list runs with 'runforgectl active' or 'runforgectl runs'",
        {"run_id": run_id},
    )


def active(ctx: DaemonContext, request: Active) -> ActiveResult:
    supervisor = ctx.supervisor
    workspace = paths.validate_workspace(request.workspace) if request.workspace else None
    return ActiveResult(runs=[supervisor.summary(r) for r in supervisor.live_runs(workspace)])


async def replay(ctx: DaemonContext, request: Replay) -> ReplayResult:
    workspace = paths.validate_workspace(request.workspace)
    run_id = paths.validate_run_id(request.run_id)
    limit = max(1, min(request.limit, 100_000))
    supervisor = ctx.supervisor
    live = supervisor.flush_events(run_id)
    folder = paths.run_dir(workspace, run_id)
    if not run_folder.has_events(folder):
        if live is None and run_folder.exists(folder):
            # A run made without this daemon (e.g. by the RunForge extension): no events.
            return ReplayResult(run_id=run_id, events=[], last_run_seq=0, terminal=True)
        if live is None:
            raise RunforgeError(
                ErrorCode.RUN_NOT_FOUND,
                f"no run {run_id} in {workspace}",
                "list runs with 'runforgectl runs'",
                {"run_id": run_id, "workspace": str(workspace)},
            )
        return ReplayResult(run_id=run_id, events=[], last_run_seq=live.run_seq, terminal=False)
    events, last = await asyncio.to_thread(run_folder.read_events, folder, request.since, limit)
    if live is not None:
        return ReplayResult(
            run_id=run_id, events=events, last_run_seq=max(last, live.run_seq), terminal=False
        )
    return ReplayResult(run_id=run_id, events=events, last_run_seq=last, terminal=True)
