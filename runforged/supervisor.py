"""The run supervisor: it sequences each run, queue -> executor -> events -> outcome ->
index, and keeps the in-memory view of live runs (a cache of what is on disk).

It decides nothing itself and touches no process or file directly:

- the executor (``runforged.executor``) starts, signals, kills and reaps the trainer;
- the cancel policy (``runforged.cancel.CancelController``) decides when to signal;
- the outcome (``runforged.outcome``) decides the terminal state;
- the run folder (``runforged.run_folder``) is read and written through its module;
- the index is written by ``runforged.index_writer``;
- runs a crashed daemon left in flight are ``runforged.reconciliation``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import msgspec
import structlog

from runforge_contract import trainer_events as te
from runforge_contract.timestamps import parse_timestamp, utc_now
from runforge_protocol import events as ev
from runforge_protocol.messages import Counters, Event, RunSummary
from runforge_protocol.records import IndexStatus, RequestRecord, ResultRecord, RunState
from runforged import outcome, run_folder
from runforged.cancel import CancelController
from runforged.durable_state import CancelJournal, InflightRecord, InflightRecords
from runforged.errors import RunforgeError
from runforged.executor import Executor, TrainerHandle, TrainerSpec, drain
from runforged.index_writer import IndexWriters
from runforged.trainer_events import InvalidEventLine, parse_line
from runforged.trust import TrustedWorkspace

if TYPE_CHECKING:
    from runforged.ray_executor import RayPlacement

log = structlog.get_logger("runforged.supervisor")

TREE_REFRESH_S = 0.5
EVENTS_FLUSH_S = 0.2
MAX_LOG_LINE = 1 << 20  # longer stderr/stdout lines are cut here in logs.txt


class Publisher(Protocol):
    def stamp(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        workspace: str = "",
        run_id: str = "",
        run_seq: int = 0,
    ) -> Event: ...

    def send(self, topic: bytes, event: Event) -> None: ...


@dataclass(eq=False)
class LiveRun:
    """A run of this daemon, from submit to terminal."""

    run_id: str
    workspace: Path
    trusted: TrustedWorkspace | None  # None: adopted from a previous daemon, never spawned here
    request: RequestRecord
    argv: list[str]
    env: dict[str, str]
    grace_s: float
    max_concurrent: int = 1  # runs of this workspace at once (its setting)
    max_concurrent_global: int = 4
    executor: str = "local"  # the name of the executor that runs it
    placement: RayPlacement | None = None  # where it goes, for executor "ray"
    state: RunState = RunState.QUEUED
    run_seq: int = 0
    started_at: str | None = None
    started_mono: float | None = None
    handle: TrainerHandle | None = None
    controller: CancelController | None = None
    # Set at once when a cancel is asked (before the intent is durable and before the
    # controller, which may not exist yet, acts), so a second request sees it.
    cancel_requested: bool = False
    # What the trainer's events said, for the outcome.
    evidence: outcome.Evidence = field(default_factory=outcome.Evidence)
    result: ResultRecord | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    topic_prefix: bytes = b""
    events_file: IO[bytes] | None = None
    log_file: IO[bytes] | None = None
    inflight: InflightRecord | None = None

    @property
    def run_dir(self) -> Path:
        return self.workspace / run_folder.RUNS_DIR / self.run_id

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None else None


class RunSupervisor:
    def __init__(
        self,
        *,
        publisher: Publisher,
        counters: Counters,
        indexes: IndexWriters,
        state_dir: Path,
        executors: Mapping[str, Executor],
    ) -> None:
        self._publisher = publisher
        self._counters = counters
        self._indexes = indexes
        self._executors = executors
        self.inflight_records = InflightRecords(state_dir / "inflight")
        self.cancel_journal = CancelJournal(state_dir / "cancel-intents.log")
        self._queue: deque[LiveRun] = deque()
        self._active: dict[str, LiveRun] = {}  # spawned, not yet terminal
        self._recent: dict[str, LiveRun] = {}  # terminal runs of this daemon, by id
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True

    # ------------------------------------------------------------------ queries

    def live_runs(self, workspace: Path | None = None) -> list[LiveRun]:
        runs = list(self._active.values()) + list(self._queue)
        return [r for r in runs if workspace is None or r.workspace == workspace]

    def in_flight_ids(self, workspace: Path | None = None) -> set[str]:
        return {r.run_id for r in self.live_runs(workspace)}

    def find_live(self, run_id: str) -> LiveRun | None:
        if run_id in self._active:
            return self._active[run_id]
        return next((r for r in self._queue if r.run_id == run_id), None)

    def find_recent(self, run_id: str) -> LiveRun | None:
        return self._recent.get(run_id)

    def queued_count(self) -> int:
        return len(self._queue)

    def active_count(self) -> int:
        return len(self._active)

    def summary(self, run: LiveRun) -> RunSummary:
        req = run.request
        result = run.result
        position = None
        if run.state is RunState.QUEUED:
            position = next((i + 1 for i, r in enumerate(self._queue) if r is run), None)
        return RunSummary(
            run_id=run.run_id,
            workspace=str(run.workspace),
            run_dir=req.run_dir,
            state=run.state,
            index_status=result.index_status if result else IndexStatus.NOT_INDEXED,
            name=req.name,
            model=req.model,
            preset=req.preset,
            created_at=req.created_at,
            finished_at=result.finished_at if result else None,
            duration_ms=result.duration_ms if result else None,
            final_metrics=result.final_metrics if result else {},
            reason=result.reason if result else "",
            exit_code=result.exit_code if result else None,
            partial_artifacts=result.partial_artifacts if result else [],
            pid=run.pid,
            queue_position=position,
            last_seq=run.run_seq,
        )

    # ------------------------------------------------------------------ queue

    def submit(self, run: LiveRun) -> None:
        """Queue a prepared run (its folder and request.json exist) and start what fits."""
        run.topic_prefix = ev.run_topic_prefix(str(run.workspace), run.run_id)
        run.events_file = run_folder.open_for_append(run.run_dir, run_folder.EVENTS_FILE)
        self._queue.append(run)
        self._publish(run, ev.RUN_QUEUED, {"position": len(self._queue)})
        self._schedule()

    def _schedule(self) -> None:
        if not self.accepting:
            return
        started: list[LiveRun] = []
        for run in list(self._queue):
            per_workspace, global_limit = run.max_concurrent, run.max_concurrent_global
            same_ws = sum(1 for r in self._active.values() if r.workspace == run.workspace)
            if len(self._active) >= global_limit:
                break
            if same_ws >= per_workspace:
                continue  # FIFO per workspace; other workspaces may still start
            self._queue.remove(run)
            self._active[run.run_id] = run
            started.append(run)
        for run in started:
            self._spawn_task(self._run(run))

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one run

    async def _run(self, run: LiveRun) -> None:
        try:
            try:
                if run.trusted is not None:
                    run.trusted.recheck()  # trust withdrawn while it was queued: never spawn
                run.log_file = run_folder.open_for_append(run.run_dir, run_folder.LOGS_FILE)
                spec = TrainerSpec(
                    run_id=run.run_id,
                    argv=run.argv,
                    env=run.env,
                    cwd=run.workspace,
                    placement=run.placement,
                )
                handle = await self._executors[run.executor].start(spec)
            except (OSError, RunforgeError) as exc:
                run.evidence.failure_message = f"could not start the trainer: {exc}"
                log.warning("spawn_failed", run_id=run.run_id, error=str(exc))
                await self._finish(run, exit_code=None)
                return
            run.handle = handle
            run.state = RunState.RUNNING
            run.started_at = utc_now()
            run.started_mono = time.monotonic()
            self._save_inflight(run)
            run.controller = self._cancel_controller(run, handle)
            self._publish(run, ev.RUN_SPAWNED, {"pid": handle.pid, "argv": run.argv})
            log.info("run_spawned", run_id=run.run_id, pid=handle.pid, executor=run.executor)
            if run.cancel_requested:
                # Cancelled between leaving the queue and the spawn: honour it now.
                self._keep_deadline(run, run.controller.request(run.grace_s).deadline_in_s)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None:
                run.evidence.failure_message = "internal error in the daemon"
                await self._finish(run, exit_code=None)
            return
        await self._supervise(run, handle)

    async def _supervise(self, run: LiveRun, handle: TrainerHandle) -> None:
        """Relay the trainer's output until it exits, then finish the run."""
        assert run.controller is not None
        exit_code: int | None = None
        try:
            relay = asyncio.ensure_future(self._relay_output(run, handle))
            watcher = asyncio.ensure_future(self._watch_tree(run, handle))
            flusher = asyncio.ensure_future(self._flush_periodically(run))
            exit_code = await handle.wait()
            run.controller.trainer_exited()  # stops the countdown, kills leftover workers
            watcher.cancel()
            # Workers that kept the pipes open were just killed; drain what is left.
            await drain(handle, relay)
            flusher.cancel()
            await self._finish(run, exit_code=exit_code)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None:
                message = run.evidence.failure_message or "internal error in the daemon"
                run.evidence.failure_message = message
                await self._finish(run, exit_code=exit_code)

    def _cancel_controller(self, run: LiveRun, handle: TrainerHandle) -> CancelController:
        escalation_published = False

        def kill_tree() -> None:
            nonlocal escalation_published
            killed = handle.kill_tree()
            controller = run.controller
            if controller is not None and controller.killed and not escalation_published:
                escalation_published = True
                self._publish(run, ev.CANCEL_ESCALATED, {"signal": "SIGKILL", "processes": killed})
                log.warning("cancel_escalated", run_id=run.run_id, processes=killed)

        def send_term() -> None:
            delivered = handle.signal_trainer()
            log.info("sigterm_sent", run_id=run.run_id, delivered=delivered)

        return CancelController.on_loop(
            asyncio.get_running_loop(),
            default_grace_s=run.grace_s,
            send_term=send_term,
            kill_tree=kill_tree,
            publish_countdown=lambda s: self._publish(
                run, ev.CANCEL_COUNTDOWN, {"seconds_remaining": s}
            ),
        )

    async def _watch_tree(self, run: LiveRun, handle: TrainerHandle) -> None:
        while True:
            if handle.refresh():
                self._save_inflight(run)
            await asyncio.sleep(TREE_REFRESH_S)

    async def _flush_periodically(self, run: LiveRun) -> None:
        while True:
            await asyncio.sleep(EVENTS_FLUSH_S)
            self._flush(run)

    def _flush(self, run: LiveRun) -> None:
        for handle in (run.events_file, run.log_file):
            if handle is not None and not handle.closed:
                with contextlib.suppress(OSError):
                    handle.flush()

    # ------------------------------------------------------------------ events

    async def _relay_output(self, run: LiveRun, handle: TrainerHandle) -> None:
        """stdout into logs.txt; stderr event lines published, the rest into logs.txt."""
        async for stream, line in handle.output():
            self._on_line(run, line, events=stream == "stderr")

    def _on_line(self, run: LiveRun, line: bytes, events: bool) -> None:
        if events:
            try:
                event = parse_line(line)
            except InvalidEventLine as exc:
                self._counters.invalid_trainer_lines += 1
                log.warning("invalid_event_line", run_id=run.run_id, reason=str(exc))
                self._publish(
                    run,
                    ev.INVALID_EVENT_LINE,
                    {"reason": str(exc), "line": line[:200].decode("utf-8", "replace")},
                )
                event = None
            if event is not None:
                self._on_trainer_event(run, event)
                return
        if run.log_file is not None:
            run.log_file.write(line[:MAX_LOG_LINE] + b"\n")

    def _on_trainer_event(self, run: LiveRun, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == te.RUN_START and run.controller is not None:
            run.controller.trainer_announced()  # its handler is in place: SIGTERM is safe
        elif kind == te.ARTIFACTS_WRITTEN:
            run.evidence.artifacts_written = True
        elif kind == te.RUN_CANCELLED:
            run.evidence.run_cancelled = True
        elif kind == te.RUN_FAILED:
            error = event.get("error") or {}
            run.evidence.failure_message = str(error.get("message") or error.get("code") or "")
        self._publish(run, kind, event)

    def _publish(self, run: LiveRun, kind: str, data: dict[str, Any]) -> None:
        run.run_seq += 1
        event = self._publisher.stamp(
            kind, data, workspace=str(run.workspace), run_id=run.run_id, run_seq=run.run_seq
        )
        if run.events_file is not None and not run.events_file.closed:
            try:
                run.events_file.write(run_folder.encode_event_line(event))
            except OSError as exc:
                log.error("events_persist_failed", run_id=run.run_id, error=str(exc))
        self._publisher.send(run.topic_prefix + kind.encode(), event)

    # ------------------------------------------------------------------ the end of a run

    async def _finish(self, run: LiveRun, *, exit_code: int | None) -> None:
        marker = run_folder.read_cancelled_marker(run.run_dir)
        evidence = run.evidence
        evidence.cancel_requested = run.cancel_requested
        evidence.killed = bool(run.controller and run.controller.killed)
        evidence.marker_valid = marker is not None
        handle = run.handle
        if run.state is RunState.QUEUED and run.cancel_requested:
            verdict = outcome.cancelled_while_queued()
        elif exit_code is None and handle is not None and not handle.started:
            # A cluster job that never started its trainer: cancelled while pending for
            # resources, or refused (the cluster cannot see the workspace...).
            if run.cancel_requested:
                verdict = outcome.cancelled_before_start(handle.start_failure)
            else:
                verdict = outcome.never_started(handle.start_failure)
        elif exit_code is None:
            failure = handle.start_failure if handle is not None else ""
            verdict = outcome.never_started(failure or evidence.failure_message)
        else:
            evidence.run_json_usable = run_folder.run_json_usable(run.run_dir)
            verdict = outcome.trainer_exited(exit_code, evidence)
        state = verdict.state
        finished = time.monotonic()
        result = ResultRecord(
            run_id=run.run_id,
            run_dir=run.request.run_dir,
            state=state,
            exit_code=exit_code,
            started_at=run.started_at,
            finished_at=utc_now(),
            duration_ms=int((finished - run.started_mono) * 1000) if run.started_mono else None,
            device=run.request.device,
            reason=verdict.reason,
            cancel_requested=run.cancel_requested,
            partial_artifacts=list(marker.partial_artifacts or []) if marker else [],
            final_metrics=(
                run_folder.final_metrics(run.run_dir) if state is RunState.COMPLETED else {}
            ),
        )
        # result.json first (a crash now leaves the verdict on disk), then the index, then
        # result.json again with the index status.
        self._write_result(run, result)
        if state is RunState.COMPLETED:
            error = await self._indexes.add_completed(run.workspace, run.run_dir, result)
            if error is None:
                self._publish(run, ev.INDEX_UPDATED, {"run_id": run.run_id})
            else:
                self._publish(run, ev.INDEX_ORPHANED, {"error": msgspec.to_builtins(error)})
            self._write_result(run, result)
        run.result = result
        run.state = state
        self._publish(run, ev.RUN_TERMINAL, msgspec.to_builtins(result))
        log.info("run_terminal", run_id=run.run_id, state=state.value, reason=verdict.reason)
        self._close_files(run)
        self.inflight_records.drop(run.run_id)
        self._active.pop(run.run_id, None)
        with contextlib.suppress(ValueError):
            self._queue.remove(run)
        self._recent[run.run_id] = run
        if not self._active and not self._queue:
            self.cancel_journal.clear()
        if len(self._recent) > 1000:
            self._recent.pop(next(iter(self._recent)))
        run.done.set()
        self._schedule()

    def _write_result(self, run: LiveRun, result: ResultRecord) -> None:
        try:
            run_folder.write_result(run.run_dir, result)
        except OSError as exc:
            log.error("result_write_failed", run_id=run.run_id, error=str(exc))

    def _close_files(self, run: LiveRun) -> None:
        for handle in (run.events_file, run.log_file):
            if handle is not None and not handle.closed:
                with contextlib.suppress(OSError):
                    handle.flush()
                    os.fsync(handle.fileno())
                handle.close()

    # ------------------------------------------------------------------ cancel

    async def cancel(self, run: LiveRun, grace_s: float | None) -> tuple[bool, float | None]:
        """Cancel a live run. Returns (already cancelling, seconds to the deadline)."""
        if run.state is RunState.QUEUED and run.handle is None and run in self._queue:
            run.cancel_requested = True
            self._publish(run, ev.CANCEL_REQUESTED, {"grace_s": 0, "queued": True})
            await self._finish(run, exit_code=None)
            return False, None
        already = run.cancel_requested
        if not already:
            run.cancel_requested = True
            run.state = RunState.CANCELLING
            await self.cancel_journal.record(run.run_id)  # durable before any signal
            grace = run.grace_s if grace_s is None else grace_s
            self._publish(run, ev.CANCEL_REQUESTED, {"grace_s": grace})
            log.info("cancel_requested", run_id=run.run_id, grace_s=grace)
        if run.controller is None:
            return already, None  # not spawned yet: _run applies the cancel on spawn
        request = run.controller.request(grace_s)
        self._keep_deadline(run, request.deadline_in_s)
        return request.already_cancelling, request.deadline_in_s

    @staticmethod
    def _keep_deadline(run: LiveRun, deadline_in_s: float | None) -> None:
        """Tell a trainer that outlives the daemon when its cancel's deadline falls, so it
        is kept across a daemon restart."""
        if run.handle is not None and deadline_in_s is not None:
            run.handle.keep_deadline(time.time() + deadline_in_s)

    async def shutdown(self) -> None:
        """Stop accepting runs; cancel queued ones; cancel every running one, in parallel,
        each with its own grace; wait for all to be classified."""
        self.accepting = False
        for run in list(self._queue):
            await self.cancel(run, None)
        running = list(self._active.values())
        for run in running:
            if not run.cancel_requested:
                with contextlib.suppress(RunforgeError):
                    await self.cancel(run, None)
        if running:
            await asyncio.gather(*(r.done.wait() for r in running))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)
        self.cancel_journal.close()

    # ------------------------------------------------------------------ adoption

    def adopt(self, record: InflightRecord, handle: TrainerHandle, cancel_requested: bool) -> bool:
        """Take over a run a previous daemon left with an executor that outlives it (a
        cluster job): its events go on from the last one on disk, its cancel (if one was
        asked) is asked again, and it ends through the same path as any run. False when
        its folder no longer says what was asked (then reconciliation classifies it)."""
        workspace = Path(record.workspace)
        run_dir = workspace / record.run_dir
        request = run_folder.load_request(run_dir)
        if request is None:
            return False
        run = LiveRun(
            run_id=record.run_id,
            workspace=workspace,
            trusted=None,
            request=request,
            argv=list(request.argv),
            env={},
            grace_s=record.cancel_grace_s,
            executor=record.executor,
            state=RunState.RUNNING,
            run_seq=run_folder.last_run_seq(run_dir),
            started_at=record.started_at,
            started_mono=time.monotonic() - _seconds_since(record.started_at),
            handle=handle,
            inflight=record,
        )
        seen = run_folder.events_seen(run_dir, (te.ARTIFACTS_WRITTEN, te.RUN_CANCELLED))
        run.evidence.artifacts_written = seen[te.ARTIFACTS_WRITTEN]
        run.evidence.run_cancelled = seen[te.RUN_CANCELLED]
        run.topic_prefix = ev.run_topic_prefix(str(workspace), run.run_id)
        run.events_file = run_folder.open_for_append(run_dir, run_folder.EVENTS_FILE)
        run.log_file = run_folder.open_for_append(run_dir, run_folder.LOGS_FILE)
        run.controller = self._cancel_controller(run, handle)
        self._active[run.run_id] = run
        log.info("run_adopted", run_id=run.run_id, executor=run.executor, run_seq=run.run_seq)
        if cancel_requested:
            run.cancel_requested = True
            run.state = RunState.CANCELLING
            self._spawn_task(self._cancel_again(run, record.cancel_grace_s))
        self._spawn_task(self._supervise(run, handle))
        return True

    async def _cancel_again(self, run: LiveRun, grace_s: float) -> None:
        await self.cancel_journal.record(run.run_id)  # durable again before any signal
        if run.controller is not None and not run.controller.trainer_has_exited:
            # The deadline the trainer kept, if any: a restart does not extend the grace.
            deadline = run.handle.kept_deadline if run.handle is not None else None
            if deadline is not None:
                grace_s = max(0.0, deadline - time.time())
            self._keep_deadline(run, run.controller.request(grace_s).deadline_in_s)

    # ------------------------------------------------------------------ durable state

    def _save_inflight(self, run: LiveRun) -> None:
        if run.handle is None or run.started_at is None:
            return
        run.inflight = InflightRecord(
            **msgspec.structs.asdict(run.handle.record),
            run_id=run.run_id,
            workspace=str(run.workspace),
            run_dir=run.request.run_dir,
            started_at=run.started_at,
            cancel_grace_s=run.grace_s,
        )
        self.inflight_records.save(run.inflight)

    # ------------------------------------------------------------------ replay

    def flush_events(self, run_id: str) -> LiveRun | None:
        """Push a live run's buffered events to disk (before a replay reads them)."""
        live = self.find_live(run_id)
        if live is not None:
            self._flush(live)
        return live


def _seconds_since(timestamp: str) -> float:
    """Seconds from a contract timestamp to now (0 if it cannot be read)."""
    parsed = parse_timestamp(timestamp)
    return max(0.0, time.time() - parsed.timestamp()) if parsed is not None else 0.0
