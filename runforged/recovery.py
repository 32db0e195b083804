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
- anything else is ``skipped`` with ``MISSING_RUN_JSON``, ``CORRUPT_RUN_JSON`` or
  ``READ_ERROR`` and a message.

The new entries are appended in one index write, oldest first; after that write, and
only then, the ``.index-orphan`` marker of each run it indexed is deleted. Nothing else
on disk is modified. A second call finds everything indexed and writes nothing.

Cost is linear in the number of folders: one directory listing for ``.ml/runs``, one
per folder not already indexed, and one read per file an entry needs. Blocking: the
daemon runs it in a worker thread through ``IndexWriter``, which serialises it with
every other index write.
"""

from __future__ import annotations

import os
from collections.abc import Container

import structlog

from protocol.errors import ErrorCode
from protocol.records import (
    IndexEntry,
    RecoveryItem,
    RecoveryReason,
    RecoveryReport,
    RecoverySkip,
    RecoverySkipError,
    ResultRecord,
)
from runforged.errors import RunforgeError
from runforged.index import RunIndex
from runforged.index_entry import (
    INDEX_ORPHAN_MARKER,
    REQUEST_JSON,
    RESULT_JSON,
    RUN_JSON,
    RunFolderError,
    cancelled_run_id,
    entry_from_files,
    read_request,
    read_result,
    read_run_json,
    relative_run_dir,
    sort_timestamp,
    utc_now_iso,
    was_cancelled,
)
from runforged.paths import RUNS_DIR

log = structlog.get_logger(__name__)


def run_folder_names(runs_dir: str) -> list[str]:
    """Names of the run folders in ``.ml/runs``, sorted (so reports are reproducible).

    Hidden entries are not runs (a run id never starts with a dot).
    """
    try:
        with os.scandir(runs_dir) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"the runs folder {runs_dir} could not be read: {exc.strerror or exc}",
            remediation=f"make {runs_dir} a readable directory",
            details={"path": runs_dir, "error_type": type(exc).__name__},
        ) from exc


def recover_index(index: RunIndex, in_flight: Container[str]) -> RecoveryReport:
    """Add every recoverable run folder to ``index`` and say what was done.

    ``in_flight`` holds the run ids (= folder names) the daemon owns right now; only
    ``in`` is used, so a live view of the daemon's table is fine. Raises RunforgeError
    (INDEX_WRITE_FAILED) when the index cannot be written: then no marker is deleted.
    """
    index.refresh()
    runs_dir = str(index.workspace / RUNS_DIR)
    names = run_folder_names(runs_dir)
    already_indexed = 0
    in_flight_count = 0
    candidates: list[tuple[IndexEntry, bool]] = []  # (entry, had an .index-orphan marker)
    candidate_ids: dict[str, str] = {}  # run id -> run_dir of the first folder naming it
    skipped: list[RecoverySkip] = []
    cancelled: list[RecoveryItem] = []

    for name in names:
        if name in in_flight:
            in_flight_count += 1
            continue
        rel_dir = relative_run_dir(name)
        if index.lists_run_dir(rel_dir):
            already_indexed += 1
            continue
        folder = f"{runs_dir}/{name}"
        try:
            files = set(os.listdir(folder))
            result = read_result(f"{folder}/{RESULT_JSON}") if RESULT_JSON in files else None
            if RUN_JSON not in files:
                if was_cancelled(files, result):
                    cancelled.append(_cancelled_item(folder, rel_dir, files, result))
                else:
                    skipped.append(_missing_run_json(rel_dir, result))
                continue
            run, mtime_ns = read_run_json(f"{folder}/{RUN_JSON}")
            if run.run_id in index:
                already_indexed += 1
                continue
            if was_cancelled(files, result):
                cancelled.append(
                    RecoveryItem(
                        run_id=run.run_id, run_dir=rel_dir, reason=RecoveryReason.CANCELLED
                    )
                )
                continue
            if run.run_id in candidate_ids:
                raise RunFolderError(
                    RecoverySkipError.CORRUPT_RUN_JSON,
                    f"run id {run.run_id} is also the run of {candidate_ids[run.run_id]}",
                )
            request = read_request(f"{folder}/{REQUEST_JSON}") if REQUEST_JSON in files else None
            entry = entry_from_files(name, run, mtime_ns, request, result)
        except RunFolderError as exc:
            skipped.append(RecoverySkip(run_dir=rel_dir, error=exc.error, message=exc.message))
            continue
        except OSError as exc:
            skipped.append(
                RecoverySkip(
                    run_dir=rel_dir,
                    error=RecoverySkipError.READ_ERROR,
                    message=f"run folder could not be read: {exc.strerror or exc}",
                )
            )
            continue
        candidate_ids[run.run_id] = rel_dir
        candidates.append((entry, INDEX_ORPHAN_MARKER in files))

    # Oldest first, so the index stays "newest last" as far as recovery can make it.
    candidates.sort(key=lambda c: (sort_timestamp(c[0].created_at), c[0].run_dir or ""))
    file_existed = index.file_exists
    added = index.commit([entry for entry, _ in candidates], ensure_file=True)
    added_ids = {id(entry) for entry in added}
    recovered: list[RecoveryItem] = []
    for entry, had_marker in candidates:
        if id(entry) not in added_ids:
            # Someone else indexed it between our scan and our write (merged in commit).
            already_indexed += 1
            continue
        reason = (
            RecoveryReason.INDEX_ORPHAN_MARKER if had_marker else RecoveryReason.PRE_EXISTING_ORPHAN
        )
        assert entry.run_dir is not None  # entries built from a folder always have one
        recovered.append(RecoveryItem(run_id=entry.run_id, run_dir=entry.run_dir, reason=reason))
        if had_marker:
            _delete_stale_marker(index, entry.run_dir)

    report = RecoveryReport(
        scanned_run_dirs=len(names),
        already_indexed=already_indexed,
        recovered=recovered,
        skipped=skipped,
        cancelled_excluded=cancelled,
        recovered_at=utc_now_iso(),
        in_flight=in_flight_count,
        corrupt_index_kept_as=index.take_corrupt_kept_as(),
        index_created=not file_existed and index.file_exists,
    )
    log.info(
        "index_recovered",
        workspace=str(index.workspace),
        scanned_run_dirs=report.scanned_run_dirs,
        already_indexed=report.already_indexed,
        recovered=len(recovered),
        skipped=len(skipped),
        cancelled_excluded=len(cancelled),
        in_flight=in_flight_count,
        corrupt_index_kept_as=report.corrupt_index_kept_as,
    )
    return report


def _cancelled_item(
    folder: str, rel_dir: str, files: set[str], result: ResultRecord | None
) -> RecoveryItem:
    return RecoveryItem(
        run_id=cancelled_run_id(folder, files, result),
        run_dir=rel_dir,
        reason=RecoveryReason.CANCELLED,
    )


def _missing_run_json(rel_dir: str, result: ResultRecord | None) -> RecoverySkip:
    if result is not None:
        message = f"no run.json: the run ended {result.state.value} without completing"
    else:
        message = "no run.json: the run never completed"
    return RecoverySkip(run_dir=rel_dir, error=RecoverySkipError.MISSING_RUN_JSON, message=message)


def _delete_stale_marker(index: RunIndex, rel_dir: str) -> None:
    """The run is indexed now, so its ``.index-orphan`` marker no longer tells the truth."""
    marker = index.workspace / rel_dir / INDEX_ORPHAN_MARKER
    try:
        os.unlink(marker)
    except FileNotFoundError:
        pass
    except OSError as exc:
        # The run is indexed either way; a marker left behind is ignored for indexed runs.
        log.warning("stale_orphan_marker_not_deleted", path=str(marker), error=str(exc))
