"""Orphans: completed runs on disk that the index does not list, and their markers.

An orphan is a run folder with a readable ``run.json`` naming a run the index does not
list, that is not cancelled and not in flight: exactly what the next Recover Index would
put back (it may still be skipped there if, say, its ``request.json`` is corrupt; the
report says why). It may carry an ``.index-orphan`` marker saying why its index update
failed.

``OrphanTracker`` knows a workspace's orphans without rescanning on every request: it
remembers what each run folder holds, re-lists ``.ml/runs`` only when that folder's
mtime changed (a run folder was created or removed), reads only folders it has not seen
or was told to forget, and checks index membership at each query (the index only
grows, so an orphan that gets indexed disappears at once). A change inside an existing
folder made by something other than this daemon is seen after ``rescan()``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import msgspec

from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import OrphanInfo
from runforge_protocol.records import IndexErrorInfo, IndexOrphanMarker, ResultRecord
from runforge_runner.atomicio import write_bytes_atomic
from runforged.errors import RunforgeError
from runforged.index import RunIndex
from runforged.index_entry import (
    INDEX_ORPHAN_MARKER,
    RESULT_JSON,
    RUN_JSON,
    read_file,
    relative_run_dir,
    sort_timestamp,
    utc_now_iso,
    was_cancelled,
)
from runforged.paths import INDEX_FILE, RUNS_DIR
from runforged.recovery import run_folder_names

# index-orphan schema v1.0.0 ``run_id`` pattern.
_MARKER_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,256}")

_marker_decoder = msgspec.json.Decoder(IndexOrphanMarker)
_result_decoder = msgspec.json.Decoder(ResultRecord)
_marker_encoder = msgspec.json.Encoder()


class _RunIdentity(msgspec.Struct):
    """Just enough of ``run.json`` to name an orphan."""

    run_id: str
    created_at: str | None = None


_identity_decoder = msgspec.json.Decoder(_RunIdentity)


def write_index_orphan_marker(workspace: Path, run_id: str, exc: BaseException) -> Path:
    """Write ``<workspace>/.ml/runs/<run_id>/.index-orphan`` (index-orphan schema v1.0.0)
    atomically, recording why the run's index update failed; returns its path.

    The error recorded is the underlying one (``PermissionError``, ``OSError``...) when
    ``exc`` is a RunforgeError raised from it, so the marker says what actually broke.
    """
    if not _MARKER_RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
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
        written_at=utc_now_iso(),
        error=IndexErrorInfo(type=type(cause).__name__, message=message),
        index_path=INDEX_FILE.as_posix(),
    )
    path = workspace / RUNS_DIR / run_id / INDEX_ORPHAN_MARKER
    write_bytes_atomic(path, _marker_encoder.encode(marker))
    return path


def read_index_orphan_error(run_dir: Path) -> str | None:
    """The error an ``.index-orphan`` marker records, as ``"<type>: <message>"``; None
    when the folder has no marker."""
    try:
        marker = _marker_decoder.decode(read_file(str(run_dir / INDEX_ORPHAN_MARKER)))
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        return f"unreadable {INDEX_ORPHAN_MARKER} marker: {exc}"
    return f"{marker.error.type}: {marker.error.message}"


@dataclass(frozen=True, slots=True)  # slots: one per folder, up to 10^5 of them
class _Candidate:
    """A folder holding a completed, not cancelled run: an orphan unless indexed."""

    run_id: str
    created_at: str | None
    error: str | None


# A folder that can never be an orphan as it stands: indexed, cancelled, no run.json...
_NOT_AN_ORPHAN = None


class OrphanTracker:
    """The orphans of one workspace, kept current cheaply. Blocking; thread-safe."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index
        self.runs_dir = index.workspace / RUNS_DIR
        self.folders_read = 0  # folders whose files were read, over this tracker's life
        self._lock = threading.Lock()
        self._runs_mtime_ns: int | None = None
        self._names: list[str] = []
        self._known: dict[str, _Candidate | None] = {}

    def orphans(self, in_flight: Container[str]) -> list[OrphanInfo]:
        """The workspace's orphans right now, newest first. ``in_flight``: run ids the
        daemon owns (their folders are not looked at until they are done)."""
        with self._lock:
            self._relist_if_changed()
            found: list[tuple[float, str, OrphanInfo]] = []
            for name in self._names:
                if name in in_flight:
                    continue
                if name not in self._known:
                    self._known[name] = self._classify(name)
                candidate = self._known[name]
                if candidate is None:
                    continue
                rel_dir = relative_run_dir(name)
                if candidate.run_id in self.index or self.index.lists_run_dir(rel_dir):
                    self._known[name] = _NOT_AN_ORPHAN  # the index never forgets a run
                    continue
                info = OrphanInfo(
                    run_id=candidate.run_id,
                    run_dir=rel_dir,
                    created_at=candidate.created_at,
                    error=candidate.error,
                )
                found.append((sort_timestamp(candidate.created_at), name, info))
        found.sort(key=lambda f: (f[0], f[1]), reverse=True)
        return [info for _, _, info in found]

    def forget(self, folder_name: str) -> None:
        """Read ``folder_name`` again at the next query (its run finished, a marker was
        written...)."""
        with self._lock:
            self._known.pop(folder_name, None)

    def rescan(self) -> None:
        """Forget everything: the next query reads every folder the index does not list."""
        with self._lock:
            self._runs_mtime_ns = None
            self._known.clear()

    def _relist_if_changed(self) -> None:
        try:
            mtime_ns: int | None = os.stat(self.runs_dir).st_mtime_ns
        except FileNotFoundError:
            mtime_ns = None
        if mtime_ns == self._runs_mtime_ns and mtime_ns is not None:
            return
        self._runs_mtime_ns = mtime_ns
        self._names = run_folder_names(str(self.runs_dir))
        present = set(self._names)
        for gone in [name for name in self._known if name not in present]:
            del self._known[gone]

    def _classify(self, name: str) -> _Candidate | None:
        if self.index.lists_run_dir(relative_run_dir(name)):
            return _NOT_AN_ORPHAN
        self.folders_read += 1
        folder = f"{self.runs_dir}/{name}"
        try:
            return _candidate(folder, _CompleteRun(folder))
        except _ListingNeeded:
            pass
        try:
            files = set(os.listdir(folder))
        except OSError:
            return _NOT_AN_ORPHAN
        return _candidate(folder, files)


