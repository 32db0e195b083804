"""The cancel-intent journal: a cancel is durable before its trainer is signalled.

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

import structlog

log = structlog.get_logger("runforged.intents")


class CancelJournal:
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
