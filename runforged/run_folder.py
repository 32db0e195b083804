"""The run folder: every file of ``<workspace>/.ml/runs/<run id>/`` the daemon reads or
writes, and the only module that opens one.

Each document has one reader and one strictness:

================  ==========================================================  ===========
file              reader                                                      when unusable
================  ==========================================================  ===========
``run.json``      ``read_run_json`` / ``run_json_usable``: the fields an       RunFolderError
                  index entry needs, checked (id, zoned time, sha256)          / False
``request.json``  ``read_request`` / ``load_request``: ``RequestRecord``       RunFolderError
                                                                              / None
``result.json``   ``read_result`` / ``load_result``: ``ResultRecord``          RunFolderError
                                                                              / None
``.cancelled``    ``read_cancelled_marker``: the cancelled v1.0.0 schema,      None (absent)
                  a regular file of at most 1 MiB
``.index-orphan`` ``read_index_orphan_error``                                  a message
``metrics.json``  ``final_metrics``: its numeric top-level values              {}
``events.jsonl``  ``read_events`` / ``events_seen`` / ``last_run_seq`` /       torn lines skipped
                  ``count_events``
``logs.txt``      ``count_log_lines`` (a torn last line is not counted)       0
``.executor/``    a cluster run's exchange with its entrypoint (``spec.json``,  None (absent)
                  ``control.json`` written here; ``output`` followed through
                  ``open_executor_stream``; ``exit.json`` by
                  ``read_executor_exit``)
documents         ``read_document``: any JSON (show, metrics, ...)             RunforgeError
================  ==========================================================  ===========

The ``read_*`` functions raise (recovery and the index say why a folder is skipped);
``load_*`` return None (the live path and the observability reads carry on without).
Every open goes through ``_open_for_reading``, ``_open_small_regular_file`` or
``open_for_append``, so containment rules for hostile run folders belong here.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import msgspec

from runforge_contract import layout
from runforge_contract.atomicio import write_bytes_atomic
from runforge_contract.layout import (
    CANCELLED_MARKER,
    CONTROL_FILE,
    EVENTS_FILE,
    EXECUTOR_DIR,
    EXIT_FILE,
    INDEX_FILE,
    INDEX_ORPHAN_MARKER,
    LOGS_FILE,
    METRICS_FILE,
    OUTPUT_FILE,
    REQUEST_FILE,
    RESULT_FILE,
    RUN_FILE,
    RUNS_DIR,
    relative_run_dir,
)
from runforge_contract.run_ids import MARKER_RUN_ID_PATTERN
from runforge_contract.timestamps import parse_timestamp, utc_now
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import Event
from runforge_protocol.records import (
    IndexErrorInfo,
    IndexOrphanMarker,
    RecoverySkipError,
    RequestRecord,
    ResultRecord,
)
from runforged.errors import RunforgeError

__all__ = [
    "CANCELLED_MARKER",
    "EVENTS_FILE",
    "INDEX_ORPHAN_MARKER",
    "LOGS_FILE",
    "REQUEST_FILE",
    "RESULT_FILE",
    "RUNS_DIR",
    "RUN_FILE",
    "layout",
    "relative_run_dir",
]

_json = msgspec.json.Encoder()

# --------------------------------------------------------------------------- opening


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


def _open_small_regular_file(path: Path, max_bytes: int) -> bytes | None:
    """A file written by the trainer, read defensively: None unless it is a regular file
    (not a symlink, not a FIFO: O_NONBLOCK so that one planted here cannot hang the
    daemon) of at most ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if len(data) > max_bytes else data


def open_for_append(run_dir: Path, name: str) -> IO[bytes]:
    """``events.jsonl`` or ``logs.txt``, opened for appending (the caller closes it)."""
    if name not in (EVENTS_FILE, LOGS_FILE):
        raise ValueError(f"{name} is not an append-only file of a run folder")
    return open(run_dir / name, "ab")  # the caller owns it


def list_files(run_dir: Path) -> set[str]:
    """The names in a run folder; raises RunFolderError when it cannot be listed."""
    try:
        return set(os.listdir(run_dir))
    except OSError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"run folder could not be listed: {exc.strerror}"
        ) from exc


def list_run_folders(runs_dir: str, *, runs_fd: int | None = None) -> list[str]:
    """Names of the run folders in ``.ml/runs`` (read through ``runs_fd`` when it is
    open), sorted (so reports are reproducible); none when it does not exist.

    Hidden entries are not runs (a run id never starts with a dot).
    """
    try:
        with os.scandir(runs_dir if runs_fd is None else runs_fd) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise unreadable_runs_folder(runs_dir, exc) from exc


