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
run ends (when it indexes a run, it passes the outcome it is about to write), so every
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

import errno
import math
import os
import re
import sys
from collections.abc import Container
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from runforge_protocol.records import (
    CancelledMarker,
    IndexEntry,
    IndexSummary,
    RecoverySkipError,
    RequestRecord,
    ResultRecord,
    RunState,
)
from runforged.paths import RUNS_DIR

RUN_JSON = "run.json"
REQUEST_JSON = "request.json"
RESULT_JSON = "result.json"
CANCELLED_MARKER = ".cancelled"
INDEX_ORPHAN_MARKER = ".index-orphan"

# Recorded nowhere for runs the daemon did not start; see the module docstring.
UNRECORDED_PRESET = "std-train"
UNRECORDED_DEVICE = "cpu"

CANCELLED_STATES = frozenset({RunState.CANCELLED_GRACEFUL, RunState.CANCELLED_FORCED})
_FAILED_STATES = frozenset({RunState.FAILED, RunState.LOST})
_SHA256_HEX = re.compile(r"[a-f0-9]{64}")


class _Dataset(msgspec.Struct):
    fingerprint_sha256: str


class _Artifacts(msgspec.Struct):
    model_pkl: str


class RunJson(msgspec.Struct):
    """The part of ``run.json`` (run schema v0.2.2.1 to v0.3.6) an index entry needs."""

    run_id: str
    created_at: str
    dataset: _Dataset
    label_column: str
    metrics: dict[str, float]
    artifacts: _Artifacts


# Created once: decoding is the hot loop of recovery.
_run_json_decoder = msgspec.json.Decoder(RunJson)
_request_decoder = msgspec.json.Decoder(RequestRecord)
_result_decoder = msgspec.json.Decoder(ResultRecord)
_cancelled_decoder = msgspec.json.Decoder(CancelledMarker)


