"""Recover Index: put back every completed run that is on disk but missing from the index.

``recover_index`` walks ``.ml/runs/`` once and classifies each folder:

- in flight (the daemon owns the run right now): counted in ``in_flight`` only, no file
  read: a run that has not finished is neither indexed nor broken;
- already indexed: an index entry points at the folder, or lists the run id its
  ``run.json`` names (no file read in the first case, which is the common one);
- cancelled (``result.json`` says cancelled, or the runner's ``.cancelled`` marker with
  no daemon verdict): never indexed, listed in ``cancelled_excluded``;
- recoverable: ``run.json`` (and ``request.json``/``result.json`` when present) make an
  index entry (see ``runforged.index_entry``);
- anything else is ``skipped`` with ``MISSING_RUN_FILE``, ``CORRUPT_RUN_FILE`` or
  ``READ_ERROR`` and a message.

The new entries are appended in one index write, oldest first; after that write, and
only then, the ``.index-orphan`` marker of each run it indexed is deleted (whether there
was one to delete is what tells ``index_orphan_marker`` from ``pre_existing_orphan``).
Nothing else on disk is modified. A second call finds everything indexed and writes
nothing.

Cost is linear in the number of folders, and per folder as small as the file system
allows, since recovery may face 10^5 of them: one listing of ``.ml/runs``, kept open so
files are opened relative to it; a folder not already indexed is first read as the
complete run the daemon leaves: open, one read, close of ``result.json``, ``run.json``
and ``request.json`` (without updating their access times), no listing. Only a folder
that is not that (a file missing or unreadable, a question about another file) is
listed and classified again from its listing, exactly as before. After the write, one
existence check per recovered run for its marker. All in the calling thread: from the
page cache, reader threads would only hand the GIL to each other at every system call
(twice as slow on two cores). Blocking: the daemon runs it in a worker thread through
``IndexWriter``, which serialises it with every other index write.
"""

from __future__ import annotations

import os
from collections.abc import Container
from dataclasses import dataclass, field

import structlog

from runforge_contract.timestamps import sort_timestamp, utc_now
from runforge_protocol.records import (
    RecoveryItem,
    RecoveryReason,
    RecoveryReport,
    RecoverySkip,
    RecoverySkipError,
    ResultRecord,
)
from runforged.disk_formats import IndexEntry
from runforged.index import RunIndex
from runforged.index_entry import cancelled_run_id, entry_from_files, needs_run_json_mtime
from runforged.outcome import was_cancelled
from runforged.run_folder import (
    CANCELLED_MARKER,
    INDEX_ORPHAN_MARKER,
    REQUEST_FILE,
    RESULT_FILE,
    RUN_FILE,
    RUNS_DIR,
    LazyRunFolder,
    RunFolderError,
    classify_lazily,
    decode_request,
    decode_result,
    decode_run_json,
    delete_index_orphan_marker,
    has_index_orphan_marker,
    list_run_folders,
    open_runs_folder,
    reason,
    relative_run_dir,
    unreadable_runs_folder,
)

log = structlog.get_logger(__name__)

# The files of every run the daemon started and saw complete.
_COMPLETE_RUN_FILES = frozenset({RUN_FILE, REQUEST_FILE, RESULT_FILE})


def recover_index(index: RunIndex, in_flight: Container[str]) -> RecoveryReport:
    """Add every recoverable run folder to ``index`` and say what was done.

    ``in_flight`` holds the run ids (= folder names) the daemon owns right now; only
    ``in`` is used, so a live view of the daemon's table is fine. Raises RunforgeError
    (INDEX_WRITE_FAILED) when the index cannot be written: then no marker is deleted.
    """
    index.refresh()
    runs_dir = str(index.workspace / RUNS_DIR)
    try:
        runs_fd = open_runs_folder(runs_dir)
    except (FileNotFoundError, NotADirectoryError):
        return _commit(index, _Scan(), None)  # no runs: still ensures the index file
    except OSError as exc:
        raise unreadable_runs_folder(runs_dir, exc) from exc
    try:
        return _commit(index, _scan(index, in_flight, runs_dir, runs_fd), runs_fd)
    finally:
        os.close(runs_fd)


def _commit(index: RunIndex, scan: _Scan, runs_fd: int | None) -> RecoveryReport:
    """Write what ``scan`` found in one index write, then delete the stale markers."""
    runs_dir = str(index.workspace / RUNS_DIR)
    candidates = scan.candidates
    # Oldest first, so the index stays "newest last" as far as recovery can make it.
    candidates.sort(key=lambda entry: (sort_timestamp(entry.created_at), entry.run_dir or ""))
    file_existed = index.file_exists
    added = index.commit(candidates, ensure_file=True)
    added_ids = {id(entry) for entry in added}
    already_indexed = scan.already_indexed
    recovered: list[RecoveryItem] = []
    for entry in candidates:
        if id(entry) not in added_ids:
            # Someone else indexed it between our scan and our write (merged in commit).
            already_indexed += 1
            continue
        assert runs_fd is not None  # candidates come from a scan of the open runs folder
        assert entry.run_dir is not None  # entries built from a folder always have one
        folder_name = entry.run_dir.rpartition("/")[2]
        had_marker = _delete_stale_marker(runs_fd, runs_dir, folder_name)
        reason = (
            RecoveryReason.INDEX_ORPHAN_MARKER if had_marker else RecoveryReason.PRE_EXISTING_ORPHAN
        )
        recovered.append(RecoveryItem(run_id=entry.run_id, run_dir=entry.run_dir, reason=reason))

    report = RecoveryReport(
        scanned_run_dirs=scan.scanned,
        already_indexed=already_indexed,
        recovered=recovered,
        skipped=scan.skipped,
        cancelled_excluded=scan.cancelled,
        recovered_at=utc_now(),
        in_flight=scan.in_flight,
        corrupt_index_kept_as=index.take_corrupt_kept_as(),
        index_created=not file_existed and index.file_exists,
    )
    log.info(
        "index_recovered",
        workspace=str(index.workspace),
        scanned_run_dirs=report.scanned_run_dirs,
        already_indexed=report.already_indexed,
        recovered=len(recovered),
        skipped=len(report.skipped),
        cancelled_excluded=len(report.cancelled_excluded),
        in_flight=report.in_flight,
        corrupt_index_kept_as=report.corrupt_index_kept_as,
    )
    return report


