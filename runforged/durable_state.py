"""The daemon's own durable state, in ``<state dir>`` (private, 0700): what a restarted
daemon needs to finish what a crashed one started.

- ``InflightRecords``: ``inflight/<run id>.json``, one per spawned run until it is
  terminal: the run, and the executor's handle record to find its trainer again.
- ``CancelJournal``: a cancel is durable before its trainer is signalled.

``<state dir>/cancel-intents.log`` holds one run id per line, appended and fdatasync'ed
before the SIGTERM. Appending to a file kept open costs one disk sync (an atomic
rewrite of the run's record costs two, plus a create and a rename), and cancels that
arrive together — a user cancelling 32 runs, a daemon stopping — share that one sync.
After a crash, the next daemon reads it to know which in-flight runs were being
cancelled; it is emptied whenever no run is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import msgspec
import structlog

from runforge_contract.atomicio import write_bytes_atomic
from runforged.executor import HandleRecord

log = structlog.get_logger("runforged.durable_state")

STATE_DIR_ENV = "RUNFORGE_STATE_DIR"


def state_dir() -> Path:
    """``$RUNFORGE_STATE_DIR``, else ``$XDG_STATE_HOME/runforge``, else
    ``~/.local/state/runforge``: where in-flight runs are recorded for crash recovery."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "runforge"


def make_private(directory: Path) -> None:
    """Create ``directory`` private like the runtime directory (it names pids and
    workspaces), and make it so if it already existed."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)


class InflightRecord(HandleRecord, kw_only=True):
    """``<state dir>/inflight/<run_id>.json``: enough to classify the run after a daemon
    crash, and (the executor's ``HandleRecord`` fields) to find its trainer again."""

    run_id: str
    workspace: str
    run_dir: str  # workspace-relative
    started_at: str
    cancel_grace_s: float = 5.0
    max_log_bytes: int = 64 << 20  # logs.txt's cap, kept by a daemon that adopts the run

    def handle_record(self) -> HandleRecord:
        return HandleRecord(
            **{name: getattr(self, name) for name in HandleRecord.__struct_fields__}
        )


_json = msgspec.json.Encoder()
_inflight_decoder = msgspec.json.Decoder(InflightRecord)


class InflightRecords:
    """The in-flight records of ``<state dir>/inflight``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, record: InflightRecord) -> None:
        """Write (or replace) ``record`` atomically; a failure is logged, not raised."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_bytes_atomic(
                self.directory / f"{record.run_id}.json", _json.encode(record), 0o600
            )
        except OSError as exc:
            log.error("inflight_record_failed", run_id=record.run_id, error=str(exc))

    def drop(self, run_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{run_id}.json").unlink()

    def load_all(self) -> list[InflightRecord]:
        """Every readable record, by run id; unreadable ones are logged and deleted."""
        if not self.directory.is_dir():
            return []
        records = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(_inflight_decoder.decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError, RecursionError) as exc:
                log.error("inflight_record_unreadable", path=str(path), error=str(exc))
                path.unlink(missing_ok=True)
        return records


class CancelJournal:
    """``<state dir>/cancel-intents.log`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pending: list[tuple[str, asyncio.Future[None]]] = []

    def recorded(self) -> set[str]:
        """Run ids with a recorded cancel intent (read at start-up, before any new run)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return set()
        return {line.strip() for line in text.splitlines() if line.strip()}

    async def record(self, run_id: str) -> None:
        """Return once ``run_id``'s intent is on disk (or its write failed and was logged:
        a cancel is never refused because the disk is full)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((run_id, future))
        await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            os.write(self._fd, "".join(f"{run_id}\n" for run_id, _ in batch).encode())
            os.fdatasync(self._fd)
        except OSError as exc:
            log.error("cancel_intent_not_durable", runs=[r for r, _ in batch], error=str(exc))
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    def clear(self) -> None:
        """Forget every intent: call only when no run is in flight."""
        if self._pending:
            return
        with contextlib.suppress(OSError):
            if self._fd is not None:
                os.ftruncate(self._fd, 0)
            else:
                self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
