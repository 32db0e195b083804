"""The run supervisor: it sequences each run, queue -> executor -> events -> outcome ->
index, and keeps the in-memory view of live runs (a cache of what is on disk).

It decides nothing itself and touches no process or file directly:

- the executor (``runforged.executor``) starts, signals, kills and reaps the trainer;
- the cancel policy (``runforged.cancel.CancelController``) decides when to signal;
- the outcome (``runforged.outcome``) decides the terminal state;
- the run folder (``runforged.run_folder``) is read and written through its module;
- the index is written by ``runforged.index_writer``;
- runs a crashed daemon left in flight are ``runforged.reconciliation``'s.

Local runs go through a per-run monitor (``runforged.monitor_executor``): the daemon
records a run when it accepts it (``runforged.run_records``), the monitor numbers and
persists its events and holds a cancel's deadline, and a restarted daemon takes every
recorded run over (``resume``): re-attached, classified from its exit record, or queued
again if it never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import msgspec
import structlog

from runforge_contract import layout
from runforge_contract import trainer_events as te
from runforge_contract.timestamps import parse_timestamp, utc_now
from runforge_contract.trainer_parent import CUT_NOTE, MAX_OUTPUT_LINE, LogCap
from runforge_protocol import events as ev
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import Counters, Event, RunSummary
from runforge_protocol.records import IndexStatus, ResultRecord, RunState
from runforged import monitor, outcome, run_folder
from runforged.cancel import CancelController
from runforged.disk_formats import RequestRecord
from runforged.durable_state import (
    CancelJournal,
    InflightRecord,
    InflightRecords,
    make_private,
)
from runforged.errors import RunforgeError
from runforged.executor import Executor, TrainerHandle, TrainerSpec, drain
from runforged.index_writer import IndexWriters
from runforged.monitor_executor import (
    MonitorConnection,
    MonitorError,
    MonitorExecutor,
    probe,
    sweep_run,
)
from runforged.run_records import AcceptedRecord, MonitorSpec, RunRecords, remove_stale_temp_files
from runforged.trainer_events import InvalidEventLine, parse_line
from runforged.trust import TrustedWorkspace

if TYPE_CHECKING:
    from runforged.ray_executor import RayPlacement

log = structlog.get_logger("runforged.supervisor")

TREE_REFRESH_S = 0.5
EVENTS_FLUSH_S = 0.2
# Longer stderr/stdout lines are cut here in logs.txt: a cut line from a trainer's parent
# (monitor, Ray entrypoint) is MAX_OUTPUT_LINE bytes and its note, kept whole.
MAX_LOG_LINE = MAX_OUTPUT_LINE + len(CUT_NOTE)


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

    def relay(self, topic: bytes, event: Event) -> None:
        """Publish an event numbered elsewhere (a monitor): only ``seq`` is given here."""


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
    log_cap: LogCap | None = None  # logs.txt's cap, where this daemon writes logs.txt
    inflight: InflightRecord | None = None
    # Monitored runs: the durable record, the monitor's connection, its trainer's pid.
    max_log_bytes: int = monitor.DEFAULT_MAX_LOG_BYTES
    record_dir: Path | None = None
    connection: MonitorConnection | None = None
    trainer_pid: int | None = None
    cancel_grace_s: float | None = None  # an explicit grace asked before the attach
    resumed: bool = False  # taken over from an earlier daemon

    @property
    def run_dir(self) -> Path:
        return self.workspace / run_folder.RUNS_DIR / self.run_id

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None else self.trainer_pid


class RunSupervisor:
    def __init__(
        self,
        *,
        publisher: Publisher,
        counters: Counters,
        indexes: IndexWriters,
        state_dir: Path,
        executors: Mapping[str, Executor],
        monitors: MonitorExecutor | None = None,
    ) -> None:
        self._publisher = publisher
        self._counters = counters
        self._indexes = indexes
        self._executors = executors
        self._monitors = monitors
        self.inflight_records = InflightRecords(state_dir / "inflight")
        self.cancel_journal = CancelJournal(state_dir / "cancel-intents.log")
        self.records = RunRecords(state_dir / "runs")
        self._detaching = False  # stopping with keep_runs: monitors carry on alone
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
        """Queue a prepared run (its folder and request.json exist) and start what fits.
        A monitored run is recorded durably first: once ``train`` is answered, no daemon
        kill can lose it. Raises RunforgeError when that record cannot be written."""
        run.topic_prefix = ev.run_topic_prefix(str(run.workspace), run.run_id)
        try:
            if run.executor == "local" and self._monitors is not None:
                run.record_dir = self.records.accept(_accepted_record(run))
            run.events_file = run_folder.open_for_append(run.run_dir, run_folder.EVENTS_FILE)
        except OSError as exc:
            self.records.drop(run.run_id)
            raise RunforgeError(
                ErrorCode.INTERNAL_ERROR,
                f"the run could not be recorded: {exc.strerror or exc}",
                "free some disk space (state directory and workspace) and try again",
                {"run_id": run.run_id},
            ) from exc
        self._queue.append(run)
        self._publish(run, ev.RUN_QUEUED, {"position": len(self._queue)})
        self._flush(run)
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
        if run.executor == "local" and self._monitors is not None:
            await self._run_monitored(run, self._monitors)
            return
        await self._run_through_handle(run)

    async def _run_through_handle(self, run: LiveRun) -> None:
        """A run of an executor behind the ``TrainerHandle`` seam (a cluster job): its
        output relayed and persisted here, cancels through ``CancelController``."""
        try:
            try:
                if run.trusted is not None:
                    run.trusted.recheck()  # trust withdrawn while it was queued: never spawn
                run.log_file = run_folder.open_for_append(run.run_dir, run_folder.LOGS_FILE)
                run.log_cap = LogCap(run.max_log_bytes, os.fstat(run.log_file.fileno()).st_size)
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

    # ------------------------------------------------------------------ monitored runs

    async def _run_monitored(self, run: LiveRun, executor: MonitorExecutor) -> None:
        """Start the run's monitor, relay its events until it says the trainer was
        reaped (or goes away), then classify."""
        exit_record: dict[str, Any] | None = None
        try:
            try:
                if run.trusted is not None:
                    run.trusted.recheck()  # trust withdrawn while queued: never spawn
                assert run.record_dir is not None
                self._close_files(run)  # the monitor writes the run's files from now on
                await executor.start(run.record_dir, run.run_seq, run.env)
            except (OSError, RunforgeError, MonitorError) as exc:
                run.evidence.failure_message = f"could not start the trainer: {exc}"
                log.warning("spawn_failed", run_id=run.run_id, error=str(exc))
                await self._finish_monitored(run, None)
                return
            run.started_at = utc_now()
            run.started_mono = time.monotonic()
            exit_record = await self._follow(run, executor)
            if not self._detaching:
                await self._finish_monitored(run, exit_record)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None and not self._detaching:
                message = run.evidence.failure_message or "internal error in the daemon"
                run.evidence.failure_message = message
                await self._finish_monitored(run, exit_record or self._exit_on_disk(run))

    async def _follow(self, run: LiveRun, executor: MonitorExecutor) -> dict[str, Any] | None:
        """Attach to the run's monitor from the run's last relayed event on and relay
        until the trainer is reaped, attaching again if the connection drops while the
        monitor lives. The exit record, or None when the monitor died without one (or
        the daemon is detaching)."""
        assert run.record_dir is not None
        while not self._detaching:
            connection = executor.connection(run.record_dir, lambda e: self._relay(run, e))
            try:
                hello = await connection.attach(run.run_seq)
            except MonitorError as exc:
                if monitor.monitor_is_running(str(run.record_dir)):
                    log.warning("monitor_attach_retry", run_id=run.run_id, error=str(exc))
                    await asyncio.sleep(0.5)
                    continue
                return self._exit_on_disk(run)
            run.connection = connection
            self._note_hello(run, hello)
            if run.cancel_requested and not hello.get("cancel_requested"):
                # Cancelled while the monitor was starting: hand the cancel over now.
                with contextlib.suppress(MonitorError):
                    await connection.cancel(run.cancel_grace_s)
            if self._detaching:
                await connection.close()
            await connection.closed()
            run.connection = None
            exit_record = connection.exit or self._exit_on_disk(run)
            if exit_record is not None:
                return exit_record
            if not monitor.monitor_is_running(str(run.record_dir)):
                return None
        return None

    def _note_hello(self, run: LiveRun, hello: dict[str, Any]) -> None:
        run.trainer_pid = hello.get("trainer_pid") or None
        run.evidence.killed |= bool(hello.get("killed"))
        if hello.get("cancel_requested"):
            run.cancel_requested = True
            run.state = RunState.CANCELLING
        elif run.state is RunState.QUEUED:
            run.state = RunState.RUNNING

    def _exit_on_disk(self, run: LiveRun) -> dict[str, Any] | None:
        if run.record_dir is None:
            return None
        return monitor.read_exit_record(str(run.record_dir))

    def _relay(self, run: LiveRun, event: Event) -> None:
        """One event from the monitor (numbered and persisted there): note what the
        outcome needs, publish it."""
        if event.run_seq <= run.run_seq:
            return  # already relayed (an attach never sends these; belt and braces)
        run.run_seq = event.run_seq
        kind = event.type
        if kind != te.TRAIN_PROGRESS:  # the one frequent kind; nothing in it to note
            self._note(run, kind, event)
        self._publisher.relay(run.topic_prefix + kind.encode(), event)

    def _note(self, run: LiveRun, kind: str, event: Event) -> None:
        """What a relayed event tells the outcome and the run's state."""
        run.evidence.note_trainer_event(kind, event.data)
        if kind == ev.CANCEL_REQUESTED:
            run.cancel_requested = True
            run.state = RunState.CANCELLING
        elif kind == ev.CANCEL_ESCALATED:
            run.evidence.killed = True
            log.warning("cancel_escalated", run_id=run.run_id, processes=event.data)
        elif kind == ev.INVALID_EVENT_LINE:
            self._counters.invalid_trainer_lines += 1
        elif kind == ev.RUN_SPAWNED:
            pid = event.data.get("pid")
            run.trainer_pid = pid if isinstance(pid, int) else run.trainer_pid
            if run.state is RunState.QUEUED:
                run.state = RunState.RUNNING

    async def _finish_monitored(self, run: LiveRun, exit_record: dict[str, Any] | None) -> None:
        """The monitored run's verdict, from the exit record (None: the monitor never
        started, or died without one) and what the run folder and events say."""
        try:
            verdict, exit_code = await self._monitored_verdict(run, exit_record)
        except Exception:
            log.exception("classification_failed", run_id=run.run_id)
            verdict = outcome.never_started("internal error in the daemon while classifying")
            exit_code = None
        await self._conclude(run, verdict, exit_code)

    async def _monitored_verdict(
        self, run: LiveRun, exit_record: dict[str, Any] | None
    ) -> tuple[outcome.Classification, int | None]:
        evidence = run.evidence
        if run.resumed:
            # Events an earlier daemon relayed (or nobody did) count too.
            seen = await asyncio.to_thread(
                run_folder.events_seen, run.run_dir, (te.ARTIFACTS_WRITTEN, te.RUN_CANCELLED)
            )
            evidence.artifacts_written |= seen[te.ARTIFACTS_WRITTEN]
            evidence.run_cancelled |= seen[te.RUN_CANCELLED]
        if run.started_at is None and run.cancel_requested:
            return outcome.cancelled_while_queued(), None
        if exit_record is not None:
            run.cancel_requested |= bool(exit_record.get("cancel_requested"))
            evidence.killed |= bool(exit_record.get("killed"))
            if exit_record.get("spawn_error"):
                evidence.failure_message = (
                    f"could not start the trainer: {exit_record['spawn_error']}"
                )
        evidence.cancel_requested = run.cancel_requested
        evidence.marker_valid = run_folder.read_cancelled_marker(run.run_dir) is not None
        evidence.run_json_usable = run_folder.run_json_usable(run.run_dir)
        exit_code = exit_record.get("exit_code") if exit_record is not None else None
        if isinstance(exit_code, int):
            return outcome.trainer_exited(exit_code, evidence), exit_code
        if exit_record is None and run.started_at is not None:
            assert run.record_dir is not None
            recorded = monitor.read_monitor_record(str(run.record_dir)) or {}
            rebooted = recorded.get("boot_id") not in (None, monitor.boot_id())
            if not rebooted:
                swept = await asyncio.to_thread(sweep_run, run.run_id)
                log.warning("monitor_lost", run_id=run.run_id, processes_swept=swept)
            return outcome.monitor_lost(evidence, rebooted=rebooted), None
        return outcome.never_started(evidence.failure_message), None

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
            self._log(run, line[:MAX_LOG_LINE] + b"\n")

    def _log(self, run: LiveRun, data: bytes) -> None:
        """One line into logs.txt, under its cap (the monitor's policy, ``LogCap``)."""
        assert run.log_file is not None
        cap = run.log_cap
        written = data if cap is None else cap.admit(data)
        if written is None:
            return
        run.log_file.write(written)
        if cap is not None and written is not data:  # the cap's note: said once
            self._publish(
                run, ev.LOGS_TRUNCATED, {"max_log_bytes": cap.max_bytes, "logged_bytes": cap.logged}
            )

    def _on_trainer_event(self, run: LiveRun, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == te.RUN_START and run.controller is not None:
            run.controller.trainer_announced()  # its handler is in place: SIGTERM is safe
        run.evidence.note_trainer_event(kind, event)
        self._publish(run, kind, event)

    def _publish(self, run: LiveRun, kind: str, data: dict[str, Any]) -> None:
        run.run_seq += 1
        event = self._publisher.stamp(
            kind, data, workspace=str(run.workspace), run_id=run.run_id, run_seq=run.run_seq
        )
        if run.events_file is not None and not run.events_file.closed:
            # On disk (in the kernel's hands) before any subscriber sees it: a daemon
            # killed right after publishing loses nothing a follower was shown, and the
            # next daemon's numbering (from the file) never reuses a run_seq.
            try:
                run.events_file.write(run_folder.encode_event_line(event))
                run.events_file.flush()
            except OSError as exc:
                log.error("events_persist_failed", run_id=run.run_id, error=str(exc))
        self._publisher.send(run.topic_prefix + kind.encode(), event)

    # ------------------------------------------------------------------ the end of a run

    async def _finish(self, run: LiveRun, *, exit_code: int | None) -> None:
        evidence = run.evidence
        evidence.cancel_requested = run.cancel_requested
        evidence.killed = bool(run.controller and run.controller.killed)
        evidence.marker_valid = run_folder.read_cancelled_marker(run.run_dir) is not None
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
            if not run_folder.exists(run.run_dir):
                # Swapped for a symlink (or removed) by the trainer: nothing is read or
                # written through it, so the run cannot have completed.
                evidence.failure_message = (
                    "the run folder was replaced by a symlink or removed; nothing is read "
                    "or written through it"
                )
            evidence.run_json_usable = run_folder.run_json_usable(run.run_dir)
            verdict = outcome.trainer_exited(exit_code, evidence)
        await self._conclude(run, verdict, exit_code)

    async def _conclude(
        self, run: LiveRun, verdict: outcome.Classification, exit_code: int | None
    ) -> None:
        marker = run_folder.read_cancelled_marker(run.run_dir)
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
        await self._record_verdict(run, result)

    async def _record_verdict(self, run: LiveRun, result: ResultRecord) -> None:
        """result.json first (a crash now leaves the verdict on disk, and it is final),
        then the index, result.json again with the index status, run_terminal (once),
        then forget the run's records. Whatever fails on the way (a full disk), the run
        ends in memory and frees its slot."""
        try:
            self._take_back_events(run)
            self._write_result(run, result)
            already_indexed = run.resumed and result.index_status is IndexStatus.INDEXED
            if result.state is RunState.COMPLETED and not already_indexed:
                error = await self._indexes.add_completed(run.workspace, run.run_dir, result)
                if error is None:
                    self._publish(run, ev.INDEX_UPDATED, {"run_id": run.run_id})
                else:
                    self._publish(run, ev.INDEX_ORPHANED, {"error": msgspec.to_builtins(error)})
                self._write_result(run, result)
            if not (
                run.resumed
                and run_folder.events_seen(run.run_dir, (ev.RUN_TERMINAL,))[ev.RUN_TERMINAL]
            ):
                self._publish(run, ev.RUN_TERMINAL, msgspec.to_builtins(result))
            log.info(
                "run_terminal", run_id=run.run_id, state=result.state.value, reason=result.reason
            )
        except Exception:
            log.exception("verdict_recording_failed", run_id=run.run_id)
        finally:
            run.result = result
            run.state = result.state
            self._close_files(run)
            self.inflight_records.drop(run.run_id)
            if run.record_dir is not None:
                self.records.drop(run.run_id)
                remove_stale_temp_files(run.run_dir)  # the trainer is gone: leftovers
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

    def _take_back_events(self, run: LiveRun) -> None:
        """After a monitor: reopen the run's events.jsonl, continuing its numbering."""
        if run.record_dir is None or (run.events_file is not None and not run.events_file.closed):
            return
        run.run_seq = max(run.run_seq, run_folder.last_run_seq(run.run_dir))
        try:
            run.events_file = run_folder.open_for_append(run.run_dir, run_folder.EVENTS_FILE)
            if run.events_file.tell() and not _ends_with_newline(run.run_dir):
                run.events_file.write(b"\n")  # a torn last line (a killed monitor)
        except OSError as exc:
            log.error("events_reopen_failed", run_id=run.run_id, error=str(exc))
            run.events_file = None

    def _write_result(self, run: LiveRun, result: ResultRecord) -> None:
        # A verdict on disk is final: another state never replaces it.
        previous = run_folder.load_result(run.run_dir)
        if previous is not None and previous.state.terminal and previous.state is not result.state:
            log.warning(
                "verdict_kept", run_id=run.run_id, kept=previous.state.value, ignored=result.state
            )
            result.state, result.reason = previous.state, previous.reason
            return
        try:
            run_folder.write_result(run.run_dir, result)
        except OSError as exc:
            log.error("result_write_failed", run_id=run.run_id, error=str(exc))

    def _close_files(self, run: LiveRun) -> None:
        """Flush, fsync and close the run's files; a full disk is logged, never raised."""
        note = run.log_cap.dropped_note() if run.log_cap is not None else b""
        if note and run.log_file is not None and not run.log_file.closed:
            with contextlib.suppress(OSError, ValueError):
                run.log_file.write(note)
        for handle in (run.events_file, run.log_file):
            if handle is not None and not handle.closed:
                try:
                    handle.flush()
                    os.fsync(handle.fileno())
                except (OSError, ValueError) as exc:
                    log.error("run_file_not_durable", run_id=run.run_id, error=str(exc))
                with contextlib.suppress(OSError, ValueError):
                    handle.close()

    # ------------------------------------------------------------------ cancel

    async def cancel(self, run: LiveRun, grace_s: float | None) -> tuple[bool, float | None]:
        """Cancel a live run. Returns (already cancelling, seconds to the deadline)."""
        if run.state is RunState.QUEUED and run.pid is None and run in self._queue:
            run.cancel_requested = True
            self._publish(run, ev.CANCEL_REQUESTED, {"grace_s": 0, "queued": True})
            if run.record_dir is not None:
                await self._finish_monitored(run, None)
            else:
                await self._finish(run, exit_code=None)
            return False, None
        if run.record_dir is not None:
            return await self._cancel_monitored(run, grace_s)
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

    async def _cancel_monitored(
        self, run: LiveRun, grace_s: float | None
    ) -> tuple[bool, float | None]:
        """The monitor holds the cancel from its answer on (deadline, countdown, SIGKILL
        of the tree), with or without a daemon: no journal is needed."""
        already = run.cancel_requested
        connection = run.connection
        if connection is None:
            # Between leaving the queue and the attach: _follow hands it over.
            run.cancel_requested = True
            run.cancel_grace_s = grace_s if grace_s is not None else run.cancel_grace_s
            run.state = RunState.CANCELLING
            return already, None
        try:
            reply = await connection.cancel(grace_s)
        except MonitorError as exc:
            raise RunforgeError(
                ErrorCode.RUN_NOT_ACTIVE,
                "the run's monitor went away (the run is ending)",
                "see how it ended with `runforgectl show RUN_ID`",
                {"run_id": run.run_id},
            ) from exc
        if reply.get("exited"):
            raise RunforgeError(
                ErrorCode.RUN_NOT_ACTIVE,
                "the run's trainer has already exited",
                "see how it ended with `runforgectl show RUN_ID`",
                {"run_id": run.run_id},
            )
        run.cancel_requested = True
        run.state = RunState.CANCELLING
        log.info("cancel_requested", run_id=run.run_id, grace_s=grace_s)
        deadline = reply.get("deadline_in_s")
        return bool(reply.get("already")), float(deadline) if deadline is not None else None

    @staticmethod
    def _keep_deadline(run: LiveRun, deadline_in_s: float | None) -> None:
        """Tell a trainer that outlives the daemon when its cancel's deadline falls, so it
        is kept across a daemon restart."""
        if run.handle is not None and deadline_in_s is not None:
            run.handle.keep_deadline(time.time() + deadline_in_s)

    async def shutdown(self, *, keep_runs: bool = False) -> None:
        """Stop accepting runs. With ``keep_runs``, detach from every monitor (runs go on)
        and leave queued runs recorded for the next daemon. Otherwise cancel queued runs
        and every running one, in parallel, each with its own grace, and wait for all to
        be classified."""
        self.accepting = False
        if keep_runs:
            self._detaching = True
            for run in list(self._active.values()):
                if run.connection is not None:
                    await run.connection.close()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=10.0)
            for run in [*self._active.values(), *self._queue]:
                self._close_files(run)
            self.cancel_journal.close()
            return
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

    # ------------------------------------------------------------------ taking over

    def resume(self, trust_of: Callable[[Path], TrustedWorkspace]) -> int:
        """Take over every run an earlier daemon accepted and did not finish. Call before
        serving: it returns at once (the work goes on in tasks, while requests are
        served): re-attach to live monitors, classify runs that ended meanwhile from their
        exit records, finish recording verdicts already on disk, and queue again runs
        that never started, in their order. Returns how many runs were taken over."""
        if self._monitors is None:
            return 0
        executor = self._monitors
        make_private(self.records.directory.parent)
        taken = 0
        records = self.records.load_all()
        for workspace in {record.workspace for _, record in records}:
            # Index writes a killed daemon interrupted (this daemon has written none yet).
            remove_stale_temp_files(Path(workspace) / layout.OUTPUTS_DIR)
        for record_dir, record in records:
            if record.run_id in self._active or self.find_live(record.run_id) is not None:
                continue
            run = _run_from_record(record, record_dir)
            taken += 1
            final = run_folder.load_result(run.run_dir)
            if final is not None and final.state.terminal:
                self._active[run.run_id] = run
                self._spawn_task(self._record_verdict(run, final))
                continue
            situation = probe(record_dir)
            run.run_seq = run_folder.last_run_seq(run.run_dir)
            if situation == "never_started":
                try:
                    run.trusted = trust_of(run.workspace)
                    run.events_file = run_folder.open_for_append(
                        run.run_dir, run_folder.EVENTS_FILE
                    )
                except (RunforgeError, OSError) as exc:
                    message = exc.message if isinstance(exc, RunforgeError) else str(exc)
                    run.evidence.failure_message = f"not started after a restart: {message}"
                    self._active[run.run_id] = run
                    self._spawn_task(self._finish_monitored(run, None))
                    continue
                self._queue.append(run)
                continue
            started = monitor.read_monitor_record(str(record_dir)) or {}
            run.started_at = started.get("started_at") or record.request.created_at
            run.state = RunState.RUNNING
            self._active[run.run_id] = run
            if situation == "running":
                self._spawn_task(self._resume_running(run, executor))
            else:
                self._spawn_task(self._finish_monitored(run, self._exit_on_disk(run)))
        self._schedule()
        return taken

    async def _resume_running(self, run: LiveRun, executor: MonitorExecutor) -> None:
        exit_record: dict[str, Any] | None = None
        try:
            exit_record = await self._follow(run, executor)
            if not self._detaching:
                await self._finish_monitored(run, exit_record)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None and not self._detaching:
                await self._finish_monitored(run, exit_record or self._exit_on_disk(run))

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
        kinds = (te.ARTIFACTS_WRITTEN, te.RUN_CANCELLED, ev.LOGS_TRUNCATED)
        seen = run_folder.events_seen(run_dir, kinds)
        run.evidence.artifacts_written = seen[te.ARTIFACTS_WRITTEN]
        run.evidence.run_cancelled = seen[te.RUN_CANCELLED]
        run.topic_prefix = ev.run_topic_prefix(str(workspace), run.run_id)
        run.events_file = run_folder.open_for_append(run_dir, run_folder.EVENTS_FILE)
        run.log_file = run_folder.open_for_append(run_dir, run_folder.LOGS_FILE)
        run.max_log_bytes = record.max_log_bytes
        run.log_cap = LogCap(
            record.max_log_bytes,
            os.fstat(run.log_file.fileno()).st_size,
            truncated=seen[ev.LOGS_TRUNCATED],  # the note is there already
        )
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
            max_log_bytes=run.max_log_bytes,
        )
        self.inflight_records.save(run.inflight)

    # ------------------------------------------------------------------ replay

    def flush_events(self, run_id: str) -> LiveRun | None:
        """Push a live run's buffered events to disk (before a replay reads them)."""
        live = self.find_live(run_id)
        if live is not None:
            self._flush(live)
        return live