def open_runs_folder(runs_dir: str) -> int:
    """A descriptor of ``.ml/runs`` for reads relative to it; raises OSError."""
    return os.open(runs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_run_folder(name: str, *, runs_fd: int) -> int:
    """A descriptor of run folder ``name`` of the open runs folder; raises OSError."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=runs_fd)


def unreadable_runs_folder(runs_dir: str, exc: OSError) -> RunforgeError:
    return RunforgeError(
        ErrorCode.INVALID_PATH,
        f"the runs folder {runs_dir} could not be read: {exc.strerror or exc}",
        remediation=f"make {runs_dir} a readable directory",
        details={"path": runs_dir, "error_type": type(exc).__name__},
    )


def exists(run_dir: Path) -> bool:
    return run_dir.is_dir()


# --------------------------------------------------------------------------- errors


class RunFolderError(Exception):
    """A run folder whose files cannot make an index entry; ``error`` says which way."""

    def __init__(self, error: RecoverySkipError, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def file_error(file_name: str, exc: OSError) -> RunFolderError:
    """Why a run folder cannot make an entry when its file ``file_name`` failed to read."""
    if file_name == RUN_FILE and isinstance(exc, FileNotFoundError):
        return RunFolderError(RecoverySkipError.MISSING_RUN_JSON, "run.json not found")
    reason = exc.strerror or type(exc).__name__
    return RunFolderError(RecoverySkipError.READ_ERROR, f"{file_name} could not be read: {reason}")


# --------------------------------------------------------------------------- run.json

_SHA256_HEX = re.compile(r"[a-f0-9]{64}")


class _Dataset(msgspec.Struct):
    fingerprint_sha256: str


class _Artifacts(msgspec.Struct):
    model_pkl: str


class RunJson(msgspec.Struct):
    """The part of ``run.json`` (run schema v0.2.2.1 to v0.3.6) the daemon relies on: what
    an index entry needs. A ``run.json`` without it is not a completed run."""

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


def read_run_json(path: str, *, dir_fd: int | None = None) -> tuple[RunJson, int]:
    """``run.json`` at ``path`` and its modification time (ns); raises RunFolderError."""
    try:
        data, mtime_ns = read_file_with_mtime(path, dir_fd=dir_fd)
    except OSError as exc:
        raise file_error(RUN_FILE, exc) from exc
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


def run_json_usable(run_dir: Path) -> bool:
    """Whether the run's ``run.json`` is one ``read_run_json`` accepts (a torn or partial
    write is not a completed run)."""
    try:
        read_run_json(str(run_dir / RUN_FILE))
    except RunFolderError:
        return False
    return True


# --------------------------------------------------------------------------- request.json


def read_request(path: str, *, dir_fd: int | None = None) -> RequestRecord:
    """``request.json`` at ``path``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        data = read_file(path, dir_fd=dir_fd)
    except OSError as exc:
        raise file_error(REQUEST_FILE, exc) from exc
    return decode_request(data)


def decode_request(data: bytes) -> RequestRecord:
    """The content of a ``request.json``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        return _request_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"request.json could not be read: {exc}"
        ) from exc


def load_request(run_dir: Path) -> RequestRecord | None:
    """The run's ``request.json``, None when it is absent or unusable."""
    try:
        return read_request(str(run_dir / REQUEST_FILE))
    except RunFolderError:
        return None


def write_request(run_dir: Path, record: RequestRecord) -> None:
    write_bytes_atomic(run_dir / REQUEST_FILE, _json.encode(record) + b"\n")


# --------------------------------------------------------------------------- result.json


def read_result(path: str, *, dir_fd: int | None = None) -> ResultRecord:
    """``result.json`` at ``path``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        data = read_file(path, dir_fd=dir_fd)
    except OSError as exc:
        raise file_error(RESULT_FILE, exc) from exc
    return decode_result(data)


def decode_result(data: bytes) -> ResultRecord:
    """The content of a ``result.json``; raises RunFolderError (READ_ERROR) if unusable."""
    try:
        return _result_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"result.json could not be read: {exc}"
        ) from exc


def load_result(run_dir: Path) -> ResultRecord | None:
    """The run's ``result.json``, None when it is absent or unusable."""
    try:
        return read_result(str(run_dir / RESULT_FILE))
    except RunFolderError:
        return None


def write_result(run_dir: Path, result: ResultRecord) -> None:
    """Replace the run's ``result.json`` atomically; raises OSError."""
    write_bytes_atomic(run_dir / RESULT_FILE, _json.encode(result) + b"\n")


# --------------------------------------------------------------------------- .cancelled

# A marker is a few hundred bytes; anything this large is not one.
MARKER_MAX_BYTES = 1 << 20
MARKER_SCHEMA_VERSION = "cancelled.v1.0.0"

