"""The run supervisor: queue, spawn, relay events, cancel, classify, record, index.

Mechanics live elsewhere (``proctree`` signals processes, ``cancel`` decides escalation
and terminal states, ``index`` writes the index); this module sequences them for each run
and keeps the in-memory view of live runs, which is only a cache of what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from runforge_protocol import events as ev
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import Counters, Event, RunSummary
from runforge_protocol.records import (
    IndexErrorInfo,
    IndexStatus,
    RequestRecord,
    ResultRecord,
    RunState,
)
from runforge_runner.atomicio import write_bytes_atomic
from runforged import monitor, paths
from runforged.cancel import CancelController, classify_terminal_state, read_cancelled_marker
from runforged.errors import RunforgeError
from runforged.index_writer import IndexWriters
from runforged.intents import CancelJournal
from runforged.monitor_executor import (
    MonitorConnection,
    MonitorError,
    probe,
    start_monitor,
    sweep_run,
)
from runforged.proctree import ProcessIdentity, ProcessTree, boot_id, is_same_live_process
from runforged.run_records import AcceptedRecord, MonitorSpec, RunRecords, remove_stale_temp_files
from runforged.trust import TrustedWorkspace

log = structlog.get_logger("runforged.supervisor")

TREE_REFRESH_S = 0.5
EVENTS_FLUSH_S = 0.2
PIPE_DRAIN_TIMEOUT_S = 5.0
READ_CHUNK = 1 << 16
MAX_LOG_LINE = 1 << 20  # longer stderr/stdout lines are cut here in logs.txt

_json = msgspec.json.Encoder()
_result_decoder = msgspec.json.Decoder(ResultRecord)
_event_decoder = msgspec.json.Decoder(Event)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        """Publish an event numbered elsewhere (a monitor): only ``seq`` is ours."""


class InflightRecord(msgspec.Struct, kw_only=True):
    """``<state dir>/inflight/<run_id>.json``: enough to classify the run after a daemon
    crash, and to recognise its trainer (pid + start time + boot id) without ever
    mistaking a reused pid for it."""

    run_id: str
    workspace: str
    run_dir: str
    pid: int
    create_time: float
    boot_id: str
    started_at: str
    cancel_grace_s: float = 5.0
    # Every descendant seen while it ran (workers that left the process group included),
    # so that a restarted daemon can still reach them.
    descendants: list[ProcessIdentity] = []


@dataclass(eq=False)
class LiveRun:
    run_id: str
    workspace: Path
    trusted: TrustedWorkspace | None  # None: resumed after a restart, already started
    request: RequestRecord
    argv: list[str]
    env: dict[str, str]
    grace_s: float
    max_concurrent: int = 1  # runs of this workspace at once (its setting)
    max_concurrent_global: int = 4
    state: RunState = RunState.QUEUED
    run_seq: int = 0
    pid: int | None = None
    started_at: str | None = None
    started_mono: float | None = None
    tree: ProcessTree | None = None
    controller: CancelController | None = None
    cancel_requested: bool = False
    artifacts_written: bool = False
    run_cancelled: bool = False
    failure_message: str = ""
    escalated: bool = False
    result: ResultRecord | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    topic_prefix: bytes = b""
    events_file: Any = None
    log_file: Any = None
    inflight: InflightRecord | None = None
    max_log_bytes: int = monitor.DEFAULT_MAX_LOG_BYTES
    record_dir: Path | None = None
    accepted_ns: int = 0
    connection: MonitorConnection | None = None
    cancel_grace_s: float | None = None  # an explicit grace asked before the monitor ran
    killed: bool = False  # the monitor SIGKILLed the tree at the cancel deadline
    resumed: bool = False  # taken over from a previous daemon

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.workspace, self.run_id)


class RunSupervisor:
    def __init__(
        self,
        *,
        publisher: Publisher,
        counters: Counters,
        indexes: IndexWriters,
        state_dir: Path,
    ) -> None:
        self._publisher = publisher
        self._counters = counters
        self._indexes = indexes
        self._inflight_dir = state_dir / "inflight"  # records of daemons before monitors
        self._intents = CancelJournal(state_dir / "cancel-intents.log")
        self.records = RunRecords(state_dir / "runs")
        self._detaching = False
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

    # ------------------------------------------------------------------ submit

    def submit(self, run: LiveRun) -> None:
        """Record a prepared run durably (its folder and request.json exist), queue it
        and start what fits. Raises RunforgeError when the record cannot be written: a
        run is accepted only once a daemon kill can no longer lose it."""
        run.topic_prefix = ev.run_topic_prefix(str(run.workspace), run.run_id)
        run.accepted_ns = time.time_ns()
        record = AcceptedRecord(
            run_id=run.run_id,
            workspace=str(run.workspace),
            accepted_ns=run.accepted_ns,
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
        try:
            run.record_dir = self.records.accept(record)
            run.events_file = open(run.run_dir / monitor.EVENTS_FILE, "ab")  # noqa: SIM115
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

    def _spawn_task(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one run

    async def _run(self, run: LiveRun) -> None:
        """Start the run's monitor, relay its events until it says the trainer was
        reaped (or goes away), then classify."""
        exit_record: dict[str, Any] | None = None
        try:
            try:
                if run.trusted is not None:
                    run.trusted.recheck()  # trust withdrawn while queued: never spawn
                assert run.record_dir is not None
                self._close_files(run)  # the monitor writes the run's files from now on
                await start_monitor(run.record_dir, run.run_seq, run.env)
            except (OSError, RunforgeError, MonitorError) as exc:
                run.failure_message = f"could not start the trainer: {exc}"
                log.warning("spawn_failed", run_id=run.run_id, error=str(exc))
                await self._finish(run, None)
                return
            run.started_at = utc_now()
            run.started_mono = time.monotonic()
            exit_record = await self._follow(run)
            if self._detaching:
                return
            await self._finish(run, exit_record)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None and not self._detaching:
                run.failure_message = run.failure_message or "internal error in the daemon"
                await self._finish(run, exit_record or self._exit_on_disk(run))

    async def _follow(self, run: LiveRun) -> dict[str, Any] | None:
        """Attach to the run's monitor from the run's last relayed event and relay until
        it ends. The exit record, or None when the monitor died without one."""
        assert run.record_dir is not None
        connection = MonitorConnection(run.record_dir, lambda e: self._relay(run, e))
        try:
            hello = await connection.attach(run.run_seq)
        except MonitorError as exc:
            log.warning("monitor_unreachable", run_id=run.run_id, error=str(exc))
            return self._exit_on_disk(run)
        run.connection = connection
        run.pid = hello.get("trainer_pid") or None
        run.killed = bool(hello.get("killed"))
        if hello.get("cancel_requested"):
            run.cancel_requested = True
            run.state = RunState.CANCELLING
        elif run.state is RunState.QUEUED:
            run.state = RunState.RUNNING
        if run.cancel_requested and not hello.get("cancel_requested"):
            # Cancelled while the monitor was starting: hand the cancel over now.
            with contextlib.suppress(MonitorError):
                await connection.cancel(run.cancel_grace_s)
        await connection.closed()
        run.connection = None
        if self._detaching:
            return None
        return connection.exit or self._exit_on_disk(run)

    def _exit_on_disk(self, run: LiveRun) -> dict[str, Any] | None:
        if run.record_dir is None:
            return None
        return monitor.read_exit_record(str(run.record_dir))

    def _relay(self, run: LiveRun, event: Event) -> None:
        """One event from the monitor (numbered and persisted there): note what the
        outcome needs, publish it."""
        if event.run_seq <= run.run_seq:
            return  # already relayed (an attach never asks for these; belt and braces)
        run.run_seq = event.run_seq
        kind = event.type
        if kind == "artifacts_written":
            run.artifacts_written = True
        elif kind == "run_cancelled":
            run.run_cancelled = True
        elif kind == "run_failed":
            error = event.data.get("error") or {}
            if isinstance(error, dict):
                run.failure_message = str(error.get("message") or error.get("code") or "")
        elif kind == ev.CANCEL_REQUESTED:
            run.cancel_requested = True
            run.state = RunState.CANCELLING
        elif kind == ev.CANCEL_ESCALATED:
            run.killed = True
            log.warning("cancel_escalated", run_id=run.run_id, data=event.data)
        elif kind == ev.INVALID_EVENT_LINE:
            self._counters.invalid_trainer_lines += 1
        elif kind == ev.RUN_SPAWNED:
            pid = event.data.get("pid")
            run.pid = pid if isinstance(pid, int) else run.pid
            if run.state is RunState.QUEUED:
                run.state = RunState.RUNNING
        self._publisher.relay(run.topic_prefix + kind.encode(), event)

    def _flush(self, run: LiveRun) -> None:
        for handle in (run.events_file, run.log_file):
            if handle is not None and not handle.closed:
                with contextlib.suppress(OSError, ValueError):
                    handle.flush()

    def _publish(self, run: LiveRun, kind: str, data: dict[str, Any]) -> None:
        """An event of the daemon's own, while no monitor writes the run's events (queued,
        or after the monitor has gone)."""
        run.run_seq += 1
        event = self._publisher.stamp(
            kind, data, workspace=str(run.workspace), run_id=run.run_id, run_seq=run.run_seq
        )
        if run.events_file is not None and not run.events_file.closed:
            try:
                run.events_file.write(_json.encode(event) + b"\n")
            except (OSError, ValueError) as exc:
                log.error("events_persist_failed", run_id=run.run_id, error=str(exc))
        self._publisher.send(run.topic_prefix + kind.encode(), event)

    # ------------------------------------------------------------------ the end of a run

    async def _finish(self, run: LiveRun, exit_record: dict[str, Any] | None) -> None:
        """Classify the run, write result.json, index it, persist run_terminal, forget
        its record. Never raises: whatever fails (a full disk), the run gets a verdict
        and frees its slot."""
        try:
            verdict = await self._classify(run, exit_record)
        except Exception:
            log.exception("classification_failed", run_id=run.run_id)
            verdict = (RunState.FAILED, "internal error in the daemon while classifying", None)
        state, reason, exit_code = verdict
        marker = read_cancelled_marker(run.run_dir)
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
            reason=reason,
            cancel_requested=run.cancel_requested,
            partial_artifacts=list(marker.partial_artifacts or []) if marker else [],
            final_metrics=_final_metrics(run.run_dir) if state is RunState.COMPLETED else {},
        )
        await self._record_verdict(run, result)

    async def _classify(
        self, run: LiveRun, exit_record: dict[str, Any] | None
    ) -> tuple[RunState, str, int | None]:
        if run.resumed:
            # Events relayed by an earlier daemon count too.
            seen = await asyncio.to_thread(_events_seen, run.run_dir / monitor.EVENTS_FILE)
            run.artifacts_written |= seen["artifacts_written"]
            run.run_cancelled |= seen["run_cancelled"]
        if run.state is RunState.QUEUED and run.cancel_requested and run.started_at is None:
            return RunState.CANCELLED_GRACEFUL, "cancelled while queued; never started", None
        if exit_record is not None:
            run.cancel_requested |= bool(exit_record.get("cancel_requested"))
            run.killed |= bool(exit_record.get("killed"))
            if exit_record.get("spawn_error"):
                run.failure_message = f"could not start the trainer: {exit_record['spawn_error']}"
        exit_code = exit_record.get("exit_code") if exit_record else None
        if not isinstance(exit_code, int):
            if exit_record is None and run.started_at is not None:
                return await self._classify_monitor_lost(run)
            return RunState.FAILED, run.failure_message or "the trainer never started", None
        marker = read_cancelled_marker(run.run_dir)
        verdict = classify_terminal_state(
            exit_code=exit_code,
            cancel_requested=run.cancel_requested,
            artifacts_written=run.artifacts_written,
            run_json_exists=run_json_readable(run.run_dir),
            marker_valid=marker is not None,
            run_cancelled=run.run_cancelled,
            killed=run.killed,
        )
        reason = verdict.reason
        if verdict.state is RunState.FAILED and run.failure_message:
            reason = f"{run.failure_message} ({reason})"
        return verdict.state, reason, exit_code

    async def _classify_monitor_lost(self, run: LiveRun) -> tuple[RunState, str, int | None]:
        """The monitor is gone without an exit status: killed (SIGKILL, OOM), or the
        machine rebooted. Its trainer died with it (PR_SET_PDEATHSIG); whatever else of
        the run is left is swept by the run id in its environment."""
        assert run.record_dir is not None
        recorded = monitor.read_monitor_record(str(run.record_dir)) or {}
        if recorded.get("boot_id") not in (None, monitor.boot_id()):
            return RunState.LOST, "the machine restarted while the run was in flight", None
        swept = await asyncio.to_thread(sweep_run, run.run_id)
        log.warning("monitor_lost", run_id=run.run_id, processes_swept=swept)
        if run_json_readable(run.run_dir) and run.artifacts_written:
            return (
                RunState.COMPLETED,
                "completed; its monitor was killed before it recorded the exit status",
                None,
            )
        marker = read_cancelled_marker(run.run_dir)
        verdict = classify_terminal_state(
            exit_code=-9,
            cancel_requested=run.cancel_requested,
            artifacts_written=run.artifacts_written,
            run_json_exists=run_json_readable(run.run_dir),
            marker_valid=marker is not None,
            run_cancelled=run.run_cancelled,
            killed=False,
        )
        return (
            verdict.state,
            "its monitor was killed, and the trainer with it (a trainer never runs "
            f"unmonitored): {verdict.reason}",
            None,
        )

    async def _record_verdict(self, run: LiveRun, result: ResultRecord) -> None:
        """result.json (final from here on), the index, run_terminal, then forget the
        record; the in-memory run ends and its slot is free, whatever failed on the way."""
        try:
            self._reopen_events(run)
            self._write_result(run, result)
            if result.state is RunState.COMPLETED:
                error = await self._index_completed(run.workspace, run.run_dir, result)
                if error is None:
                    self._publish(run, ev.INDEX_UPDATED, {"run_id": run.run_id})
                else:
                    self._publish(run, ev.INDEX_ORPHANED, {"error": msgspec.to_builtins(error)})
                self._write_result(run, result)
            run.result = result
            run.state = result.state
            if not _has_terminal_event(run.run_dir / monitor.EVENTS_FILE):
                self._publish(run, ev.RUN_TERMINAL, msgspec.to_builtins(result))
            log.info(
                "run_terminal", run_id=run.run_id, state=result.state.value, reason=result.reason
            )
        except Exception:
            log.exception("verdict_recording_failed", run_id=run.run_id)
            run.result = result
            run.state = result.state
        finally:
            self._close_files(run)
            if run.result is not None and run.result.state.value in _TERMINAL_STATES:
                self.records.drop(run.run_id)
            remove_stale_temp_files(run.run_dir)
            self._active.pop(run.run_id, None)
            with contextlib.suppress(ValueError):
                self._queue.remove(run)
            self._recent[run.run_id] = run
            if len(self._recent) > 1000:
                self._recent.pop(next(iter(self._recent)))
            run.done.set()
            self._schedule()

    def _reopen_events(self, run: LiveRun) -> None:
        """Take the run's events.jsonl back from the monitor, continuing its numbering."""
        path = run.run_dir / monitor.EVENTS_FILE
        run.run_seq = max(run.run_seq, monitor.last_run_seq(str(path)))
        if run.events_file is not None and not run.events_file.closed:
            return
        try:
            run.events_file = open(path, "ab")  # noqa: SIM115 - closed in _close_files
            if run.events_file.tell() and not _ends_with_newline(path):
                run.events_file.write(b"\n")  # a torn last line (a killed monitor)
        except OSError as exc:
            log.error("events_reopen_failed", run_id=run.run_id, error=str(exc))
            run.events_file = None

    async def _index_completed(
        self, workspace: Path, run_dir: Path, result: ResultRecord
    ) -> IndexErrorInfo | None:
        """Add a completed run to its workspace index (the single writer); on failure mark
        it orphaned. Sets ``result.index_status``; returns the error, if any."""
        try:
            writer = await self._indexes.get(workspace)
            await writer.add_run(run_dir, result)
        except Exception as exc:
            log.error("index_update_failed", run_dir=str(run_dir), error=str(exc))
            result.index_status = IndexStatus.ORPHANED
            # Name the underlying failure (PermissionError...), as the marker does.
            cause = exc.__cause__ if isinstance(exc, RunforgeError) and exc.__cause__ else exc
            result.index_error = IndexErrorInfo(type=type(cause).__name__, message=str(exc))
            try:
                writer = await self._indexes.get(workspace)
                await writer.mark_orphan(result.run_id, exc)
            except Exception as marker_exc:
                log.error("orphan_marker_failed", run_dir=str(run_dir), error=str(marker_exc))
            return result.index_error
        result.index_status = IndexStatus.INDEXED
        return None

    def _write_result(self, run: LiveRun, result: ResultRecord) -> None:
        # After an earlier daemon wrote a verdict, nothing overwrites it with another state.
        previous = read_result(run.run_dir)
        if previous is not None and previous.state is not result.state:
            log.warning(
                "verdict_kept", run_id=run.run_id, kept=previous.state.value, ignored=result.state
            )
            return
        try:
            write_bytes_atomic(run.run_dir / "result.json", _json.encode(result) + b"\n")
        except OSError as exc:
            log.error("result_write_failed", run_id=run.run_id, error=str(exc))

    def _close_files(self, run: LiveRun) -> None:
        """Flush, fsync and close the run's files; a full disk is logged, never raised."""
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
        """Cancel a live run. Returns (already cancelling, seconds to the deadline).

        A queued run ends at once. A running one is cancelled by its monitor, which
        holds the deadline from then on, with or without a daemon: the answer comes once
        the monitor has it."""
        if run.state is RunState.QUEUED and run.started_at is None and run in self._queue:
            run.cancel_requested = True
            self._publish(run, ev.CANCEL_REQUESTED, {"grace_s": 0, "queued": True})
            await self._finish(run, None)
            return False, None
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
        log.info("cancel_requested", run_id=run.run_id, grace_s=grace_s, reply=reply)
        deadline = reply.get("deadline_in_s")
        return bool(reply.get("already")), float(deadline) if deadline is not None else None

    async def shutdown(self, *, keep_runs: bool = False) -> None:
        """Stop accepting runs. With ``keep_runs``, detach from every monitor and leave
        queued runs on disk for the next daemon. Otherwise cancel queued runs and every
        running one, in parallel, each with its own grace, and wait for all verdicts."""
        self.accepting = False
        if keep_runs:
            self._detaching = True
            for run in list(self._active.values()):
                if run.connection is not None:
                    await run.connection.close()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=10.0)
            for run in list(self._active.values()) + list(self._queue):
                self._close_files(run)
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
        self._intents.close()

    # ------------------------------------------------------------------ taking over

    def resume(self, trust_of: Callable[[Path], TrustedWorkspace]) -> int:
        """Take over every run a previous daemon accepted and did not finish (call before
        serving; returns at once, the work goes on in tasks): re-attach to live monitors,
        classify runs that ended meanwhile from their exit status, finish recording
        verdicts already on disk, and queue runs that never started, in their order."""
        make_private(self.records.directory.parent)
        taken = 0
        for record_dir, record in self.records.load_all():
            if record.run_id in self._active or self.find_live(record.run_id):
                continue
            run = _run_from_record(record, record_dir)
            taken += 1
            final = read_result(run.run_dir)
            if final is not None and final.state.value in _TERMINAL_STATES:
                self._active[run.run_id] = run
                self._spawn_task(self._complete_recorded(run, final))
                continue
            situation = probe(record_dir)
            if situation == "never_started":
                try:
                    run.trusted = trust_of(run.workspace)
                except RunforgeError as exc:
                    run.failure_message = f"not started: {exc.message}"
                    run.started_at = None
                    self._active[run.run_id] = run
                    self._spawn_task(self._finish(run, None))
                    continue
                run.events_file = _open_append(run.run_dir / monitor.EVENTS_FILE)
                run.run_seq = monitor.last_run_seq(str(run.run_dir / monitor.EVENTS_FILE))
                self._queue.append(run)
                continue
            run.started_at = (monitor.read_monitor_record(str(record_dir)) or {}).get(
                "started_at", record.request.created_at
            )
            run.state = RunState.RUNNING
            self._active[run.run_id] = run
            run.run_seq = monitor.last_run_seq(str(run.run_dir / monitor.EVENTS_FILE))
            if situation == "running":
                self._spawn_task(self._resume_running(run))
            else:
                self._spawn_task(self._finish(run, self._exit_on_disk(run)))
        self._schedule()
        return taken

    async def _resume_running(self, run: LiveRun) -> None:
        exit_record: dict[str, Any] | None = None
        try:
            exit_record = await self._follow(run)
            if not self._detaching:
                await self._finish(run, exit_record)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None and not self._detaching:
                await self._finish(run, exit_record or self._exit_on_disk(run))

    async def _complete_recorded(self, run: LiveRun, result: ResultRecord) -> None:
        """A verdict an earlier daemon wrote is final: finish what it left undone (the
        index entry is idempotent by run id; run_terminal only if missing), never
        classify again."""
        await self._record_verdict(run, result)

    # ------------------------------------------------------------------ durable state

    def _save_inflight(self, run: LiveRun) -> None:
        if run.inflight is None:
            return
        try:
            self._inflight_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_bytes_atomic(
                self._inflight_dir / f"{run.run_id}.json", _json.encode(run.inflight), 0o600
            )
        except OSError as exc:
            log.error("inflight_record_failed", run_id=run.run_id, error=str(exc))

    def _drop_inflight(self, run: LiveRun) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._inflight_dir / f"{run.run_id}.json").unlink()

    async def reconcile(self) -> list[tuple[str, RunState]]:
        """Classify every run a previous daemon left in flight (call before serving)."""
        # Private like the runtime directory: it names pids and workspaces.
        state_dir = self._inflight_dir.parent
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        cancelled = self._intents.recorded()
        if not self._inflight_dir.is_dir():
            self._intents.clear()
            return []
        outcomes = []
        decoder = msgspec.json.Decoder(InflightRecord)
        for path in sorted(self._inflight_dir.glob("*.json")):
            try:
                record = decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                log.error("inflight_record_unreadable", path=str(path), error=str(exc))
                path.unlink(missing_ok=True)
                continue
            state = await self._reconcile_one(record, record.run_id in cancelled)
            outcomes.append((record.run_id, state))
            path.unlink(missing_ok=True)
        self._intents.clear()
        return outcomes

    async def _reconcile_one(self, record: InflightRecord, cancel_requested: bool) -> RunState:
        workspace = Path(record.workspace)
        run_dir = workspace / record.run_dir
        identity = ProcessIdentity(record.pid, record.create_time)
        same_boot = record.boot_id == boot_id()
        alive = same_boot and is_same_live_process(identity)
        killed = False
        if same_boot:
            # Its pipes died with the old daemon, so it cannot be adopted robustly: a live
            # trainer is cancelled with its grace and its tree killed at the deadline;
            # workers it left behind are killed either way.
            tree = ProcessTree(identity, record.descendants)
            tree.refresh()
            if alive:
                tree.terminate_leader()
                deadline = time.monotonic() + record.cancel_grace_s
                while time.monotonic() < deadline and is_same_live_process(identity):
                    tree.refresh()
                    await asyncio.sleep(0.05)
                killed = is_same_live_process(identity)
                cancel_requested = True
            tree.kill_all()
        seen = _events_seen(run_dir / "events.jsonl")
        marker = read_cancelled_marker(run_dir)
        run_json = run_json_readable(run_dir)
        if run_json:
            # Nobody read its stderr while the daemon was down, so artifacts_written may
            # never have been seen; run.json, which the runner writes last, is the proof.
            state, reason = (
                RunState.COMPLETED,
                (
                    "completed"
                    if seen["artifacts_written"]
                    else "finished while the daemon was down"
                ),
            )
        elif marker is not None or seen["run_cancelled"]:
            verdict = classify_terminal_state(
                exit_code=1,
                cancel_requested=True,
                artifacts_written=False,
                run_json_exists=run_json,
                marker_valid=marker is not None,
                run_cancelled=seen["run_cancelled"],
                killed=killed,
            )
            state, reason = verdict.state, verdict.reason
        elif alive:
            state = RunState.CANCELLED_FORCED
            reason = "cancelled when the daemon restarted after a crash: " + (
                "still running at the grace deadline, process tree killed"
                if killed
                else "exited with no .cancelled marker or run_cancelled"
            )
        else:
            state = RunState.LOST
            reason = "the daemon died while the run was in flight; the trainer is gone"
        result = ResultRecord(
            run_id=record.run_id,
            run_dir=record.run_dir,
            state=state,
            started_at=record.started_at,
            finished_at=utc_now(),
            reason=reason,
            cancel_requested=cancel_requested,
            partial_artifacts=list(marker.partial_artifacts or []) if marker else [],
            final_metrics=_final_metrics(run_dir) if state is RunState.COMPLETED else {},
        )
        with contextlib.suppress(OSError):
            write_bytes_atomic(run_dir / "result.json", _json.encode(result) + b"\n")
        if state is RunState.COMPLETED:
            await self._index_completed(workspace, run_dir, result)  # idempotent by run id
            with contextlib.suppress(OSError):
                write_bytes_atomic(run_dir / "result.json", _json.encode(result) + b"\n")
        self._append_terminal_event(run_dir, record, result)
        log.info("run_reconciled", run_id=record.run_id, state=state.value, was_alive=alive)
        return state

    def _append_terminal_event(
        self, run_dir: Path, record: InflightRecord, result: ResultRecord
    ) -> None:
        """Close the run's event log with the terminal event its old daemon never wrote,
        so that a follower replaying it sees the end."""
        path = run_dir / "events.jsonl"
        try:
            with open(path, "rb") as handle:
                last = max(
                    (
                        _event_decoder.decode(line).run_seq
                        for line in handle
                        if line.strip().startswith(b"{") and line.endswith(b"\n")
                    ),
                    default=0,
                )
        except (OSError, msgspec.DecodeError):
            last = 0
        event = self._publisher.stamp(
            ev.RUN_TERMINAL,
            msgspec.to_builtins(result),
            workspace=record.workspace,
            run_id=record.run_id,
            run_seq=last + 1,
        )
        with contextlib.suppress(OSError), open(path, "ab") as handle:
            handle.write(b"\n" + _json.encode(event) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._publisher.send(ev.run_topic(record.workspace, record.run_id, ev.RUN_TERMINAL), event)

    # ------------------------------------------------------------------ replay

    def flush_events(self, run_id: str) -> LiveRun | None:
        """Push a live run's buffered events to disk (before a replay reads them)."""
        live = self.find_live(run_id)
        if live is not None:
            self._flush(live)
        return live


def read_events(path: Path, since: int, limit: int) -> tuple[list[Event], int]:
    """Persisted events with ``run_seq > since`` (at most ``limit``) and the highest
    ``run_seq`` on disk. A torn last line (a crash mid-write) is skipped."""
    events: list[Event] = []
    last = 0
    with open(path, "rb") as handle:
        for line in handle:
            try:
                event = _event_decoder.decode(line)
            except msgspec.DecodeError:
                continue
            last = max(last, event.run_seq)
            if event.run_seq > since and len(events) < limit:
                events.append(event)
    return events, last


def run_json_readable(run_dir: Path) -> bool:
    """``run.json`` exists and is a JSON object (a torn write is not a completed run)."""
    try:
        return isinstance(msgspec.json.decode((run_dir / "run.json").read_bytes()), dict)
    except (OSError, msgspec.DecodeError):
        return False


def _final_metrics(run_dir: Path) -> dict[str, float]:
    """Numeric top-level values of the runner's ``metrics.json``."""
    try:
        document = msgspec.json.decode((run_dir / "metrics.json").read_bytes())
    except (OSError, msgspec.DecodeError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        k: float(v)
        for k, v in document.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _events_seen(path: Path) -> dict[str, bool]:
    seen = {"artifacts_written": False, "run_cancelled": False}
    # A cheap byte search: the file holds our own encoding of Event, type before data.
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        for line in handle:
            for kind in seen:
                if b'"type":"' + kind.encode() + b'"' in line:
                    seen[kind] = True
    return seen


def child_environment(base: Mapping[str, str], runner_path_dir: Path) -> dict[str, str]:
    """The trainer's environment: the daemon's, minus anything that would put the daemon's
    own packages on the trainer's path, plus a PYTHONPATH holding only the runner."""
    env = {
        k: v
        for k, v in base.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "NOTIFY_SOCKET")
        and not k.startswith(("WATCHDOG_", "RUNFORGED_"))
    }
    env["PYTHONPATH"] = str(runner_path_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


_TERMINAL_STATES = frozenset(
    s.value
    for s in (
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CANCELLED_GRACEFUL,
        RunState.CANCELLED_FORCED,
        RunState.LOST,
    )
)


def read_result(run_dir: Path) -> ResultRecord | None:
    """The daemon's verdict in ``result.json``, or None (absent or unreadable)."""
    try:
        return _result_decoder.decode((run_dir / "result.json").read_bytes())
    except (OSError, msgspec.DecodeError):
        return None


def make_private(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)


def _has_terminal_event(path: Path) -> bool:
    needle = b'"type":"' + ev.RUN_TERMINAL.encode() + b'"'
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        return any(needle in line for line in handle)
    return False


def _ends_with_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True


def _open_append(path: Path) -> Any:
    try:
        return open(path, "ab")
    except OSError as exc:
        log.error("events_open_failed", path=str(path), error=str(exc))
        return None


def _run_from_record(record: AcceptedRecord, record_dir: Path) -> LiveRun:
    """The in-memory run of a record a previous daemon left (trust is checked again
    before a queued one starts)."""
    workspace = Path(record.workspace)
    run = LiveRun(
        run_id=record.run_id,
        workspace=workspace,
        trusted=None,
        request=record.request,
        argv=record.spec.argv,
        env=record.spec.env,
        grace_s=record.spec.grace_s,
        max_concurrent=record.max_concurrent,
        max_concurrent_global=record.max_concurrent_global,
        max_log_bytes=record.spec.max_log_bytes,
        record_dir=record_dir,
        accepted_ns=record.accepted_ns,
        resumed=True,
    )
    run.topic_prefix = ev.run_topic_prefix(record.workspace, record.run_id)
    return run
