"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

Standard library only (and not even ``pathlib``): the runner imports this under the
user's interpreter, the per-run monitor and the Ray job's entrypoint write their records
with it, and the daemon uses the same helper for every metadata file it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never
    a torn mix, and the new content survives a crash once this returns."""
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    tmp = os.path.join(directory, f".{os.path.basename(target)}.tmp.{os.getpid()}.{id(data):x}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> None:
    """Atomically write ``obj`` as indented UTF-8 JSON with a trailing newline."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or create inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
