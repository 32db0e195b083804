"""One workspace's run index (``.ml/outputs/index.json``), held in memory by its single writer.

The file is read once; entries are then kept in memory and every commit rewrites the
file atomically from them. Before each write the file's stat signature (inode, size,
mtime_ns) is compared with the one this process last read or wrote: if someone else
(an older RunForge writer) changed it, their file is read and merged by run id, their
entries winning, so nothing they added is dropped.

Shapes read: the canonical ``{"schema_version": "1.0.0", "runs": [...]}``, the
``0.2.2.1`` envelope with six-field entries, and the legacy bare array. Old entries are
kept as they are (absent fields stay absent); every write uses the canonical envelope.
Keys outside every RunForge index schema are not carried over.

A file that is none of these is corrupt. It is never overwritten: it is renamed to
``index.json.corrupt.<timestamp>`` (reported through ``take_corrupt_kept_as``) and the
index continues from what this process knows; recovery rebuilds the rest.

Methods that touch the disk block: the daemon calls them through ``IndexWriter``, in a
worker thread, one at a time. Reads (``get``, ``latest``, ``newest_first``...) never
touch the disk and may be called from the event loop at any time: each commit swaps in a
new immutable snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import structlog

from runforge_contract.timestamps import sort_timestamp
from runforge_protocol.errors import ErrorCode
from runforged import beneath
from runforged.disk_formats import IndexEntry, IndexFile
from runforged.errors import RunforgeError
from runforged.paths import INDEX_FILE

# 10^5 runs make an index of about 30 MB; a file far larger is not one (and is not read
# into memory).
INDEX_MAX_BYTES = 1 << 30
log = structlog.get_logger(__name__)

INDEX_SCHEMA_VERSION = "1.0.0"

_decoder = msgspec.json.Decoder(IndexFile | list[IndexEntry])
_encoder = msgspec.json.Encoder()

# (st_ino, st_size, st_mtime_ns) of the file as this process last read or wrote it.
Signature = tuple[int, int, int]


def _sort_key(entry: IndexEntry) -> float:
    """Newest means the latest ``created_at``."""
    return sort_timestamp(entry.created_at)


@dataclass(frozen=True)
class _Snapshot:
    """The index at one moment. Never mutated: readers on the event loop may hold it while
    a commit builds the next one in a worker thread."""

    entries: tuple[IndexEntry, ...]  # file order: oldest appended first
    by_id: dict[str, IndexEntry]  # first entry of each run id
    run_dirs: frozenset[str]
    # Arrays, not tuples: 8 bytes per entry instead of 40 (a float or int object each).
    keys: array[float]  # _sort_key of each entry, by position
    newest_first: array[int]  # positions, newest first; ties: later position first

    @classmethod
    def of(cls, entries: Sequence[IndexEntry]) -> _Snapshot:
        by_id: dict[str, IndexEntry] = {}
        for entry in entries:
            by_id.setdefault(entry.run_id, entry)
        keys = array("d", map(_sort_key, entries))
        return cls(
            entries=tuple(entries),
            by_id=by_id,
            run_dirs=frozenset(e.run_dir for e in entries if e.run_dir is not None),
            keys=keys,
            newest_first=_newest_first(keys),
        )

    def extended(self, added: Sequence[IndexEntry]) -> _Snapshot:
        """This snapshot plus ``added`` at the end, without re-sorting in the common case
        of runs completing in order."""
        base = len(self.entries)
        new_keys = [_sort_key(e) for e in added]
        by_id = dict(self.by_id)
        for entry in added:
            by_id.setdefault(entry.run_id, entry)
        entries = self.entries + tuple(added)
        keys = self.keys + array("d", new_keys)
        newest = self.keys[self.newest_first[0]] if self.newest_first else -math.inf
        if all(k >= newest for k in new_keys) and new_keys == sorted(new_keys):
            order = array("q", range(len(entries) - 1, base - 1, -1)) + self.newest_first
        else:
            order = _newest_first(keys)
        return _Snapshot(
            entries=entries,
            by_id=by_id,
            run_dirs=self.run_dirs | {e.run_dir for e in added if e.run_dir is not None},
            keys=keys,
            newest_first=order,
        )


def _newest_first(keys: array[float]) -> array[int]:
    """Positions by ``keys``, newest first; ties: later position first."""
    # Sorting is stable (also in reverse), so positions fed last-to-first keep that order
    # among equal keys; no (key, position) tuple per entry.
    return array("q", sorted(range(len(keys) - 1, -1, -1), key=keys.__getitem__, reverse=True))


class RunIndex:
    """The in-memory copy of ``<workspace>/.ml/outputs/index.json``."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.path = workspace / INDEX_FILE
        self.writes = 0  # rewrites of index.json by this process
        self._snapshot = _Snapshot.of(())
        self._signature: Signature | None = None
        self._file_exists = False
        self._corrupt_kept_as: list[str] = []

    # ------------------------------------------------------------------ reads (no I/O)

    def __len__(self) -> int:
        return len(self._snapshot.entries)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._snapshot.by_id

    def get(self, run_id: str) -> IndexEntry | None:
        return self._snapshot.by_id.get(run_id)

    def lists_run_dir(self, run_dir: str) -> bool:
        """Whether an entry points at ``run_dir`` (workspace-relative, forward slashes)."""
        return run_dir in self._snapshot.run_dirs

    def latest(self) -> IndexEntry | None:
        """The newest entry: the latest ``created_at`` (the one meaning of "latest")."""
        snapshot = self._snapshot
        return snapshot.entries[snapshot.newest_first[0]] if snapshot.entries else None

    def newest_first(self, offset: int = 0, limit: int | None = None) -> list[IndexEntry]:
        """Entries, newest first; ``offset``/``limit`` page through them."""
        snapshot = self._snapshot
        end = None if limit is None else offset + limit
        return [snapshot.entries[i] for i in snapshot.newest_first[offset:end]]

    def entries(self) -> tuple[IndexEntry, ...]:
        """Entries in file order (oldest appended first)."""
        return self._snapshot.entries

    @property
    def file_exists(self) -> bool:
        """Whether index.json existed when this process last looked."""
        return self._file_exists

    @property
    def corrupt_kept_as(self) -> tuple[str, ...]:
        """The same paths as ``take_corrupt_kept_as``, without forgetting them (for
        ``runs``, which mentions them; the recovery report then takes them)."""
        return tuple(self._corrupt_kept_as)

    def take_corrupt_kept_as(self) -> list[str]:
        """Workspace-relative paths of corrupt index files moved aside since the last call."""
        kept, self._corrupt_kept_as = self._corrupt_kept_as, []
        return kept

    # ------------------------------------------------------------------ disk (blocking)

    def load(self) -> None:
        """Read index.json (once, when the daemon first needs this workspace)."""
        found = self._read()
        if found is None:
            self._snapshot = _Snapshot.of(())
            return
        entries, self._signature = found
        self._file_exists = True
        self._snapshot = _Snapshot.of(entries)
        log.info("index_loaded", path=str(self.path), entries=len(entries))

    def refresh(self) -> bool:
        """Merge what someone else wrote since this process last read or wrote the file.

        Cheap when nothing changed (one stat). Returns whether anything did.
        """
        try:
            st = os.stat(self.path)
            signature: Signature | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            signature = None
        except OSError as exc:
            raise self._failure("could not be read", exc) from exc
        if signature == self._signature:
            return False
        if signature is None:
            # Deleted behind our back: the next commit writes back everything we know.
            log.warning("index_removed_externally", path=str(self.path))
            self._signature = None
            self._file_exists = False
            return True
        found = self._read()
        if found is None:
            return True
        theirs, self._signature = found
        self._file_exists = True
        their_ids = {e.run_id for e in theirs}
        ours_only = [e for e in self._snapshot.entries if e.run_id not in their_ids]
        self._snapshot = _Snapshot.of([*theirs, *ours_only])
        log.info(
            "index_merged_external_change",
            path=str(self.path),
            their_entries=len(theirs),
            kept_from_memory=len(ours_only),
        )
        return True

    def commit(
        self, entries: Iterable[IndexEntry], *, ensure_file: bool = False
    ) -> list[IndexEntry]:
        """Append the entries whose run id the index lacks and rewrite index.json durably.

        Returns the entries actually appended (an entry whose run id is already indexed
        is dropped: indexing a run twice is a no-op). Nothing is written when nothing is
        appended, unless ``ensure_file`` and the file does not exist (or the file was
        removed or moved aside, in which case what is in memory is written back).
        On failure raises RunforgeError(INDEX_WRITE_FAILED) and the index, in memory and
        on disk, is as it was.
        """
        self.refresh()
        snapshot = self._snapshot
        seen = set(snapshot.by_id)
        added: list[IndexEntry] = []
        for entry in entries:
            if entry.run_id not in seen:
                seen.add(entry.run_id)
                added.append(entry)
        write_back = self._signature is None and (bool(snapshot.entries) or ensure_file)
        if not added and not write_back:
            return []
        runs = list(snapshot.entries) + added
        data = _encoder.encode(IndexFile(schema_version=INDEX_SCHEMA_VERSION, runs=runs))
        try:
            # Through descriptors reached without a symlink: never into a folder that
            # .ml or .ml/outputs points to.
            with (
                beneath.opened(beneath.open_root(self.workspace)) as root,
                beneath.opened(beneath.open_dir(root, self._folder, create=True)) as folder,
            ):
                beneath.write_atomic(folder, self.path.name, data)
                st = os.stat(self.path.name, dir_fd=folder, follow_symlinks=False)
        except OSError as exc:
            raise self._failure("could not be written", exc) from exc
        # Tens of MB at 10^5 entries: not held while the next snapshot is built.
        del data
        self._signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._file_exists = True
        self._snapshot = snapshot.extended(added) if added else snapshot
        self.writes += 1
        log.info("index_written", path=str(self.path), added=len(added), entries=len(runs))
        return added

    def _read(self) -> tuple[list[IndexEntry], Signature] | None:
        """The entries in index.json and the signature of the bytes read, or None when
        there is no file or it was corrupt (and has been moved aside)."""
        try:
            with beneath.opened(beneath.open_root(self.workspace)) as root:
                fd = beneath.open_regular_for_reading(root, str(INDEX_FILE))
        except (FileNotFoundError, NotADirectoryError):
            # No index there (NotADirectory: its folder is a file): nothing to read or lose.
            self._file_exists = False
            return None
        except OSError as exc:
            raise self._failure("could not be read", exc) from exc
        try:
            st = os.fstat(fd)
            if st.st_size > INDEX_MAX_BYTES:
                raise beneath.FileTooLarge(
                    errno.EFBIG, f"{st.st_size} bytes, over the limit of {INDEX_MAX_BYTES}"
                )
            # One buffer of the file's size: at 10^5 entries the file is tens of MB, and
            # joining chunks would hold it twice.
            data = bytearray(st.st_size)
            with memoryview(data) as view:
                filled = 0
                while filled < st.st_size and (n := os.readv(fd, [view[filled:]])):
                    filled += n
            del data[filled:]
            # A file changed in place while being read: take all of it; its signature no
            # longer matches, so the next refresh reads it again anyway.
            while extra := os.read(fd, 1 << 16):
                data += extra
        except OSError as exc:
            raise self._failure("could not be read", exc) from exc
        finally:
            os.close(fd)
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            decoded = _decoder.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            self._move_aside(str(exc))
            return None
        del data
        entries = decoded.runs if isinstance(decoded, IndexFile) else decoded
        return entries, signature

    def _move_aside(self, reason: str) -> None:
        """Keep a corrupt index as ``index.json.corrupt.<timestamp>``, never overwrite it."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt.{stamp}")
        suffix = 0
        while target.exists():  # rename would silently replace an earlier copy
            suffix += 1
            target = self.path.with_name(f"{self.path.name}.corrupt.{stamp}.{suffix}")
        try:
            with (
                beneath.opened(beneath.open_root(self.workspace)) as root,
                beneath.opened(beneath.open_dir(root, self._folder)) as folder,
            ):
                os.rename(self.path.name, target.name, src_dir_fd=folder, dst_dir_fd=folder)
                os.fsync(folder)
        except OSError as exc:
            raise self._failure("is corrupt and could not be moved aside", exc) from exc
        rel = target.relative_to(self.workspace).as_posix()
        self._corrupt_kept_as.append(rel)
        self._signature = None
        self._file_exists = False
        log.warning("index_corrupt_moved_aside", path=str(self.path), kept_as=rel, reason=reason)

    @property
    def _folder(self) -> str:
        return os.path.dirname(INDEX_FILE)

    def _not_contained(self, what: str, exc: OSError) -> RunforgeError:
        """INVALID_PATH: a symlink (or a FIFO...) where the index or its folders should be."""
        culprit = str(INDEX_FILE)
        with (
            contextlib.suppress(OSError),
            beneath.opened(beneath.open_root(self.workspace)) as root,
        ):
            culprit = beneath.symlink_on_the_way(root, str(INDEX_FILE)) or culprit
        if isinstance(exc, beneath.NotRegularFile):
            problem = "is not a regular file"
        elif isinstance(exc, beneath.FileTooLarge):
            problem = f"is too large ({exc.strerror})"
        else:
            problem = "is a symlink: RunForge does not follow symlinks inside a workspace"
        return RunforgeError(
            ErrorCode.INVALID_PATH,
            f"the run index {self.path} {what}: {culprit} {problem}",
            f"make {culprit} a real directory (or file) of the workspace, then run "
            f"`runforgectl recover --workspace {self.workspace}`",
            {"index_path": str(self.path), "path": culprit},
        )

    def _failure(self, what: str, exc: OSError) -> RunforgeError:
        if exc.errno in (errno.ELOOP, errno.EXDEV) or isinstance(
            exc, (beneath.NotRegularFile, beneath.FileTooLarge)
        ):
            return self._not_contained(what, exc)
        return RunforgeError(
            ErrorCode.INDEX_WRITE_FAILED,
            f"the run index {self.path} {what}: {exc.strerror or exc}",
            remediation=(
                f"make {self.path.parent} a writable directory with free space, then run "
                f"`runforgectl recover --workspace {self.workspace}`"
            ),
            details={
                "index_path": str(self.path),
                "error_type": type(exc).__name__,
                "errno": exc.errno,
            },
        )