CancelStep = Literal[
    "dataset_loading", "training", "metrics_computation", "artifact_writing", "shutdown"
]


class CancelledMarker(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``<run dir>/.cancelled`` as the cancelled v1.0.0 schema defines it."""

    schema_version: Literal["cancelled.v1.0.0"]
    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")]
    run_dir: str
    cancelled_at: Annotated[datetime.datetime, msgspec.Meta(tz=True)]  # RFC 3339 date-time
    step: CancelStep
    reason: str = ""
    partial_artifacts: list[str] = []


_marker_decoder = msgspec.json.Decoder(CancelledMarker)


def read_cancelled_marker(run_dir: str | os.PathLike[str]) -> CancelledMarker | None:
    """The run's valid ``.cancelled`` marker, or None (absent, not a regular file (a
    symlink included), too large, not UTF-8 JSON, or not valid against the schema)."""
    data = _open_small_regular_file(Path(run_dir) / CANCELLED_MARKER, MARKER_MAX_BYTES)
    if data is None:
        return None
    try:
        return _marker_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- .index-orphan

_orphan_marker_decoder = msgspec.json.Decoder(IndexOrphanMarker)


def write_index_orphan_marker(workspace: Path, run_id: str, exc: BaseException) -> Path:
    """Write ``<workspace>/.ml/runs/<run_id>/.index-orphan`` (index-orphan schema v1.0.0)
    atomically, recording why the run's index update failed; returns its path.

    The error recorded is the underlying one (``PermissionError``, ``OSError``...) when
    ``exc`` is a RunforgeError raised from it, so the marker says what actually broke.
    """
    if not MARKER_RUN_ID_PATTERN.fullmatch(run_id) or run_id in (".", ".."):
        raise RunforgeError(
            ErrorCode.INVALID_RUN_ID,
            f"{run_id!r} is not a valid run id",
            details={"run_id": run_id},
        )
    cause = exc.__cause__ if isinstance(exc, RunforgeError) and exc.__cause__ else exc
    message = str(cause) or type(cause).__name__
    marker = IndexOrphanMarker(
        run_id=run_id,
        run_dir=relative_run_dir(run_id),
        written_at=utc_now(),
        error=IndexErrorInfo(type=type(cause).__name__, message=message),
        index_path=INDEX_FILE,
    )
    path = workspace / RUNS_DIR / run_id / INDEX_ORPHAN_MARKER
    write_bytes_atomic(path, _json.encode(marker))
    return path


def read_index_orphan_error(run_dir: Path) -> str | None:
    """The error an ``.index-orphan`` marker records, as ``"<type>: <message>"``; None
    when the folder has no marker."""
    try:
        marker = _orphan_marker_decoder.decode(read_file(str(run_dir / INDEX_ORPHAN_MARKER)))
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        return f"unreadable {INDEX_ORPHAN_MARKER} marker: {exc}"
    return f"{marker.error.type}: {marker.error.message}"


def has_index_orphan_marker(folder_name: str, *, dir_fd: int) -> bool:
    """Whether run folder ``folder_name`` (relative to the open runs folder) has a marker;
    a bool, not an exception, in the common case of none (10^5 times per recovery)."""
    return os.access(
        f"{folder_name}/{INDEX_ORPHAN_MARKER}", os.F_OK, dir_fd=dir_fd, follow_symlinks=False
    )


def delete_index_orphan_marker(runs_dir: Path | int, folder_name: str) -> None:
    """Remove run folder ``folder_name``'s marker; ``runs_dir`` is ``.ml/runs`` or an open
    descriptor of it. Raises OSError, but not when the marker is already gone."""
    relative = f"{folder_name}/{INDEX_ORPHAN_MARKER}"
    with contextlib.suppress(FileNotFoundError):
        if isinstance(runs_dir, int):
            os.unlink(relative, dir_fd=runs_dir)
        else:
            os.unlink(runs_dir / relative)


# --------------------------------------------------------------------------- metrics.json


def final_metrics(run_dir: Path) -> dict[str, float]:
    """Numeric top-level values of the runner's ``metrics.json``."""
    try:
        document = msgspec.json.decode(read_file(str(run_dir / METRICS_FILE)))
    except (OSError, msgspec.DecodeError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        k: float(v)
        for k, v in document.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


# --------------------------------------------------------------------------- events.jsonl

_event_decoder = msgspec.json.Decoder(Event)


def _event_lines(run_dir: Path) -> Iterator[bytes]:
    with open(run_dir / EVENTS_FILE, "rb") as handle:
        yield from handle


def has_events(run_dir: Path) -> bool:
    return (run_dir / EVENTS_FILE).is_file()


def read_events(run_dir: Path, since: int, limit: int) -> tuple[list[Event], int]:
    """Persisted events with ``run_seq > since`` (at most ``limit``) and the highest
    ``run_seq`` on disk. A torn last line (a crash mid-write) is skipped. Raises OSError."""
    events: list[Event] = []
    last = 0
    for line in _event_lines(run_dir):
        try:
            event = _event_decoder.decode(line)
        except msgspec.DecodeError:
            continue
        last = max(last, event.run_seq)
        if event.run_seq > since and len(events) < limit:
            events.append(event)
    return events, last


def last_run_seq(run_dir: Path) -> int:
    """The highest ``run_seq`` persisted (0 if none or unreadable)."""
    try:
        return max(
            (
                _event_decoder.decode(line).run_seq
                for line in _event_lines(run_dir)
                if line.strip().startswith(b"{") and line.endswith(b"\n")
            ),
            default=0,
        )
    except (OSError, msgspec.DecodeError):
        return 0


def events_seen(run_dir: Path, kinds: tuple[str, ...]) -> dict[str, bool]:
    """Which of the event types ``kinds`` the run's event log holds."""
    seen = dict.fromkeys(kinds, False)
    # A cheap byte search: the file holds our own encoding of Event, type before data.
    with contextlib.suppress(OSError):
        for line in _event_lines(run_dir):
            for kind in kinds:
                if b'"type":"' + kind.encode() + b'"' in line:
                    seen[kind] = True
    return seen


def append_event(run_dir: Path, event: Event) -> None:
    """Append one event durably after whatever is there (a torn last line included: it is
    closed by a newline first). Errors are swallowed: the log is best effort."""
    with contextlib.suppress(OSError), open(run_dir / EVENTS_FILE, "ab") as handle:
        handle.write(b"\n" + _json.encode(event) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def encode_event_line(event: Event) -> bytes:
    return _json.encode(event) + b"\n"


# --------------------------------------------------------------------------- documents


def read_document(run_dir: Path, name: str) -> Any:
    """A JSON document of the run folder (``run.json``, ``metrics.v1.json``...) as it is;
    None when absent; raises RunforgeError (ARTIFACT_NOT_FOUND) when it is unreadable."""
    path = run_dir / name
    try:
        return msgspec.json.decode(read_file(str(path)))
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        raise RunforgeError(
            ErrorCode.ARTIFACT_NOT_FOUND,
            f"{path.name} of this run cannot be read: {exc}",
            "the file is corrupt; 'runforgectl recover' will report the run folder",
            {"path": str(path)},
        ) from exc


def write_document(run_dir: Path, name: str, data: bytes) -> None:
    """Write an export (``run-summary.md``) into the run folder atomically."""
    write_bytes_atomic(run_dir / name, data)


def count_events(run_dir: Path, kinds: tuple[str, ...]) -> int:
    """How many persisted events are of one of the types ``kinds`` (whole lines only)."""
    needles = [b'"type":"' + kind.encode() + b'"' for kind in kinds]
    count = 0
    with contextlib.suppress(OSError):
        for line in _event_lines(run_dir):
            if line.endswith(b"\n") and any(needle in line for needle in needles):
                count += 1
    return count


def count_log_lines(run_dir: Path) -> int:
    """How many whole lines ``logs.txt`` holds (0 if there is none)."""
    count = 0
    with contextlib.suppress(OSError), open(run_dir / LOGS_FILE, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


# --------------------------------------------------------------------------- .executor/


def write_executor_document(run_dir: Path, name: str, data: bytes) -> None:
    """``spec.json`` or ``control.json`` of a cluster run, atomically (private: they hold
    the trainer's environment)."""
    directory = run_dir / EXECUTOR_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    write_bytes_atomic(directory / name, data, 0o600)


def open_executor_stream(run_dir: Path) -> int | None:
    """A read-only descriptor on the entrypoint's ``output`` stream, None until it exists
    (the caller closes it)."""
    try:
        return os.open(run_dir / EXECUTOR_DIR / OUTPUT_FILE, _READ_FLAGS | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None


def read_executor_exit(run_dir: Path) -> dict[str, Any] | None:
    """The entrypoint's ``exit.json`` (the trainer's exit status), None while absent or
    not (yet) a JSON object."""
    return _executor_document(run_dir, EXIT_FILE)


def read_executor_control(run_dir: Path) -> dict[str, Any] | None:
    """The daemon's ``control.json`` (cancel and kill requests so far), None if absent."""
    return _executor_document(run_dir, CONTROL_FILE)


def _executor_document(run_dir: Path, name: str) -> dict[str, Any] | None:
    data = _open_small_regular_file(run_dir / EXECUTOR_DIR / name, 1 << 16)
    if data is None:
        return None
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return document if isinstance(document, dict) else None