def _accepted_record(run: LiveRun) -> AcceptedRecord:
    return AcceptedRecord(
        run_id=run.run_id,
        workspace=str(run.workspace),
        accepted_ns=time.time_ns(),
        request=run.request,
        spec=MonitorSpec(
            run_id=run.run_id,
            workspace=str(run.workspace),
            run_dir=str(run.run_dir),
            cwd=str(run.workspace),
            argv=run.argv,
            env=run.env,
            grace_s=run.grace_s,
            max_log_bytes=run.max_log_bytes,
        ),
        max_concurrent=run.max_concurrent,
        max_concurrent_global=run.max_concurrent_global,
    )


def _run_from_record(record: AcceptedRecord, record_dir: Path) -> LiveRun:
    """The in-memory run of a record an earlier daemon left (trust is checked again
    before a queued one starts)."""
    run = LiveRun(
        run_id=record.run_id,
        workspace=Path(record.workspace),
        trusted=None,
        request=record.request,
        argv=record.spec.argv,
        env=record.spec.env,
        grace_s=record.spec.grace_s,
        max_concurrent=record.max_concurrent,
        max_concurrent_global=record.max_concurrent_global,
        max_log_bytes=record.spec.max_log_bytes,
        record_dir=record_dir,
        resumed=True,
    )
    run.topic_prefix = ev.run_topic_prefix(record.workspace, record.run_id)
    return run


def _ends_with_newline(run_dir: Path) -> bool:
    try:
        with open(run_dir / run_folder.EVENTS_FILE, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True


def _seconds_since(timestamp: str) -> float:
    """Seconds from a contract timestamp to now (0 if it cannot be read)."""
    parsed = parse_timestamp(timestamp)
    return max(0.0, time.time() - parsed.timestamp()) if parsed is not None else 0.0
