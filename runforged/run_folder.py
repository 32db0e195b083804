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
                  ``open_executor_stream``; ``exit.json``, ``control.json``
                  read by ``read_executor_document``)
documents         ``read_document``: any JSON (show, metrics, ...)             RunforgeError
================  ==========================================================  ===========

A folder of ``.ml/runs`` that recovery or the orphan tracker classifies is looked at
through ``LazyRunFolder`` (``classify_lazily``): taken for a complete run first, listed
only when that cannot answer.

The ``read_*`` functions raise (recovery and the index say why a folder is skipped);
``load_*`` return None (the live path and the observability reads carry on without).

Containment: a run folder is written by the trainer and lies in a workspace that may be
hostile, so every path below the workspace is opened with ``runforged.beneath``: relative
to the workspace, following no symlink (``.ml``, ``.ml/runs``, a run folder or a file
that is a symlink is refused, whatever it points to), regular files only, non-blocking (a
FIFO cannot hold a thread), each kind of file under a size cap. What a trainer wrote is
checked before it reaches the index, a result or a reply (``unsafe_run_json``,
``safe_partial_artifacts``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, Literal, TypeVar

import msgspec

from runforge_contract import layout
from runforge_contract.event_log import run_seq_of
from runforge_contract.layout import (
    CANCELLED_MARKER,
    EVENTS_FILE,
    EXECUTOR_DIR,
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
from runforge_contract.run_ids import MARKER_RUN_ID_PATTERN, is_valid_run_id
from runforge_contract.timestamps import parse_timestamp, utc_now
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import Event
from runforge_protocol.records import IndexErrorInfo, RecoverySkipError, ResultRecord
from runforged import beneath
from runforged.disk_formats import IndexOrphanMarker, RequestRecord
from runforged.errors import RunforgeError

__all__ = [
    "CANCELLED_MARKER",
    "EVENTS_FILE",
    "INDEX_FILE",
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
_T = TypeVar("_T")

# --------------------------------------------------------------------------- opening


# The largest file of each kind the daemon reads; anything larger is refused, not read.
DOCUMENT_MAX_BYTES = 64 << 20  # run.json, metrics, interpretability documents, records
_ML = ".ml"


def _split(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(the workspace, the path relative to it) of a path inside a workspace's ``.ml``
    folder: the workspace ends before the last ``.ml`` component (no run id, and no file
    name of a run folder, is ``.ml``). A path outside any ``.ml`` (a bare run folder, in
    tests) is contained in its own directory: only its last component is checked."""
    parts = Path(path).parts
    for at in range(len(parts) - 1, 0, -1):
        if parts[at] == _ML:
            return str(Path(*parts[:at])), "/".join(parts[at:])
    return os.path.dirname(path) or ".", os.path.basename(path)


@contextlib.contextmanager
def _in_workspace(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """An open descriptor of the workspace holding ``path``, and ``path`` relative to it."""
    workspace, relative = _split(path)
    with beneath.opened(beneath.open_root(workspace)) as root:
        yield root, relative


def _read(path: str, dir_fd: int | None, max_bytes: int) -> tuple[bytes, os.stat_result]:
    if dir_fd is not None:
        return beneath.read_regular(dir_fd, path, max_bytes)
    with _in_workspace(path) as (root, relative):
        return beneath.read_regular(root, relative, max_bytes)


def read_file(path: str, *, dir_fd: int | None = None) -> bytes:
    """The whole regular file ``path`` (relative to ``dir_fd`` when given, else a path
    inside a workspace's ``.ml``), contained as the module docstring says; raises OSError."""
    return _read(path, dir_fd, DOCUMENT_MAX_BYTES)[0]


def read_file_with_mtime(path: str, *, dir_fd: int | None = None) -> tuple[bytes, int]:
    """Like ``read_file``, with the file's modification time (ns) as of the read."""
    data, status = _read(path, dir_fd, DOCUMENT_MAX_BYTES)
    return data, status.st_mtime_ns


def _open_small_regular_file(path: Path, max_bytes: int) -> bytes | None:
    """A file written by the trainer, read defensively: None unless it is a regular file
    reached without a symlink, of at most ``max_bytes``."""
    try:
        return _read(str(path), None, max_bytes)[0]
    except OSError:
        return None


def reason(exc: OSError) -> str:
    """Why an open in a workspace failed, said for people."""
    if exc.errno == errno.ELOOP:
        return "it is, or is reached through, a symlink (not followed inside a workspace)"
    if exc.errno == errno.EXDEV:
        return "it is outside the workspace"
    return exc.strerror or str(exc)


def open_for_append(run_dir: Path, name: str) -> IO[bytes]:
    """``events.jsonl`` or ``logs.txt``, opened for appending (the caller closes it)."""
    if name not in (EVENTS_FILE, LOGS_FILE):
        raise ValueError(f"{name} is not an append-only file of a run folder")
    with _in_workspace(run_dir / name) as (root, relative):
        fd = _open_append(root, relative)
    return os.fdopen(fd, "ab")  # the caller owns it


def _open_append(root: int, relative: str) -> int:
    fd = beneath.open_beneath(
        root, relative, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666
    )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise beneath.NotRegularFile(errno.EINVAL, "not a regular file", relative)
    except BaseException:
        os.close(fd)
        raise
    return fd


def list_files(run_dir: Path) -> set[str]:
    """The names in a run folder; raises RunFolderError when it cannot be listed."""
    try:
        with (
            _in_workspace(run_dir) as (root, relative),
            beneath.opened(beneath.open_dir(root, relative)) as fd,
        ):
            return set(os.listdir(fd))
    except OSError as exc:
        raise RunFolderError(
            RecoverySkipError.READ_ERROR, f"run folder could not be listed: {reason(exc)}"
        ) from exc


def list_run_folders(
    runs_dir: str, *, runs_fd: int | None = None, with_symlinks: bool = False
) -> list[str]:
    """Names of the run folders in ``.ml/runs`` (read through ``runs_fd`` when it is
    open), sorted (so reports are reproducible); none when it does not exist. Symlinks
    are not run folders (``with_symlinks``: list them too, for recovery to report).

    Hidden entries are not runs (a run id never starts with a dot).
    """
    try:
        fd = open_runs_folder(runs_dir) if runs_fd is None else os.dup(runs_fd)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise unreadable_runs_folder(runs_dir, exc) from exc
    try:
        with os.scandir(fd) as it:
            return sorted(
                e.name
                for e in it
                if not e.name.startswith(".")
                and (e.is_dir(follow_symlinks=False) or (with_symlinks and e.is_symlink()))
            )
    except OSError as exc:
        raise unreadable_runs_folder(runs_dir, exc) from exc
    finally:
        os.close(fd)


def open_runs_folder(runs_dir: str) -> int:
    """A descriptor of ``.ml/runs`` for reads relative to it; raises OSError."""
    with _in_workspace(runs_dir) as (root, relative):
        return beneath.open_dir(root, relative)


def open_run_folder(name: str, *, runs_fd: int) -> int:
    """A descriptor of run folder ``name`` of the open runs folder; raises OSError."""
    return beneath.open_dir(runs_fd, name)


class ListingNeeded(Exception):
    """A question a folder taken for a complete run cannot answer: list it, ask again."""


class LazyRunFolder:
    """Which files a folder of an open ``.ml/runs`` holds, and their bytes, for the
    classifications that may face 10^5 folders (recovery, orphans).

    Without a listing the folder is taken for a complete run as the daemon leaves it
    (``assumed`` files are there: a listing is five system calls); a ``checked`` file is
    looked up with one ``lstat`` (a dangling link counts, as in a listing). Any other
    question, or a file that cannot be read, raises ``ListingNeeded``: the caller asks
    again of ``listed()``. With a listing, a file that cannot be read raises the
    RunFolderError that says so. ``classify_lazily`` does both steps.
    """

    __slots__ = ("assumed", "checked", "listing", "name", "path", "runs_fd")

    def __init__(
        self,
        runs_fd: int,
        runs_dir: str,
        name: str,
        *,
        assumed: frozenset[str],
        checked: frozenset[str] = frozenset(),
        listing: set[str] | None = None,
    ) -> None:
        self.runs_fd = runs_fd
        self.path = f"{runs_dir}/{name}"
        self.name = name
        self.assumed = assumed
        self.checked = checked
        self.listing = listing

    def __contains__(self, file: object) -> bool:
        if self.listing is not None:
            return file in self.listing
        if file in self.assumed:
            return True
        if file in self.checked:
            return os.access(
                f"{self.name}/{file}", os.F_OK, dir_fd=self.runs_fd, follow_symlinks=False
            )
        raise ListingNeeded

    def read(self, file: str) -> bytes:
        try:
            return read_file(f"{self.name}/{file}", dir_fd=self.runs_fd)
        except OSError as exc:
            raise self._unreadable(file, exc) from exc

    def read_with_mtime(self, file: str) -> tuple[bytes, int]:
        try:
            return read_file_with_mtime(f"{self.name}/{file}", dir_fd=self.runs_fd)
        except OSError as exc:
            raise self._unreadable(file, exc) from exc

    def _unreadable(self, file: str, exc: OSError) -> Exception:
        return ListingNeeded() if self.listing is None else file_error(file, exc)

    def listed(self) -> LazyRunFolder:
        """The same folder with its listing; raises OSError when it cannot be listed."""
        fd = open_run_folder(self.name, runs_fd=self.runs_fd)
        try:
            listing = set(os.listdir(fd))
        finally:
            os.close(fd)
        return LazyRunFolder(
            self.runs_fd,
            os.path.dirname(self.path),
            self.name,
            assumed=frozenset(),
            listing=listing,
        )


def classify_lazily(folder: LazyRunFolder, classify: Callable[[LazyRunFolder], _T]) -> _T:
    """``classify(folder)``, taken for a complete run first, then from its listing if that
    did not answer. Raises OSError when the folder cannot be listed."""
    try:
        return classify(folder)
    except ListingNeeded:
        pass
    return classify(folder.listed())


def create_runs_folder(workspace: Path) -> int:
    """``.ml/runs`` of ``workspace``, made if missing, as an open descriptor; raises
    RunforgeError (INVALID_PATH: a symlink on the way; WORKSPACE_UNWRITABLE)."""
    try:
        with beneath.opened(beneath.open_root(workspace)) as root:
            return beneath.open_dir(root, str(RUNS_DIR), create=True)
    except OSError as exc:
        raise workspace_error(workspace, str(RUNS_DIR), exc) from exc


def create_run_folder(runs_fd: int, run_id: str) -> bool:
    """Make run folder ``run_id`` in the open runs folder; False if it already exists
    (exactly one caller creates a given folder). Raises OSError."""
    try:
        os.mkdir(run_id, 0o755, dir_fd=runs_fd)
    except FileExistsError:
        return False
    return True


def remove_new_run_folder(workspace: Path, run_id: str) -> None:
    """Remove a run folder made by ``create_run_folder`` that could not be set up (its
    ``request.json`` did not fit on the disk): no empty run folder is left behind."""
    with (
        contextlib.suppress(OSError),
        beneath.opened(open_runs_folder(str(workspace / RUNS_DIR))) as runs_fd,
    ):
        with beneath.opened(beneath.open_dir(runs_fd, run_id)) as fd:
            for name in os.listdir(fd):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
        os.rmdir(run_id, dir_fd=runs_fd)


def workspace_error(workspace: Path, relative: str, exc: OSError) -> RunforgeError:
    """The structured error of a failed open or write at ``relative`` in ``workspace``."""
    if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
        with contextlib.suppress(OSError), beneath.opened(beneath.open_root(workspace)) as root:
            relative = beneath.symlink_on_the_way(root, relative) or relative
        return RunforgeError(
            ErrorCode.INVALID_PATH,
            f"{relative} in {workspace} is a symlink or not a directory: RunForge does not "
            "follow symlinks inside a workspace",
            f"make {relative} a real directory of the workspace (a bind mount works for "
            "another disk)",
            {"workspace": str(workspace), "path": relative},
        )
    code = errno.errorcode.get(exc.errno or 0, "EIO")
    return RunforgeError(
        ErrorCode.WORKSPACE_UNWRITABLE,
        f"cannot write {relative} in {workspace}: {exc.strerror or exc}",
        "free space on the workspace's disk, or fix its permissions, then try again",
        {"workspace": str(workspace), "path": relative, "errno": code},
    )


def unreadable_runs_folder(runs_dir: str, exc: OSError) -> RunforgeError:
    return RunforgeError(
        ErrorCode.INVALID_PATH,
        f"the runs folder {runs_dir} could not be read: {reason(exc)}",
        remediation=f"make {runs_dir} a readable directory",
        details={"path": runs_dir, "error_type": type(exc).__name__},
    )


def _lstat_beneath(path: Path) -> os.stat_result | None:
    try:
        with (
            _in_workspace(path) as (root, relative),
            beneath.opened(beneath.open_beneath(root, relative, os.O_PATH)) as fd,
        ):
            return os.fstat(fd)
    except OSError:
        return None


def has_file(run_dir: Path, name: str) -> bool:
    found = _lstat_beneath(run_dir / name)
    return found is not None and stat.S_ISREG(found.st_mode)


def exists(run_dir: Path) -> bool:
    """Whether the run folder is a real directory (a symlink in its place is not)."""
    found = _lstat_beneath(run_dir)
    return found is not None and stat.S_ISDIR(found.st_mode)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` (in a run folder) atomically, through a descriptor of its folder
    reached without a symlink; raises OSError."""
    with (
        _in_workspace(path.parent) as (root, relative),
        beneath.opened(beneath.open_dir(root, relative)) as folder,
    ):
        beneath.write_atomic(folder, path.name, data)


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
    return RunFolderError(
        RecoverySkipError.READ_ERROR, f"{file_name} could not be read: {reason(exc)}"
    )


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
    except (msgspec.DecodeError, RecursionError) as exc:
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
    # What goes into the index: never a path out of the run folder, never a control
    # character. The messages do not repeat the hostile value.
    problem = None
    if not is_valid_run_id(run.run_id):
        problem = "run_id is not a valid run id"
    elif not safe_relative_path(run.artifacts.model_pkl):
        problem = "artifacts.model_pkl is not a relative path inside the run folder"
    elif not _plain_text(run.label_column):
        problem = "label_column holds a control character"
    elif not all(_plain_text(name) for name in run.metrics):
        problem = "a metrics name holds a control character"
    if problem is not None:
        raise RunFolderError(RecoverySkipError.CORRUPT_RUN_JSON, f"run.json {problem}")
    return run


# --------------------------------------------------------------------------- trainer paths

# C0 and C1 control characters and DEL: a NUL cannot pass through a path or a command
# line, and the others forge terminal output and log lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Inside a document a person reads, tab and line breaks are text.
_CONTROL_IN_DOCUMENT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_PATH_CHARS = 4096


def _plain_text(value: str) -> bool:
    return not _CONTROL.search(value)


def safe_relative_path(value: object) -> bool:
    """Whether a path a trainer wrote may be stored or shown: relative, with no ``..``,
    ``.`` or empty component (so it stays inside the folder it is relative to), no
    backslash, no control character, at most 4096 characters."""
    if not isinstance(value, str) or not value or len(value) > _MAX_PATH_CHARS:
        return False
    if value.startswith("/") or "\\" in value or _CONTROL.search(value):
        return False
    return all(part not in ("", ".", "..") for part in value.split("/"))


def unsafe_run_json(document: Any) -> str | None:
    """Why a ``run.json`` document must not be shown as it is (None when it may): an
    artifact path that leaves the run folder, a run id that is not one, or a control
    character (other than tab and line breaks) in any string of it."""
    if not isinstance(document, dict):
        return None
    artifacts = document.get("artifacts")
    paths: list[tuple[str, object]] = []
    if isinstance(artifacts, dict):
        paths += [(f"artifacts.{k}", v) for k, v in artifacts.items()]
    metrics_v1 = document.get("metrics_v1")
    if isinstance(metrics_v1, dict) and "artifact_path" in metrics_v1:
        paths.append(("metrics_v1.artifact_path", metrics_v1["artifact_path"]))
    paths += [(k, v) for k, v in document.items() if k.endswith("_artifact")]
    for name, value in paths:
        if not safe_relative_path(value):
            return f"{name} is not a relative path inside the run folder"
    run_id = document.get("run_id")
    if isinstance(run_id, str) and not is_valid_run_id(run_id):
        return "run_id is not a valid run id"
    if _has_control_character(document):
        return "it holds a control character"
    return None


def _has_control_character(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return bool(_CONTROL_IN_DOCUMENT.search(value))
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(
            _has_control_character(k, depth + 1) or _has_control_character(v, depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_has_control_character(v, depth + 1) for v in value)
    return False


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
    except (msgspec.DecodeError, RecursionError) as exc:
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
    _write_atomic(run_dir / REQUEST_FILE, _json.encode(record) + b"\n")


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
    except (msgspec.DecodeError, RecursionError) as exc:
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
    _write_atomic(run_dir / RESULT_FILE, _json.encode(result) + b"\n")


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
        marker = _marker_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    # Written by the trainer: only what is safe to store and show goes on.
    return msgspec.structs.replace(
        marker,
        run_dir=marker.run_dir if safe_relative_path(marker.run_dir) else "",
        reason=_CONTROL.sub("?", marker.reason),
        partial_artifacts=[p for p in marker.partial_artifacts if safe_relative_path(p)],
    )


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
    _write_atomic(path, _json.encode(marker))
    return path


def read_index_orphan_error(run_dir: Path) -> str | None:
    """The error an ``.index-orphan`` marker records, as ``"<type>: <message>"``; None
    when the folder has no marker."""
    try:
        marker = _orphan_marker_decoder.decode(read_file(str(run_dir / INDEX_ORPHAN_MARKER)))
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, RecursionError) as exc:
        return f"unreadable {INDEX_ORPHAN_MARKER} marker: {exc}"
    return f"{marker.error.type}: {marker.error.message}"


def has_index_orphan_marker(folder_name: str, *, dir_fd: int) -> bool:
    """Whether run folder ``folder_name`` (relative to the open runs folder) has a marker;
    a bool, not an exception, in the common case of none (10^5 times per recovery)."""
    try:
        fd = beneath.open_beneath(dir_fd, f"{folder_name}/{INDEX_ORPHAN_MARKER}", os.O_PATH)
    except OSError:
        return False
    os.close(fd)
    return True


def delete_index_orphan_marker(runs_dir: Path | int, folder_name: str) -> None:
    """Remove run folder ``folder_name``'s marker; ``runs_dir`` is ``.ml/runs`` or an open
    descriptor of it. Raises OSError, but not when the marker is already gone."""
    runs_fd = runs_dir if isinstance(runs_dir, int) else open_runs_folder(str(runs_dir))
    try:
        with (
            contextlib.suppress(FileNotFoundError),
            beneath.opened(beneath.open_dir(runs_fd, folder_name)) as folder,
        ):
            os.unlink(INDEX_ORPHAN_MARKER, dir_fd=folder)
    finally:
        if not isinstance(runs_dir, int):
            os.close(runs_fd)


# --------------------------------------------------------------------------- metrics.json


def final_metrics(run_dir: Path) -> dict[str, float]:
    """Numeric top-level values of the runner's ``metrics.json``."""
    try:
        document = msgspec.json.decode(read_file(str(run_dir / METRICS_FILE)))
    except (OSError, msgspec.DecodeError, RecursionError):
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


# Our own lines are a few hundred bytes (an event relayed from a trainer at most 64 KiB);
# a longer one was planted, and is skipped without being held in memory.
EVENT_LINE_MAX_BYTES = 1 << 20


def _event_lines(run_dir: Path) -> Iterator[bytes]:
    with _in_workspace(run_dir / EVENTS_FILE) as (root, relative):
        fd = beneath.open_regular_for_reading(root, relative)
    with os.fdopen(fd, "rb") as handle:
        too_long = False
        while line := handle.readline(EVENT_LINE_MAX_BYTES):
            complete = line.endswith(b"\n")
            if not too_long and (complete or len(line) < EVENT_LINE_MAX_BYTES):
                yield line
            too_long = not complete and len(line) == EVENT_LINE_MAX_BYTES


def has_events(run_dir: Path) -> bool:
    return has_file(run_dir, EVENTS_FILE)


def read_events(run_dir: Path, since: int, limit: int) -> tuple[list[Event], int]:
    """Persisted events with ``run_seq > since`` (at most ``limit``) and the highest
    ``run_seq`` on disk. A torn last line (a crash mid-write) is skipped. Raises OSError."""
    events: list[Event] = []
    last = 0
    for line in _event_lines(run_dir):
        try:
            event = _event_decoder.decode(line)
        except (msgspec.DecodeError, RecursionError):
            continue
        last = max(last, event.run_seq)
        if event.run_seq > since and len(events) < limit:
            events.append(event)
    return events, last


def last_run_seq(run_dir: Path) -> int:
    """The highest ``run_seq`` persisted (0 if none or unreadable); read as the monitor
    reads it (``runforge_contract.event_log.run_seq_of``), torn last line ignored."""
    last = 0
    with contextlib.suppress(OSError):
        for line in _event_lines(run_dir):
            if line.endswith(b"\n"):
                seq = run_seq_of(line)
                if seq is not None and seq > last:
                    last = seq
    return last


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
    with contextlib.suppress(OSError), open_for_append(run_dir, EVENTS_FILE) as handle:
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
        document = msgspec.json.decode(read_file(str(path)))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunforgeError(
            ErrorCode.ARTIFACT_NOT_FOUND,
            f"{path.name} of this run cannot be read: {reason(exc)}",
            "the file is corrupt; 'runforgectl recover' will report the run folder",
            {"path": str(path)},
        ) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RunforgeError(
            ErrorCode.ARTIFACT_NOT_FOUND,
            f"{path.name} of this run cannot be read: {exc}",
            "the file is corrupt; 'runforgectl recover' will report the run folder",
            {"path": str(path)},
        ) from exc
    problem = unsafe_run_json(document) if name == RUN_FILE else None
    if problem is not None:
        raise RunforgeError(
            ErrorCode.ARTIFACT_NOT_FOUND,
            f"run.json of this run is not shown: {problem}",
            "the trainer wrote an invalid run.json; see the run's logs.txt",
            {"path": str(path)},
        )
    return document


def write_document(run_dir: Path, name: str, data: bytes) -> None:
    """Write an export (``run-summary.md``) into the run folder atomically."""
    _write_atomic(run_dir / name, data)


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
    """How many whole lines ``logs.txt`` holds (0 if there is none or it is not a regular
    file reached without a symlink)."""
    count = 0
    with contextlib.suppress(OSError):
        with _in_workspace(run_dir / LOGS_FILE) as (root, relative):
            fd = beneath.open_regular_for_reading(root, relative)
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
    return count


# --------------------------------------------------------------------------- .executor/

# The largest ``.executor/`` document read (``exit.json``, ``control.json``).
EXECUTOR_DOCUMENT_MAX_BYTES = 1 << 16


def write_executor_document(run_dir: Path, name: str, data: bytes) -> None:
    """``spec.json`` or ``control.json`` of a cluster run, atomically (private: they hold
    the trainer's environment), through descriptors reached without a symlink."""
    with (
        _in_workspace(run_dir) as (root, relative),
        beneath.opened(beneath.open_dir(root, relative)) as folder,
    ):
        with contextlib.suppress(FileExistsError):
            os.mkdir(EXECUTOR_DIR, 0o700, dir_fd=folder)
        with beneath.opened(beneath.open_dir(folder, EXECUTOR_DIR)) as directory:
            beneath.write_atomic(directory, name, data, 0o600)


def open_executor_stream(run_dir: Path) -> int | None:
    """A read-only descriptor on the entrypoint's ``output`` stream (the caller closes
    it); None until it exists, and while it is not a regular file reached without a
    symlink (such a stream is absent: nothing is read through it)."""
    try:
        with _in_workspace(run_dir / EXECUTOR_DIR / OUTPUT_FILE) as (root, relative):
            return beneath.open_regular_for_reading(root, relative)
    except OSError:
        return None


def read_executor_document(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The one reader of ``.executor/``'s JSON documents: the entrypoint's ``exit.json``
    (the trainer's exit status) or the daemon's ``control.json`` (cancel and kill
    requests so far). None while absent, not a regular file reached without a symlink,
    over ``EXECUTOR_DOCUMENT_MAX_BYTES``, or not (yet) a JSON object."""
    data = _open_small_regular_file(run_dir / EXECUTOR_DIR / name, EXECUTOR_DOCUMENT_MAX_BYTES)
    if data is None:
        return None
    try:
        document = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
