"""The daemon's side of the per-run monitor (``runforged.monitor``): start one, attach to
it (again, after a restart), relay its events, ask it to cancel, learn the exit status.

A monitor outlives the daemon, so nothing here owns a process: the daemon spawns the
monitor, which detaches at once (its first process exits after reporting READY), and
from then on talks to it over its Unix socket. The run's lock (``flock`` on
``<record dir>/lock``) is taken by the daemon before the spawn and handed to the monitor,
so at every moment either a live monitor holds it or no monitor exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from runforge_protocol.messages import Event
from runforged import monitor

log = structlog.get_logger("runforged.monitor_executor")

MONITOR_PROGRAM = monitor.__file__
ATTACH_TIMEOUT_S = 10.0
READ_CHUNK = 1 << 18
_EVENT_PREFIX = b'{"seq":'
_event_decoder = msgspec.json.Decoder(Event)


class MonitorError(Exception):
    """The monitor could not be started or reached."""


async def start_monitor(record_dir: Path, run_seq: int, env: dict[str, str]) -> int:
    """Spawn the monitor of the run recorded in ``record_dir`` (``accepted.json`` written)
    and return its pid once it has started the trainer; raises MonitorError."""
    lock_fd = os.open(record_dir / monitor.LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(lock_fd)
        raise MonitorError(f"the run's lock is held: {exc}") from exc
    try:
        log_fd = os.open(
            record_dir / monitor.MONITOR_LOG,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                MONITOR_PROGRAM,
                str(record_dir),
                str(run_seq),
                str(lock_fd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_fd,
                pass_fds=(lock_fd,),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
    finally:
        os.close(lock_fd)  # the monitor holds the lock now (or nobody, if it failed)
    out, _ = await process.communicate()
    answer = out.decode(errors="replace").strip()
    if process.returncode != 0 or not answer.startswith("READY "):
        raise MonitorError(answer.removeprefix("ERROR ") or f"monitor exited {process.returncode}")
    return int(answer.split()[1])


class MonitorExecutor:
    """Runs on this machine, each under its own monitor: the executor of every local run.
    Where ``LocalExecutor`` hands the supervisor a trainer's raw output, a monitor hands
    it events already numbered and persisted, keeps a cancel's deadline itself, and
    outlives the daemon; the supervisor attaches to it again after a restart."""

    name = "monitor"

    async def start(self, record_dir: Path, run_seq: int, env: dict[str, str]) -> int:
        return await start_monitor(record_dir, run_seq, env)

    def connection(self, record_dir: Path, on_event: Callable[[Event], None]) -> MonitorConnection:
        return MonitorConnection(record_dir, on_event)


class MonitorConnection:
    """One attachment to a live monitor: events go to ``on_event`` in run_seq order,
    from the ``since`` given to ``attach`` on; ``exit`` is set once the monitor says the
    trainer was reaped; ``closed`` resolves when the connection ends (either way)."""

    def __init__(self, record_dir: Path, on_event: Callable[[Event], None]) -> None:
        self.record_dir = record_dir
        self._on_event = on_event
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self.hello: dict[str, Any] = {}
        self.exit: dict[str, Any] | None = None
        self.undecodable = 0

    async def attach(self, since: int) -> dict[str, Any]:
        """Connect (retrying while the socket appears) and say from where to send."""
        path = str(self.record_dir / monitor.SOCKET)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + ATTACH_TIMEOUT_S
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(path, limit=1 << 22)
                break
            except OSError as exc:
                if loop.time() > give_up or not monitor.monitor_is_running(str(self.record_dir)):
                    raise MonitorError(f"cannot reach the monitor: {exc}") from exc
                await asyncio.sleep(0.02)
        self._send({"op": "attach", "since": since})
        self._pump = asyncio.ensure_future(self._read())
        self.hello = await self._reply("hello")
        return self.hello

    async def cancel(self, grace_s: float | None, deadline: float | None = None) -> dict[str, Any]:
        """Ask the monitor to cancel; its answer (``already``, ``deadline_in_s``...)."""
        self._send({"op": "cancel", "grace_s": grace_s, "deadline": deadline})
        return await self._reply("cancel")

    async def closed(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._pump)

    async def close(self) -> None:
        """Detach (the monitor and its run go on)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise MonitorError("not attached to the monitor")
        self._writer.write(json.dumps(message).encode() + b"\n")

    async def _reply(self, op: str) -> dict[str, Any]:
        while True:
            if self._pump is not None and self._pump.done() and self._replies.empty():
                raise MonitorError("the monitor went away")
            getter = asyncio.ensure_future(self._replies.get())
            waiters: set[asyncio.Future[Any]] = {getter}
            if self._pump is not None:
                waiters.add(self._pump)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            reply = getter.result()
            if reply.get("op") == op:
                return reply

    async def _read(self) -> None:
        assert self._reader is not None
        pending = b""
        try:
            while chunk := await self._reader.read(READ_CHUNK):
                data = pending + chunk
                end = data.rfind(b"\n") + 1
                pending = data[end:]
                if end:
                    self._lines(data[:end])
        except OSError as exc:
            log.warning("monitor_connection_lost", record_dir=str(self.record_dir), error=str(exc))

    def _lines(self, block: bytes) -> None:
        """Whole lines read at once: usually all events, decoded in one call; a block
        that also holds a reply (or a line that does not decode) goes line by line."""
        if block.startswith(_EVENT_PREFIX) and b'\n{"op"' not in block:
            try:
                events = _event_decoder.decode_lines(block)
            except msgspec.DecodeError:
                pass
            else:
                on_event = self._on_event
                for event in events:
                    on_event(event)
                return
        for line in block.split(b"\n")[:-1]:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if line.startswith(_EVENT_PREFIX):
            try:
                event = _event_decoder.decode(line)
            except msgspec.DecodeError:
                # The monitor validates every line it writes; count rather than die.
                self.undecodable += 1
                return
            self._on_event(event)
            return
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("op") == "exit":
            self.exit = message
        self._replies.put_nowait(message)


def probe(record_dir: Path) -> str:
    """What a record folder says about its run right now: ``exited`` (exit.json written),
    ``running`` (a live monitor holds the lock), ``monitor_lost`` (a monitor was
    recorded, none holds the lock, no exit status), or ``never_started``."""
    directory = str(record_dir)
    if monitor.read_exit_record(directory) is not None:
        return "exited"
    if monitor.monitor_is_running(directory):
        # It may have just written exit.json and be saying goodbye.
        return "exited" if monitor.read_exit_record(directory) is not None else "running"
    if monitor.read_exit_record(directory) is not None:
        return "exited"
    if monitor.read_monitor_record(directory) is not None:
        return "monitor_lost"
    return "never_started"


def sweep_run(run_id: str) -> int:
    """SIGKILL every live process of this user still carrying the run's id in its
    environment (what is left of a run whose monitor was killed). Returns the count."""
    killed = 0
    for _ in range(50):
        pids = monitor.processes_of_run(run_id)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.02)
    return killed
