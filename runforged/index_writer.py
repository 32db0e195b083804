"""The single writer of a workspace's index: group commits, recovery, orphans, in one queue.

Every change to ``.ml/outputs/index.json`` goes through one ``IndexWriter`` per
workspace. Its jobs run one at a time, in arrival order, each in a worker thread so the
event loop keeps serving other clients:

- ``add``: completions are gathered into one batch while a write is in progress, or for
  ``linger_s`` (a few ms) after the first one, and written with ONE rewrite. Each caller
  returns once its entry is durably in the file (or gets the write's error).
- ``recover``: walks the run folders and commits once (``runforged.recovery``).

Because both go through the same queue, a run completing during recovery is neither
lost nor duplicated: its ``add`` waits for the recovery's write, and a run id already
indexed is never appended twice.

When a run completes, the supervisor (and crash reconciliation) call
``IndexWriters.add_completed``: it adds the entry, or on failure writes the run's
``.index-orphan`` marker, and sets ``result.index_status``. The caller writes
``result.json`` before (the entry takes the measured duration and the device from the
outcome it is given) and again after (with the index status). The run stays "in flight"
(in the set given to ``recover``/``orphans``) until that is done.

This module is the only one that writes the index (through ``RunIndex.commit``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from runforge_contract.layout import OUTPUTS_DIR
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import OrphanInfo
from runforge_protocol.records import IndexErrorInfo, IndexStatus, RecoveryReport, ResultRecord
from runforged.disk_formats import IndexEntry
from runforged.errors import RunforgeError
from runforged.index import RunIndex
from runforged.index_entry import build_index_entry
from runforged.orphans import OrphanTracker
from runforged.recovery import recover_index
from runforged.run_folder import (
    RUNS_DIR,
    RunFolderError,
    delete_index_orphan_marker,
    write_index_orphan_marker,
)
from runforged.run_records import remove_stale_temp_files

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Long enough to gather completions that arrive together, far below what a user notices.
DEFAULT_LINGER_S = 0.005


@dataclass
class _AddBatch:
    """Entries to append in one write, each with the future its caller awaits."""

    opened_at: float
    items: list[tuple[IndexEntry, asyncio.Future[bool]]] = field(default_factory=list)


@dataclass
class _Call:
    """Any other blocking work on the index, run in a worker thread."""

    fn: Callable[[], Any]
    future: asyncio.Future[Any]


class IndexWriter:
    """The only writer of one workspace's index. Create with ``await IndexWriter.open()``."""

    def __init__(self, index: RunIndex, *, linger_s: float = DEFAULT_LINGER_S) -> None:
        self.index = index
        self.workspace = index.workspace
        self.orphan_tracker = OrphanTracker(index)
        self._linger_s = linger_s
        self._jobs: deque[_AddBatch | _Call] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._busy = False

    @classmethod
    async def open(cls, workspace: Path, *, linger_s: float = DEFAULT_LINGER_S) -> IndexWriter:
        """Load ``<workspace>/.ml/outputs/index.json`` (in a thread) and return its writer."""
        index = RunIndex(workspace)
        await asyncio.to_thread(index.load)
        return cls(index, linger_s=linger_s)

    @property
    def writes(self) -> int:
        """How many times this writer rewrote index.json."""
        return self.index.writes

    @property
    def busy(self) -> bool:
        """Whether a job (a write or a recovery) is running right now."""
        return self._busy

    async def add(self, entry: IndexEntry) -> bool:
        """Append ``entry``; returns once it is durably in index.json: True if it was
        appended, False if its run id was already indexed. Raises RunforgeError
        (INDEX_WRITE_FAILED) when the write fails; the entry is then not in the index.

        On success a stale ``.index-orphan`` marker of the run is deleted.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        last = self._jobs[-1] if self._jobs else None
        if isinstance(last, _AddBatch):
            last.items.append((entry, future))
        else:
            self._jobs.append(_AddBatch(opened_at=loop.time(), items=[(entry, future)]))
        self._start_worker()
        return await future

    async def add_run(self, run_dir: Path, result: ResultRecord | None = None) -> IndexEntry:
        """Build the index entry of the completed run in ``run_dir`` from its files (and
        ``result``, the outcome about to be written as result.json) and ``add`` it.
        Raises RunFolderError when its files cannot make an entry."""
        entry = await asyncio.to_thread(build_index_entry, self.workspace, run_dir, result)
        await self.add(entry)
        return entry

    async def recover(self, in_flight: Container[str] = frozenset()) -> RecoveryReport:
        """Recover Index (see ``runforged.recovery``), serialised with every other write.

        ``in_flight``: the run ids the daemon owns right now; a live view (dict keys) is
        fine, only ``in`` is used. Those folders are counted in ``report.in_flight``.
        """
        outputs = self.workspace / OUTPUTS_DIR
        # Temp files of index writes that were interrupted (a killed daemon).
        await asyncio.to_thread(remove_stale_temp_files, outputs)
        report: RecoveryReport = await self._call(lambda: recover_index(self.index, in_flight))
        return report

    async def refresh(self) -> None:
        """Merge a change someone else made to index.json (cheap when there is none)."""
        await self._call(self.index.refresh)

    async def orphans(self, in_flight: Container[str] = frozenset()) -> list[OrphanInfo]:
        """The workspace's orphans, newest first (see ``OrphanTracker``)."""
        return await asyncio.to_thread(self.orphan_tracker.orphans, in_flight)

    async def mark_orphan(self, run_id: str, exc: BaseException) -> Path:
        """Write the ``.index-orphan`` marker of ``run_id`` after its index update failed
        with ``exc``; the run shows as an orphan (with that error) from now on."""
        path = await asyncio.to_thread(write_index_orphan_marker, self.workspace, run_id, exc)
        self.orphan_tracker.forget(run_id)
        return path

    async def aclose(self) -> None:
        """Wait until every queued job is done (the daemon calls this when stopping)."""
        while self._worker is not None:
            await asyncio.shield(self._worker)

    # ------------------------------------------------------------------ the queue

    async def _call(self, fn: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Call(fn=fn, future=future))
        self._start_worker()
        return await future

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._jobs:
                job = self._jobs[0]
                if isinstance(job, _AddBatch):
                    # Let the rest of a burst join; later adds go into this same batch.
                    delay = job.opened_at + self._linger_s - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                self._jobs.popleft()
                self._busy = True
                try:
                    if isinstance(job, _AddBatch):
                        await self._commit(job)
                    else:
                        await self._run(job)
                finally:
                    self._busy = False
        finally:
            self._worker = None

    async def _commit(self, batch: _AddBatch) -> None:
        entries = [entry for entry, _ in batch.items]
        try:
            added = await asyncio.to_thread(self._commit_and_clear_markers, entries)
        except BaseException as exc:
            for _, future in batch.items:
                if not future.done():
                    future.set_exception(_as_runforge_error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        added_ids = {id(entry) for entry in added}
        for entry, future in batch.items:
            if not future.done():
                future.set_result(id(entry) in added_ids)

    async def _run(self, call: _Call) -> None:
        try:
            value = await asyncio.to_thread(call.fn)
        except BaseException as exc:
            if not call.future.done():
                call.future.set_exception(_as_runforge_error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        if not call.future.done():
            call.future.set_result(value)

    def _commit_and_clear_markers(self, entries: list[IndexEntry]) -> list[IndexEntry]:
        added = self.index.commit(entries)
        runs_root = self.workspace / RUNS_DIR
        for entry in added:
            folder = Path(entry.run_dir) if entry.run_dir is not None else None
            # Only folders directly under .ml/runs: the entry's run_dir came from a caller.
            if folder is None or folder.parent != Path(RUNS_DIR) or folder.name in ("", ".", ".."):
                continue
            try:
                delete_index_orphan_marker(runs_root, folder.name)
            except OSError as exc:
                # The run is durably indexed; a marker left behind is ignored for it.
                log.warning(
                    "stale_orphan_marker_not_deleted", run_dir=entry.run_dir, error=str(exc)
                )
            self.orphan_tracker.forget(folder.name)
        return added


def _as_runforge_error(exc: BaseException) -> BaseException:
    """Errors a user sees leave as RunforgeError; a bug becomes INTERNAL_ERROR."""
    if isinstance(exc, (RunforgeError, RunFolderError)) or not isinstance(exc, Exception):
        return exc
    return RunforgeError(
        ErrorCode.INTERNAL_ERROR,
        f"index writer failed: {type(exc).__name__}: {exc}",
        details={"error_type": type(exc).__name__},
    )


class IndexWriters:
    """The daemon's table of index writers, one per workspace, opened on first use."""

    def __init__(self, *, linger_s: float = DEFAULT_LINGER_S) -> None:
        self._linger_s = linger_s
        self._writers: dict[Path, IndexWriter] = {}
        self._opening: dict[Path, asyncio.Task[IndexWriter]] = {}

    async def get(self, workspace: Path) -> IndexWriter:
        """The writer of ``workspace`` (an absolute, resolved path)."""
        writer = self._writers.get(workspace)
        if writer is not None:
            return writer
        task = self._opening.get(workspace)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                IndexWriter.open(workspace, linger_s=self._linger_s)
            )
            self._opening[workspace] = task
        try:
            writer = await asyncio.shield(task)
        finally:
            if task.done():
                self._opening.pop(workspace, None)
        self._writers[workspace] = writer
        return writer

    async def add_completed(
        self, workspace: Path, run_dir: Path, result: ResultRecord
    ) -> IndexErrorInfo | None:
        """Add a completed run to its workspace index; on failure mark it orphaned. Sets
        ``result.index_status`` (and ``index_error``); returns the error, if any. Adding a
        run id already indexed changes nothing, so a retry is harmless."""
        try:
            writer = await self.get(workspace)
            await writer.add_run(run_dir, result)
        except Exception as exc:
            log.error("index_update_failed", run_dir=str(run_dir), error=str(exc))
            result.index_status = IndexStatus.ORPHANED
            # Name the underlying failure (PermissionError...), as the marker does.
            cause = exc.__cause__ if isinstance(exc, RunforgeError) and exc.__cause__ else exc
            result.index_error = IndexErrorInfo(type=type(cause).__name__, message=str(exc))
            try:
                writer = await self.get(workspace)
                await writer.mark_orphan(result.run_id, exc)
            except Exception as marker_exc:
                log.error("orphan_marker_failed", run_dir=str(run_dir), error=str(marker_exc))
            return result.index_error
        result.index_status = IndexStatus.INDEXED
        return None

    async def aclose(self) -> None:
        """Wait for every writer's queued jobs."""
        for writer in list(self._writers.values()):
            await writer.aclose()
