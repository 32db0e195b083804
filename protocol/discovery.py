"""Where a user's daemon lives: the runtime directory and the endpoints inside it."""

from __future__ import annotations

import os
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