@dataclass
class _Scan:
    """What the walk of ``.ml/runs`` found, before anything is written."""

    scanned: int = 0
    already_indexed: int = 0
    in_flight: int = 0
    # Just the entries: what else a folder held is not kept (10^5 of them at the write).
    candidates: list[IndexEntry] = field(default_factory=list)
    skipped: list[RecoverySkip] = field(default_factory=list)
    cancelled: list[RecoveryItem] = field(default_factory=list)


def _scan(index: RunIndex, in_flight: Container[str], runs_dir: str, runs_fd: int) -> _Scan:
    scan = _Scan()
    # Symlinks too, so that the report says why each is skipped (none is followed).
    names = list_run_folders(runs_dir, runs_fd=runs_fd, with_symlinks=True)
    scan.scanned = len(names)
    candidate_ids: dict[str, str] = {}  # run id -> run_dir of the first folder naming it
    for name in names:
        if name in in_flight:
            scan.in_flight += 1
            continue
        rel_dir = relative_run_dir(name)
        if index.lists_run_dir(rel_dir):
            scan.already_indexed += 1
            # A recover killed between its index write and its marker deletion left one.
            _delete_stale_marker(runs_fd, runs_dir, name)
            continue
        outcome = _classify_folder(runs_fd, runs_dir, name, index, candidate_ids)
        if outcome is None:
            scan.already_indexed += 1
        elif isinstance(outcome, IndexEntry):
            candidate_ids[outcome.run_id] = rel_dir
            scan.candidates.append(outcome)
        elif isinstance(outcome, RecoverySkip):
            scan.skipped.append(outcome)
        else:
            scan.cancelled.append(outcome)
    return scan


# A run folder is, for recovery: already indexed (None), recoverable, skipped or cancelled.
_Outcome = IndexEntry | RecoverySkip | RecoveryItem | None


def _classify_folder(
    runs_fd: int, runs_dir: str, name: str, index: RunIndex, candidate_ids: dict[str, str]
) -> _Outcome:
    folder = LazyRunFolder(runs_fd, runs_dir, name, assumed=_COMPLETE_RUN_FILES)
    try:
        return classify_lazily(folder, lambda files: _classify(files, index, candidate_ids))
    except OSError as exc:
        return RecoverySkip(
            run_dir=relative_run_dir(name),
            error=RecoverySkipError.READ_ERROR,
            message=f"run folder could not be read: {reason(exc)}",
        )


def _classify(folder: LazyRunFolder, index: RunIndex, candidate_ids: dict[str, str]) -> _Outcome:
    rel_dir = relative_run_dir(folder.name)
    try:
        result = decode_result(folder.read(RESULT_FILE)) if RESULT_FILE in folder else None
        if RUN_FILE not in folder:
            if was_cancelled(result, lambda: CANCELLED_MARKER in folder):
                return RecoveryItem(
                    run_id=cancelled_run_id(folder.path, folder, result),
                    run_dir=rel_dir,
                    reason=RecoveryReason.CANCELLED,
                )
            return _missing_run_json(rel_dir, result)
        if needs_run_json_mtime(result):
            data, mtime_ns = folder.read_with_mtime(RUN_FILE)
        else:
            data, mtime_ns = folder.read(RUN_FILE), None  # one system call less
        run = decode_run_json(data)
        if run.run_id in index:
            return None
        if was_cancelled(result, lambda: CANCELLED_MARKER in folder):
            return RecoveryItem(run_id=run.run_id, run_dir=rel_dir, reason=RecoveryReason.CANCELLED)
        if run.run_id in candidate_ids:
            raise RunFolderError(
                RecoverySkipError.CORRUPT_RUN_JSON,
                f"run id {run.run_id} is also the run of {candidate_ids[run.run_id]}",
            )
        request = decode_request(folder.read(REQUEST_FILE)) if REQUEST_FILE in folder else None
    except RunFolderError as exc:
        return RecoverySkip(run_dir=rel_dir, error=exc.error, message=exc.message)
    return entry_from_files(folder.name, run, mtime_ns, request, result)


def _missing_run_json(rel_dir: str, result: ResultRecord | None) -> RecoverySkip:
    if result is not None:
        message = f"no run.json: the run ended {result.state.value} without completing"
    else:
        message = "no run.json: the run never completed"
    return RecoverySkip(run_dir=rel_dir, error=RecoverySkipError.MISSING_RUN_JSON, message=message)


def _delete_stale_marker(runs_fd: int, runs_dir: str, folder_name: str) -> bool:
    """Delete the ``.index-orphan`` marker of a run just indexed (it no longer tells the
    truth); returns whether there was one."""
    if not has_index_orphan_marker(folder_name, dir_fd=runs_fd):
        return False
    try:
        delete_index_orphan_marker(runs_fd, folder_name)
    except OSError as exc:
        # The run is indexed either way; a marker left behind is ignored for indexed runs.
        log.warning(
            "stale_orphan_marker_not_deleted",
            path=f"{runs_dir}/{folder_name}/{INDEX_ORPHAN_MARKER}",
            error=str(exc),
        )
    return True
