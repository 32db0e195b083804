"""The runtime directory: private to its user, owned by exactly one daemon at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from runforge_protocol.discovery import Endpoints, RuntimeDirError, check_runtime_dir


def prepare_runtime_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or check that an existing one is ours and private
    (the rule is ``runforge_protocol.discovery.check_runtime_dir``, shared with the
    client). Raises RuntimeDirError."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    check_runtime_dir(path, refusing_to="start")


class DaemonLock:
    """An exclusive ``flock`` on the lock file, taken before any socket is bound.

    libzmq's ``bind`` on ``ipc://`` silently replaces an existing socket file, so without
    this lock a second daemon would steal the first one's endpoint. The kernel drops the
    lock when its holder dies, so a crashed daemon never leaves a stale lock behind: the
    next daemon takes it and removes the dead one's socket files.
    """

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self._endpoints.lock_path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeDirError(
                f"another runforged (pid {holder}) already owns {self._endpoints.runtime_dir}; "
                f"stop it with 'runforgectl daemon stop' or use another --runtime-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        # Whatever socket files exist now belong to a daemon that is gone.
        self.remove_socket_files()

    def remove_socket_files(self) -> None:
        for path in (self._endpoints.control_path, self._endpoints.events_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def release(self) -> None:
        """Remove the socket files (libzmq does not), then the lock file, then unlock."""
        if self._fd is None:
            return
        self.remove_socket_files()
        with contextlib.suppress(FileNotFoundError):
            self._endpoints.lock_path.unlink()
        os.close(self._fd)
        self._fd = None
