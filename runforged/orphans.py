"""Orphans: completed runs on disk that the index does not list, and their markers.

An orphan is a run folder with a ``run.json`` the index could take, naming a run it does not
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
import threading
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from runforge_contract.timestamps import sort_timestamp
from runforge_protocol.messages import OrphanInfo
from runforged.index import RunIndex
from runforged.outcome import was_cancelled
from runforged.run_folder import (
    CANCELLED_MARKER,
    INDEX_ORPHAN_MARKER,
    RESULT_FILE,
    RUN_FILE,
    RUNS_DIR,
    RunFolderError,
    list_run_folders,
    read_index_orphan_error,
    read_result,
    read_run_json,
    relative_run_dir,
)


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
        self._names = list_run_folders(str(self.runs_dir))
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
        if file in (RUN_FILE, RESULT_FILE):
            return True
        if file == INDEX_ORPHAN_MARKER:
            # A listing names a marker even when it is a dangling link: so does this.
            return os.access(f"{self.folder}/{file}", os.F_OK, follow_symlinks=False)
        raise _ListingNeeded


def _candidate(folder: str, files: Container[str]) -> _Candidate | None:
    """What ``folder``, holding ``files``, says about its run."""
    try:
        if RUN_FILE not in files:
            return _NOT_AN_ORPHAN
        result = None
        if RESULT_FILE in files:
            try:
                result = read_result(f"{folder}/{RESULT_FILE}")
            except RunFolderError as exc:
                if isinstance(exc.__cause__, OSError):
                    raise exc.__cause__ from None
                result = None  # recovery reports it; the run.json still makes it an orphan
        if was_cancelled(result, lambda: CANCELLED_MARKER in files):
            return _NOT_AN_ORPHAN
        identity, _mtime = read_run_json(f"{folder}/{RUN_FILE}")
    except OSError as exc:
        if isinstance(files, _CompleteRun):
            raise _ListingNeeded from exc
        return _NOT_AN_ORPHAN
    except RunFolderError as exc:
        if isinstance(files, _CompleteRun) and isinstance(exc.__cause__, OSError):
            raise _ListingNeeded from exc
        # No run.json the index could take (recovery lists the folder as skipped, with
        # the same reason): not an orphan.
        return _NOT_AN_ORPHAN
    error = read_index_orphan_error(Path(folder)) if INDEX_ORPHAN_MARKER in files else None
    return _Candidate(run_id=identity.run_id, created_at=identity.created_at, error=error)
