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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from runforge_protocol import events as ev
from runforge_protocol.messages import Counters, Event, RunSummary
from runforge_protocol.records import (
    IndexErrorInfo,
    IndexStatus,
    RequestRecord,
    ResultRecord,
    RunState,
)
from runforge_runner.atomicio import write_bytes_atomic
from runforged import paths
from runforged.cancel import CancelController, classify_terminal_state, read_cancelled_marker
from runforged.errors import RunforgeError
from runforged.index_writer import IndexWriters
from runforged.intents import CancelJournal
from runforged.proctree import ProcessIdentity, ProcessTree, boot_id, is_same_live_process
from runforged.trainer_events import InvalidEventLine, parse_line
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
    trusted: TrustedWorkspace
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
        self._inflight_dir = state_dir / "inflight"
        self._intents = CancelJournal(state_dir / "cancel-intents.log")
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
        """Queue a prepared run (its folder and request.json exist) and start what fits."""
        run.topic_prefix = ev.run_topic_prefix(str(run.workspace), run.run_id)
        run.events_file = open(run.run_dir / "events.jsonl", "ab")  # noqa: SIM115 - lives with the run
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

    def _spawn_task(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one run

    async def _run(self, run: LiveRun) -> None:
        exit_code: int | None = None
        try:
            try:
                run.trusted.recheck()  # trust withdrawn while it was queued: never spawn
                run.log_file = open(run.run_dir / "logs.txt", "ab")  # noqa: SIM115
                proc = await asyncio.create_subprocess_exec(
                    *run.argv,
                    cwd=run.workspace,
                    env=run.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,  # leads its own process group
                )
            except (OSError, RunforgeError) as exc:
                run.failure_message = f"could not start the trainer: {exc}"
                log.warning("spawn_failed", run_id=run.run_id, error=str(exc))
                await self._finish(run, exit_code=None)
                return
            run.pid = proc.pid
            run.state = RunState.RUNNING
            run.started_at = utc_now()
            run.started_mono = time.monotonic()
            run.tree = ProcessTree(proc.pid)
            leader = run.tree.leader
            run.inflight = InflightRecord(
                run_id=run.run_id,
                workspace=str(run.workspace),
                run_dir=run.request.run_dir,
                pid=proc.pid,
                create_time=leader.create_time if leader else 0.0,
                boot_id=boot_id(),
                started_at=run.started_at,
                cancel_grace_s=run.grace_s,
            )
            self._save_inflight(run)
            run.controller = CancelController.on_loop(
                asyncio.get_running_loop(),
                default_grace_s=run.grace_s,
                send_term=lambda: self._terminate_leader(run),
                kill_tree=lambda: self._kill_tree(run),
                publish_countdown=lambda s: self._publish(
                    run, ev.CANCEL_COUNTDOWN, {"seconds_remaining": s}
                ),
            )
            self._publish(run, ev.RUN_SPAWNED, {"pid": proc.pid, "argv": run.argv})
            log.info("run_spawned", run_id=run.run_id, pid=proc.pid)
            if run.cancel_requested:
                # Cancelled between leaving the queue and the spawn: honour it now.
                run.controller.request(run.grace_s)
            assert proc.stdout is not None and proc.stderr is not None
            pumps = [
                asyncio.ensure_future(self._pump(run, proc.stdout, events=False)),
                asyncio.ensure_future(self._pump(run, proc.stderr, events=True)),
            ]
            watcher = asyncio.ensure_future(self._watch_tree(run))
            flusher = asyncio.ensure_future(self._flush_periodically(run))
            exit_code = await proc.wait()
            run.controller.trainer_exited()  # stops the countdown, kills leftover workers
            watcher.cancel()
            # Workers that kept the pipes open were just killed; drain what is left.
            _done, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
            flusher.cancel()
            await self._finish(run, exit_code=exit_code)
        except Exception:
            log.exception("run_supervision_failed", run_id=run.run_id)
            if run.result is None:
                run.failure_message = run.failure_message or "internal error in the daemon"
                await self._finish(run, exit_code=exit_code)

    async def _watch_tree(self, run: LiveRun) -> None:
        assert run.tree is not None
        while True:
            if run.tree.refresh() and run.inflight is not None:
                run.inflight.descendants = run.tree.descendants
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

    def _terminate_leader(self, run: LiveRun) -> None:
        if run.tree is not None:
            delivered = run.tree.terminate_leader()
            log.info("sigterm_sent", run_id=run.run_id, delivered=delivered)

    def _kill_tree(self, run: LiveRun) -> None:
        if run.tree is None:
            return
        # Kill first (every moment counts at a deadline), then look for descendants that
        # appeared since the last refresh and kill those too.
        killed = run.tree.kill_all()
        if run.tree.refresh():
            killed += run.tree.kill_all()
        controller = run.controller
        if controller is not None and controller.killed and not run.escalated:
            run.escalated = True
            self._publish(run, ev.CANCEL_ESCALATED, {"signal": "SIGKILL", "processes": len(killed)})
            log.warning("cancel_escalated", run_id=run.run_id, processes=len(killed))

    async def _pump(self, run: LiveRun, stream: asyncio.StreamReader, *, events: bool) -> None:
        """Copy a pipe into logs.txt; on stderr, turn event lines into published events."""
        pending = b""
        while True:
            chunk = await stream.read(READ_CHUNK)
            if not chunk:
                break
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            if len(pending) > MAX_LOG_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._on_line(run, line, events)
        if pending:
            self._on_line(run, pending, events)

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
        if kind == "run_start" and run.controller is not None:
            run.controller.trainer_announced()  # its handler is in place: SIGTERM is safe
        elif kind == "artifacts_written":
            run.artifacts_written = True
        elif kind == "run_cancelled":
            run.run_cancelled = True
        elif kind == "run_failed":
            error = event.get("error") or {}
            run.failure_message = str(error.get("message") or error.get("code") or "")
        self._publish(run, kind, event)

    def _publish(self, run: LiveRun, kind: str, data: dict[str, Any]) -> None:
        run.run_seq += 1
        event = self._publisher.stamp(
            kind, data, workspace=str(run.workspace), run_id=run.run_id, run_seq=run.run_seq
        )
        if run.events_file is not None and not run.events_file.closed:
            try:
                run.events_file.write(_json.encode(event) + b"\n")
            except OSError as exc:
                log.error("events_persist_failed", run_id=run.run_id, error=str(exc))
        self._publisher.send(run.topic_prefix + kind.encode(), event)

    # ------------------------------------------------------------------ the end of a run

    async def _finish(self, run: LiveRun, *, exit_code: int | None) -> None:
        marker = read_cancelled_marker(run.run_dir)
        controller = run.controller
        killed = bool(controller and controller.killed)
        if run.state is RunState.QUEUED and run.cancel_requested:
            state, reason = RunState.CANCELLED_GRACEFUL, "cancelled while queued; never started"
        elif exit_code is None:
            state, reason = RunState.FAILED, run.failure_message or "the trainer never started"
        else:
            verdict = classify_terminal_state(
                exit_code=exit_code,
                cancel_requested=run.cancel_requested,
                artifacts_written=run.artifacts_written,
                run_json_exists=run_json_readable(run.run_dir),
                marker_valid=marker is not None,
                run_cancelled=run.run_cancelled,
                killed=killed,
            )
            state, reason = verdict.state, verdict.reason
            if state is RunState.FAILED and run.failure_message:
                reason = f"{run.failure_message} ({reason})"
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
        # result.json first: the index entry is built from it (measured duration, device).
        self._write_result(run, result)
        if state is RunState.COMPLETED:
            error = await self._index_completed(run.workspace, run.run_dir, result)
            if error is None:
                self._publish(run, ev.INDEX_UPDATED, {"run_id": run.run_id})
            else:
                self._publish(run, ev.INDEX_ORPHANED, {"error": msgspec.to_builtins(error)})
            self._write_result(run, result)
        run.result = result
        run.state = state
        self._publish(run, ev.RUN_TERMINAL, msgspec.to_builtins(result))
        log.info("run_terminal", run_id=run.run_id, state=state.value, reason=reason)
        self._close_files(run)
        self._drop_inflight(run)
        self._active.pop(run.run_id, None)
        with contextlib.suppress(ValueError):
            self._queue.remove(run)
        self._recent[run.run_id] = run
        if not self._active and not self._queue:
            self._intents.clear()
        if len(self._recent) > 1000:
            self._recent.pop(next(iter(self._recent)))
        run.done.set()
        self._schedule()

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
        try:
            write_bytes_atomic(run.run_dir / "result.json", _json.encode(result) + b"\n")
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
        if run.state is RunState.QUEUED and run.pid is None and run in self._queue:
            run.cancel_requested = True
            self._publish(run, ev.CANCEL_REQUESTED, {"grace_s": 0, "queued": True})
            await self._finish(run, exit_code=None)
            return False, None
        already = run.cancel_requested
        if not already:
            run.cancel_requested = True
            run.state = RunState.CANCELLING
            await self._intents.record(run.run_id)  # durable before any signal
            grace = run.grace_s if grace_s is None else grace_s
            self._publish(run, ev.CANCEL_REQUESTED, {"grace_s": grace})
            log.info("cancel_requested", run_id=run.run_id, grace_s=grace)
        if run.controller is None:
            return already, None  # not spawned yet: _run applies the cancel on spawn
        outcome = run.controller.request(grace_s)
        return outcome.already_cancelling, outcome.deadline_in_s

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
            await asyncio.wait(list(self._tasks), timeout=PIPE_DRAIN_TIMEOUT_S * 2)
        self._intents.close()

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
