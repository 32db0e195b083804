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
    LazyRunFolder,
    RunFolderError,
    classify_lazily,
    decode_result,
    decode_run_json,
    list_run_folders,
    open_runs_folder,
    read_index_orphan_error,
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
            runs_fd: int | None = None  # opened once a folder must be read
            try:
                for name in self._names:
                    if name in in_flight:
                        continue
                    if name not in self._known:
                        if runs_fd is None:
                            try:
                                runs_fd = open_runs_folder(str(self.runs_dir))
                            except OSError:
                                break  # gone or unreadable: no orphan can be read now
                        self._known[name] = self._classify(runs_fd, name)
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
            finally:
                if runs_fd is not None:
                    os.close(runs_fd)
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

    def _classify(self, runs_fd: int, name: str) -> _Candidate | None:
        if self.index.lists_run_dir(relative_run_dir(name)):
            return _NOT_AN_ORPHAN
        self.folders_read += 1
        folder = LazyRunFolder(
            runs_fd,
            str(self.runs_dir),
            name,
            assumed=_COMPLETE_RUN_FILES,
            checked=_CHECKED_FILES,
        )
        try:
            return classify_lazily(folder, _candidate)
        except OSError:
            return _NOT_AN_ORPHAN


# A complete run as the daemon leaves it, for the first look (no listing). The marker is
# looked up (one lstat, a dangling link counts, as in a listing).
_COMPLETE_RUN_FILES = frozenset({RUN_FILE, RESULT_FILE})
_CHECKED_FILES = frozenset({INDEX_ORPHAN_MARKER})


def _candidate(folder: LazyRunFolder) -> _Candidate | None:
    """What ``folder`` says about its run. Raises ListingNeeded (through ``folder``)
    when taken for a complete run it cannot answer."""
    try:
        if RUN_FILE not in folder:
            return _NOT_AN_ORPHAN
        result = None
        if RESULT_FILE in folder:
            data = folder.read(RESULT_FILE)
            try:
                result = decode_result(data)
            except RunFolderError:
                result = None  # recovery reports it; the run.json still makes it an orphan
        if was_cancelled(result, lambda: CANCELLED_MARKER in folder):
            return _NOT_AN_ORPHAN
        identity = decode_run_json(folder.read(RUN_FILE))
    except RunFolderError:
        # No run.json the index could take, or a file of a listed folder that cannot be
        # read (recovery lists the folder as skipped, with the same reason): not an orphan.
        return _NOT_AN_ORPHAN
    error = read_index_orphan_error(Path(folder.path)) if INDEX_ORPHAN_MARKER in folder else None
    return _Candidate(run_id=identity.run_id, created_at=identity.created_at, error=error)
