"""Where a user's daemon lives: the runtime directory and the endpoints inside it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

RUNTIME_DIR_ENV = "RUNFORGE_RUNTIME_DIR"
CONTROL_SOCKET = "control.sock"
EVENTS_SOCKET = "events.sock"
LOCK_FILE = "runforged.lock"
PID_FILE = "runforged.pid"


def default_runtime_dir() -> Path:
    """``$RUNFORGE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/runforge``, else a per-uid
    directory under the temp dir (``/tmp/runforge-<uid>``)."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "runforge"
    # Imported here: tempfile (and the shutil, random and compression modules it pulls in)
    # would cost every runforgectl start ~2 ms for a fallback most users never reach.
    import tempfile

    return Path(tempfile.gettempdir()) / f"runforge-{os.getuid()}"


@dataclass(frozen=True)
class Endpoints:
    """The files and ZeroMQ endpoints of one daemon, all inside its runtime directory."""

    runtime_dir: Path

    @classmethod
    def resolve(cls, runtime_dir: str | os.PathLike[str] | None = None) -> Endpoints:
        if runtime_dir is None:
            return cls(default_runtime_dir())
        return cls(Path(runtime_dir).expanduser().absolute())

    @property
    def control_path(self) -> Path:
        return self.runtime_dir / CONTROL_SOCKET

    @property
    def events_path(self) -> Path:
        return self.runtime_dir / EVENTS_SOCKET

    @property
    def lock_path(self) -> Path:
        return self.runtime_dir / LOCK_FILE

    @property
    def pid_path(self) -> Path:
        return self.runtime_dir / PID_FILE

    @property
    def control(self) -> str:
        return f"ipc://{self.control_path}"

    @property
    def events(self) -> str:
        return f"ipc://{self.events_path}"


# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_IPC_PATH = 107


class RuntimeDirError(Exception):
    """The runtime directory cannot be used; the message says why and what to do."""


class RuntimeDirMissing(RuntimeDirError):
    """The runtime directory does not exist (to a client: no daemon runs there)."""


def check_runtime_dir(path: Path, *, refusing_to: str) -> None:
    """The one rule for a runtime directory, applied by the daemon before it binds and by
    the client before it connects (TRUST_MODEL.md): a directory (not a symlink) owned by
    this user and closed to group and others; otherwise a socket in it may be someone
    else's, or someone else could put one there. ``refusing_to`` ends the refusal
    ("start", "connect"). Raises :class:`RuntimeDirMissing` when it does not exist, and
    :class:`RuntimeDirError` for every other refusal."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RuntimeDirMissing(f"the runtime directory {path} does not exist") from None
    except PermissionError:
        raise RuntimeDirError(
            f"permission denied on the runtime directory {path} (another user's?); "
            f"use your own with --runtime-dir or {RUNTIME_DIR_ENV}"
        ) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(
            f"the runtime directory {path} is not a directory (or is a symlink); "
            f"refusing to {refusing_to}"
        )
    if st.st_uid != os.getuid():
        raise RuntimeDirError(
            f"the runtime directory {path} belongs to uid {st.st_uid} (owned by another "
            f"user, not by you: uid {os.getuid()}); refusing to {refusing_to}. Use your "
            f"own with --runtime-dir or {RUNTIME_DIR_ENV}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise RuntimeDirError(
            f"the runtime directory {path} has mode {mode:04o}: it must not be accessible "
            f"to group or others (they could put a socket there); refusing to "
            f"{refusing_to}. Fix it with: chmod 700 {path}"
        )
    for endpoint in (path / CONTROL_SOCKET, path / EVENTS_SOCKET):
        if len(str(endpoint).encode()) > MAX_IPC_PATH:
            raise RuntimeDirError(
                f"the runtime directory path is too long for a Unix socket ({endpoint}); "
                f"choose a shorter one with --runtime-dir"
            )