class _ListingNeeded(Exception):
    """The folder is not a complete run as the daemon leaves it: look at it from a listing."""


class _CompleteRun:
    """The files of a folder taken for a complete run (``run.json``, ``result.json``), so
    that it is read without being listed (a listing is five system calls). A question
    this cannot answer raises ``_ListingNeeded``."""

    __slots__ = ("folder",)

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __contains__(self, file: object) -> bool:
        if file in (RUN_JSON, RESULT_JSON):
            return True
        if file == INDEX_ORPHAN_MARKER:
            # A listing names a marker even when it is a dangling link: so does this.
            return os.access(f"{self.folder}/{file}", os.F_OK, follow_symlinks=False)
        raise _ListingNeeded


def _candidate(folder: str, files: Container[str]) -> _Candidate | None:
    """What ``folder``, holding ``files``, says about its run."""
    try:
        if RUN_JSON not in files:
            return _NOT_AN_ORPHAN
        result = None
        if RESULT_JSON in files:
            try:
                result = _result_decoder.decode(read_file(f"{folder}/{RESULT_JSON}"))
            except msgspec.DecodeError:
                result = None  # recovery reports it; the run.json still makes it an orphan
        if was_cancelled(files, result):
            return _NOT_AN_ORPHAN
        identity = _identity_decoder.decode(read_file(f"{folder}/{RUN_JSON}"))
    except OSError as exc:
        if isinstance(files, _CompleteRun):
            raise _ListingNeeded from exc
        return _NOT_AN_ORPHAN  # no usable run.json: recovery lists the folder as skipped
    except msgspec.DecodeError:
        return _NOT_AN_ORPHAN
    if not identity.run_id:
        return _NOT_AN_ORPHAN
    error = read_index_orphan_error(Path(folder)) if INDEX_ORPHAN_MARKER in files else None
    return _Candidate(run_id=identity.run_id, created_at=identity.created_at, error=error)
