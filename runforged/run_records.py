"""Durable records of the runs a daemon accepted, from ``train`` to their verdict.

``<state dir>/runs/<run id>/`` (private, 0700) is created when the daemon accepts a run,
before it answers ``train``, with ``accepted.json``: everything needed to start the run
later (a queued run survives a daemon kill and starts under the next daemon), to
re-attach to its monitor, and to classify it. The run's monitor adds its own files there
(``runforged.monitor``: lock, monitor.json, monitor.sock, exit.json). The folder is
deleted once the run's verdict is in ``result.json``, its index entry written and its
``run_terminal`` event persisted; until then, a starting daemon finds it and finishes
what is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import msgspec
import structlog

from runforge_contract.atomicio import write_bytes_atomic
from runforged import monitor
from runforged.disk_formats import RequestRecord

log = structlog.get_logger("runforged.run_records")


class MonitorSpec(msgspec.Struct, kw_only=True):
    """What the monitor reads from ``accepted.json`` (its ``spec``)."""

    run_id: str
    workspace: str
    run_dir: str  # absolute
    cwd: str
    argv: list[str]
    env: dict[str, str]
    grace_s: float
    max_log_bytes: int


class AcceptedRecord(msgspec.Struct, kw_only=True):
    """``accepted.json``."""

    run_id: str
    workspace: str
    accepted_ns: int  # time.time_ns() at acceptance: the queue's order across restarts
    request: RequestRecord
    spec: MonitorSpec
    max_concurrent: int = 1
    max_concurrent_global: int = 4


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AcceptedRecord)


class RunRecords:
    """The record folders under ``<state dir>/runs``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def folder(self, run_id: str) -> Path:
        return self.directory / run_id

    def accept(self, record: AcceptedRecord) -> Path:
        """Create the run's record folder with ``accepted.json`` (durable on return)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = self.folder(record.run_id)
        folder.mkdir(mode=0o700, exist_ok=True)
        write_bytes_atomic(folder / monitor.ACCEPTED, _encoder.encode(record), 0o600)
        return folder

    def drop(self, run_id: str) -> None:
        """Forget a run whose verdict is final (everything of it is in its run folder)."""
        folder = self.folder(run_id)
        with contextlib.suppress(FileNotFoundError):
            # accepted.json goes first: a folder without it is only leftovers.
            (folder / monitor.ACCEPTED).unlink()
        shutil.rmtree(folder, ignore_errors=True)

    def load_all(self) -> list[tuple[Path, AcceptedRecord]]:
        """Every run with a readable record, oldest acceptance first. Folders without one
        (a crash between their creation and the record, or after ``drop`` began) are
        removed; interrupted atomic writes (temp files) are cleaned up."""
        if not self.directory.is_dir():
            return []
        found = []
        for folder in sorted(self.directory.iterdir()):
            if not folder.is_dir():
                continue
            remove_stale_temp_files(folder)
            try:
                record = _decoder.decode((folder / monitor.ACCEPTED).read_bytes())
            except FileNotFoundError:
                if not monitor.monitor_is_running(str(folder)):
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            except (OSError, msgspec.DecodeError) as exc:
                log.error("run_record_unreadable", path=str(folder), error=str(exc))
                continue
            found.append((folder, record))
        found.sort(key=lambda item: item[1].accepted_ns)
        return found


def remove_stale_temp_files(directory: Path) -> int:
    """Delete ``.<name>.tmp.<pid>...`` files (atomic writes that were interrupted) whose
    writer is gone; returns how many. A live writer's temp file is left alone."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(".") or ".tmp." not in name:
            continue
        pid_text = name.rpartition(".tmp.")[2].split(".")[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(directory / name)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not monitor.is_zombie(pid)
