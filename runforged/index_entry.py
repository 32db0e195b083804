"""Index entries built from what a run folder records on disk, and the reads that takes.

Where each field of an entry (index schema v1.0.0) comes from:

=================================  ========================================================
``run_id``, ``created_at``         ``run.json``
``dataset_fingerprint_sha256``     ``run.json`` ``dataset.fingerprint_sha256``
``label_column``                   ``run.json``
``model_pkl``                      the run folder + ``run.json`` ``artifacts.model_pkl``
``summary.final_metrics``          ``run.json`` ``metrics`` (accuracy, num_samples,
                                   num_features: the runner's final summary)
``name``                           ``request.json`` ``name``; when empty, the run id (the
                                   schema's own rule: "falls back to run_id when empty")
``preset_id``                      ``request.json`` ``preset``
``summary.duration_ms``            ``result.json`` ``duration_ms`` (spawn to exit, measured
                                   by the daemon; see below when it recorded none)
``summary.device``                 ``result.json`` ``device``, else ``request.json``
``status``                         ``"failed"`` when ``result.json`` says failed or lost,
                                   else ``"succeeded"`` (``run.json`` is the runner's last
                                   write of a successful run)
``run_dir``                        the folder's workspace-relative path
=================================  ========================================================

The daemon writes ``request.json`` before it spawns a run and ``result.json`` when the
run ends (before it indexes the run, and again after with the index status; it also
passes that outcome along, so the entry never depends on re-reading it), so every
run it started has all of these. A run folder written by something else (an older
RunForge extension) has only ``run.json``, and three required fields are recorded
nowhere on disk for it. Those entries carry, and only those:

- ``preset_id`` ``"std-train"`` and ``device`` ``"cpu"``: RunForge's standard preset and
  the device every RunForge run can use. The schema requires a value from its enum.
- ``duration_ms`` (also when a ``result.json`` has none): from ``run.json``
  ``created_at`` to the last modification of ``run.json`` (the runner writes it last),
  0 if the clocks disagree. It is the run's wall time as the file system saw it, not a
  measurement of the process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Container
from pathlib import Path

from runforge_contract.timestamps import parse_timestamp
from runforge_protocol.records import RecoverySkipError, ResultRecord
from runforged.disk_formats import IndexEntry, IndexSummary, RequestRecord
from runforged.outcome import index_status
from runforged.run_folder import (
    CANCELLED_MARKER,
    REQUEST_FILE,
    RESULT_FILE,
    RUN_FILE,
    RUNS_DIR,
    RunFolderError,
    RunJson,
    list_files,
    read_cancelled_marker,
    read_request,
    read_result,
    read_run_json,
    relative_run_dir,
)

# Recorded nowhere for runs the daemon did not start; see the module docstring.
UNRECORDED_PRESET = "std-train"
UNRECORDED_DEVICE = "cpu"


def cancelled_run_id(folder: str, files: Container[str], result: ResultRecord | None) -> str:
    """The run id a cancelled run's files give: its ``.cancelled`` marker, its
    ``result.json``, and only failing both the folder name."""
    if CANCELLED_MARKER in files:
        marker = read_cancelled_marker(folder)
        if marker is not None:
            return marker.run_id
    if result is not None and result.run_id:
        return result.run_id
    return os.path.basename(folder)


def needs_run_json_mtime(result: ResultRecord | None) -> bool:
    """Whether an entry's duration comes from ``run.json``'s modification time."""
    return result is None or result.duration_ms is None


def entry_from_files(
    folder_name: str,
    run: RunJson,
    run_json_mtime_ns: int | None,
    request: RequestRecord | None,
    result: ResultRecord | None,
) -> IndexEntry:
    """The index entry of run folder ``folder_name`` from its decoded files (the entry
    takes ``run.metrics`` as it is: decode a fresh ``run`` per entry).

    ``run_json_mtime_ns`` is needed only when ``result`` does not give the duration
    (``needs_run_json_mtime``); None otherwise.
    """
    rel_dir = relative_run_dir(folder_name)
    if result is not None and result.duration_ms is not None:
        duration_ms = result.duration_ms
    else:
        created = parse_timestamp(run.created_at)
        assert created is not None  # read_run_json refuses run.json without a valid time
        assert run_json_mtime_ns is not None  # see needs_run_json_mtime
        finished_ns = run_json_mtime_ns - int(created.timestamp() * 1_000_000_000)
        duration_ms = max(0, finished_ns // 1_000_000)
    if result is not None:
        device = result.device
    elif request is not None:
        device = request.device
    else:
        device = UNRECORDED_DEVICE
    status = index_status(result)
    # Values most runs share (preset, device, dataset, label column) are interned: an index
    # of 10^5 entries then holds each once instead of 10^5 copies (~30 MB).
    return IndexEntry(
        run_id=run.run_id,
        created_at=run.created_at,
        name=(request.name if request is not None and request.name else run.run_id),
        preset_id=sys.intern(request.preset) if request is not None else UNRECORDED_PRESET,
        status=status,
        summary=IndexSummary(
            duration_ms=duration_ms, final_metrics=run.metrics, device=sys.intern(device)
        ),
        run_dir=rel_dir,
        dataset_fingerprint_sha256=sys.intern(run.dataset.fingerprint_sha256),
        label_column=sys.intern(run.label_column),
        model_pkl=f"{rel_dir}/{run.artifacts.model_pkl.replace(os.sep, '/')}",
    )


def build_index_entry(
    workspace: Path, run_dir: Path, result: ResultRecord | None = None
) -> IndexEntry:
    """The index entry of the run in ``run_dir`` (a folder under ``<workspace>/.ml/runs``),
    from the files on disk.

    ``result`` is the outcome the daemon has just written as ``result.json`` (given so
    that the entry does not depend on reading it back). Without it, ``result.json`` is
    read if present. Raises RunFolderError when the files cannot make an entry.
    """
    folder = Path(os.path.realpath(run_dir))
    runs_root = Path(os.path.realpath(workspace / RUNS_DIR))
    if folder.parent != runs_root:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"{run_dir} is not a run folder under {runs_root}"
        )
    files = list_files(folder)
    if RUN_FILE not in files:
        raise RunFolderError(RecoverySkipError.MISSING_RUN_JSON, "run.json not found")
    run, mtime_ns = read_run_json(str(folder / RUN_FILE))
    request = read_request(str(folder / REQUEST_FILE)) if REQUEST_FILE in files else None
    if result is None and RESULT_FILE in files:
        result = read_result(str(folder / RESULT_FILE))
    return entry_from_files(folder.name, run, mtime_ns, request, result)