class RunFolderError(Exception):
    """A run folder whose files cannot make an index entry; ``error`` says which way."""

    def __init__(self, error: RecoverySkipError, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


# Larger than any file of a run folder but a pathological one: one read takes it whole.
_READ_SIZE = 1 << 16
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_NO_ATIME = getattr(os, "O_NOATIME", 0)  # Linux only


def read_file(path: str, *, dir_fd: int | None = None) -> bytes:
    """The whole file, with the fewest system calls (recovery reads 10^5 small files):
    open, one read, close. ``path`` is relative to ``dir_fd`` when that is given."""
    fd = _open_for_reading(path, dir_fd)
    try:
        return _read_to_end(fd)
    finally:
        os.close(fd)


def read_file_with_mtime(path: str, *, dir_fd: int | None = None) -> tuple[bytes, int]:
    """Like ``read_file``, with the file's modification time (ns) as of the read."""
    fd = _open_for_reading(path, dir_fd)
    try:
        mtime_ns = os.fstat(fd).st_mtime_ns
        return _read_to_end(fd), mtime_ns
    finally:
        os.close(fd)


def _open_for_reading(path: str, dir_fd: int | None) -> int:
    try:
        # No access-time update: reading a file the first time after it was written would
        # otherwise write its inode back (relatime), doubling the kernel's share of the cost.
        return os.open(path, _READ_FLAGS | _NO_ATIME, dir_fd=dir_fd)
    except PermissionError as exc:
        # Only the file's owner may read without updating the access time.
        if exc.errno != errno.EPERM or not _NO_ATIME:
            raise
    return os.open(path, _READ_FLAGS, dir_fd=dir_fd)


def _read_to_end(fd: int) -> bytes:
    data = os.read(fd, _READ_SIZE)
    if len(data) < _READ_SIZE:
        # A regular file reads short only at its end: no second read to see b"".
        return data
    chunks = [data]
    while chunk := os.read(fd, _READ_SIZE):
        chunks.append(chunk)
    return b"".join(chunks)


def parse_timestamp(value: str) -> datetime | None:
    """An ISO 8601 timestamp with its time zone, or None if it is not one."""
    try:
        # Python 3.10's fromisoformat does not know the "Z" suffix.
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def sort_timestamp(value: str | None) -> float:
    """``value`` as UNIX seconds for ordering runs; missing or unusable times sort oldest."""
    parsed = parse_timestamp(value) if value is not None else None
    return parsed.timestamp() if parsed is not None else -math.inf


def utc_now_iso() -> str:
    """Now, ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_RUNS_DIR_PREFIX = RUNS_DIR.as_posix() + "/"


def relative_run_dir(folder_name: str) -> str:
    """The workspace-relative, forward-slash path of run folder ``folder_name``."""
    return _RUNS_DIR_PREFIX + folder_name


def read_run_json(path: str, *, dir_fd: int | None = None) -> tuple[RunJson, int]:
    """``run.json`` at ``path`` and its modification time (ns); raises RunFolderError."""
    try:
        data, mtime_ns = read_file_with_mtime(path, dir_fd=dir_fd)
    except OSError as exc:
        raise file_error(RUN_JSON, exc) from exc
    return decode_run_json(data), mtime_ns


def decode_run_json(data: bytes) -> RunJson:
    """The content of a ``run.json``; raises RunFolderError (CORRUPT_RUN_JSON) when it
    cannot make an index entry."""
    try:
        run = _run_json_decoder.decode(data)
    except msgspec.DecodeError as exc:
        # ValidationError is a DecodeError: both mean the runner's file is not usable.
        raise RunFolderError(
            RecoverySkipError.CORRUPT_RUN_JSON, f"run.json is not a valid run record: {exc}"
        ) from exc
    if not run.run_id:
        raise RunFolderError(RecoverySkipError.CORRUPT_RUN_JSON, "run.json has an empty run_id")
    if parse_timestamp(run.created_at) is None:
        raise RunFolderError(
            RecoverySkipError.CORRUPT_RUN_JSON,
            f"run.json created_at {run.created_at!r} is not an ISO 8601 time with a zone",
        )
    if not _SHA256_HEX.fullmatch(run.dataset.fingerprint_sha256):
        raise RunFolderError(
            RecoverySkipError.CORRUPT_RUN_JSON,
            "run.json dataset.fingerprint_sha256 is not 64 lowercase hex digits",
        )
    return run


def read_request(path: str, *, dir_fd: int | None = None) -> RequestRecord:
    """``request.json`` at ``path``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        data = read_file(path, dir_fd=dir_fd)
    except OSError as exc:
        raise file_error(REQUEST_JSON, exc) from exc
    return decode_request(data)


def decode_request(data: bytes) -> RequestRecord:
    """The content of a ``request.json``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        return _request_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"request.json could not be read: {exc}"
        ) from exc


def read_result(path: str, *, dir_fd: int | None = None) -> ResultRecord:
    """``result.json`` at ``path``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        data = read_file(path, dir_fd=dir_fd)
    except OSError as exc:
        raise file_error(RESULT_JSON, exc) from exc
    return decode_result(data)


def decode_result(data: bytes) -> ResultRecord:
    """The content of a ``result.json``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        return _result_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"result.json could not be read: {exc}"
        ) from exc


def file_error(file_name: str, exc: OSError) -> RunFolderError:
    """Why a run folder cannot make an entry when its file ``file_name`` failed to read."""
    if file_name == RUN_JSON and isinstance(exc, FileNotFoundError):
        return RunFolderError(RecoverySkipError.MISSING_RUN_JSON, "run.json not found")
    reason = exc.strerror or type(exc).__name__
    return RunFolderError(RecoverySkipError.READ_ERROR, f"{file_name} could not be read: {reason}")


def cancelled_run_id(folder: str, files: Container[str], result: ResultRecord | None) -> str:
    """The run id a cancelled run's files give: its ``.cancelled`` marker, its
    ``result.json``, and only failing both the folder name."""
    if CANCELLED_MARKER in files:
        try:
            marker = _cancelled_decoder.decode(read_file(os.path.join(folder, CANCELLED_MARKER)))
        except (OSError, msgspec.DecodeError):
            pass
        else:
            if marker.run_id:
                return marker.run_id
    if result is not None and result.run_id:
        return result.run_id
    return os.path.basename(folder)


def was_cancelled(files: Container[str], result: ResultRecord | None) -> bool:
    """Whether a run folder holds a cancelled run.

    The daemon's verdict in ``result.json`` wins (it also covers forced cancels, which
    leave no marker, and a completed run that won the race against a cancel). Without
    it, the runner's ``.cancelled`` marker decides.
    """
    if result is not None and result.state.terminal:
        return result.state in CANCELLED_STATES
    return CANCELLED_MARKER in files


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
    status = "failed" if result is not None and result.state in _FAILED_STATES else "succeeded"
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

    ``result`` is the outcome the daemon is about to write as ``result.json``: a run is
    indexed when it completes, before that file exists. Without it, ``result.json`` is
    read if present. Raises RunFolderError when the files cannot make an entry.
    """
    folder = Path(os.path.realpath(run_dir))
    runs_root = Path(os.path.realpath(workspace / RUNS_DIR))
    if folder.parent != runs_root:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"{run_dir} is not a run folder under {runs_root}"
        )
    try:
        files = set(os.listdir(folder))
    except OSError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"run folder could not be listed: {exc.strerror}"
        ) from exc
    if RUN_JSON not in files:
        raise RunFolderError(RecoverySkipError.MISSING_RUN_JSON, "run.json not found")
    run, mtime_ns = read_run_json(str(folder / RUN_JSON))
    request = read_request(str(folder / REQUEST_JSON)) if REQUEST_JSON in files else None
    if result is None and RESULT_JSON in files:
        result = read_result(str(folder / RESULT_JSON))
    return entry_from_files(folder.name, run, mtime_ns, request, result)
