"""Executors: how a run's trainer is started, watched, signalled and reaped.

The supervisor never touches a process: it asks an ``Executor`` to start a trainer and
gets a ``TrainerHandle``, the one object through which it

- reads the trainer's output (``output()``: stdout and stderr lines, in order per stream),
- signals the trainer for a graceful cancel (``signal_trainer()``: the trainer only, never
  its workers, which must live until it has flushed),
- kills the whole tree (``kill_tree()``),
- waits for the exit status (``wait()``; None when the executor cannot know it),
- and keeps a durable ``HandleRecord`` that a restarted daemon passes to
  ``Executor.reattach`` to find the run again (``refresh()`` says when it changed).

The cancel policy (grace, countdown, deadline) is ``runforged.cancel``'s and talks to a
handle; how a run ended is ``runforged.outcome``'s. ``LocalExecutor`` is the first
implementation: a child process of the daemon in its own session, its pipes read by the
daemon. Others fit the same shape: a per-run monitor process that outlives the daemon
(its handle follows the run folder and asks the monitor to signal), or a cluster job
(no pid, events from the run folder on a shared filesystem, cancel as a request).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec
import structlog

from runforged.proctree import ProcessIdentity, ProcessTree, boot_id, is_same_live_process

if TYPE_CHECKING:
    from runforged.ray_executor import RayPlacement

log = structlog.get_logger("runforged.executor")

Stream = Literal["stdout", "stderr"]

READ_CHUNK = 1 << 16
MAX_LINE = 1 << 20  # a longer unfinished line is passed on as it is, the rest follows
PIPE_DRAIN_TIMEOUT_S = 5.0  # after the exit: workers may hold the pipes open
EXIT_POLL_S = 0.05  # how often a re-attached trainer (not our child) is checked


@dataclass(frozen=True)
class TrainerSpec:
    """What to run for one run, resolved and trust-checked by the caller."""

    run_id: str
    argv: list[str]
    env: Mapping[str, str]
    cwd: Path  # the workspace
    # Where a run on a cluster goes (executor "ray"); None for a local run.
    placement: RayPlacement | None = None


class HandleRecord(msgspec.Struct, kw_only=True):
    """Enough to find a trainer again after the daemon restarts, and never mistake a
    reused pid for it: pid + start time + boot id, and every descendant seen while it ran
    (workers that left the process group included, so that they can still be reached)."""

    executor: str = "local"
    pid: int = 0
    create_time: float = 0.0
    boot_id: str = ""
    descendants: list[ProcessIdentity] = []
    # A run on a cluster (executor "ray"): its job (the run id), the cluster's address
    # and the run folder (absolute) where its entrypoint writes.
    job_id: str = ""
    address: str = ""
    job_run_dir: str = ""


class TrainerHandle(Protocol):
    """One started (or re-attached) trainer; see the module docstring."""

    @property
    def pid(self) -> int | None:
        """The trainer's pid on this machine, None when it has none here."""

    @property
    def record(self) -> HandleRecord: ...

    @property
    def outlives_daemon(self) -> bool:
        """Whether the trainer goes on when the daemon stops (a cluster job), so that a
        restarted daemon adopts it rather than cancelling it."""

    @property
    def started(self) -> bool:
        """Whether the trainer process was started (False: e.g. still pending on a
        cluster, or refused by it; ``start_failure`` then says why)."""

    @property
    def start_failure(self) -> str:
        """Why the trainer never started ("" if it did, or if it is not known)."""

    def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """The trainer's output lines (without the newline) until both streams close."""

    def refresh(self) -> bool:
        """Look for new descendants; True when ``record`` changed (persist it again)."""

    def signal_trainer(self) -> bool:
        """Ask the trainer to stop (SIGTERM to it alone); True if it was delivered."""

    def kill_tree(self) -> int:
        """SIGKILL the trainer and every descendant; returns how many were signalled."""

    def keep_deadline(self, deadline: float) -> None:
        """A cancel's SIGKILL deadline (UNIX time), for a trainer that outlives the daemon
        to keep across a restart (nothing to do for one that dies with it)."""

    @property
    def kept_deadline(self) -> float | None:
        """The deadline a re-attached trainer kept from before the restart, if any."""

    def is_alive(self) -> bool: ...

    async def wait(self) -> int | None:
        """The trainer's exit status once it has exited (negative: killed by that
        signal); None when it cannot be known (a trainer re-attached without pipes)."""

    async def close(self) -> None:
        """Stop reading output (after the exit and the drain)."""


class Executor(Protocol):
    name: str

    async def start(self, spec: TrainerSpec) -> TrainerHandle:
        """Start the trainer; raises OSError when it cannot be started."""

    def reattach(self, record: HandleRecord) -> TrainerHandle | None:
        """The trainer a previous daemon recorded, or None when the record means nothing
        any more (another boot). The handle may be of a trainer that has already exited:
        its workers can still be alive and are reached through ``kill_tree``."""


# --------------------------------------------------------------------------- local


class LocalTrainerHandle:
    """A trainer that is a child of this daemon (``process``), or one a crashed daemon
    left behind (no ``process``: no pipes, no exit status, watched by pid + start time)."""

    def __init__(
        self, tree: ProcessTree, record: HandleRecord, process: asyncio.subprocess.Process | None
    ) -> None:
        self._tree = tree
        self._record = record
        self._process = process
        self._readers: list[asyncio.Task[None]] = []
        self._lines: asyncio.Queue[tuple[Stream, list[bytes]] | None] = asyncio.Queue()

    @property
    def pid(self) -> int | None:
        return self._record.pid

    @property
    def record(self) -> HandleRecord:
        return self._record

    outlives_daemon = False  # its pipes die with the daemon
    started = True
    start_failure = ""
    kept_deadline = None

    def keep_deadline(self, deadline: float) -> None:
        pass  # reconciliation cancels a survivor with its grace: nothing outlives us

    def _start_readers(self) -> None:
        assert self._process is not None
        stdout, stderr = self._process.stdout, self._process.stderr
        assert stdout is not None and stderr is not None
        self._readers = [
            asyncio.ensure_future(self._read(stdout, "stdout")),
            asyncio.ensure_future(self._read(stderr, "stderr")),
        ]

    async def _read(self, stream: asyncio.StreamReader, name: Stream) -> None:
        # One queue item per chunk read, not per line: the relay's hot path.
        pending = b""
        try:
            while chunk := await stream.read(READ_CHUNK):
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_LINE:
                    lines.append(pending)
                    pending = b""
                if lines:
                    self._lines.put_nowait((name, lines))
            if pending:
                self._lines.put_nowait((name, [pending]))
        finally:
            self._lines.put_nowait(None)

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        open_streams = len(self._readers)
        while open_streams:
            item = await self._lines.get()
            if item is None:
                open_streams -= 1
                continue
            name, lines = item
            for line in lines:
                yield name, line

    def refresh(self) -> bool:
        if not self._tree.refresh():
            return False
        self._record.descendants = self._tree.descendants
        return True

    def signal_trainer(self) -> bool:
        return self._tree.terminate_leader()

    def kill_tree(self) -> int:
        # Kill first (every moment counts at a deadline), then look for descendants that
        # appeared since the last refresh and kill those too.
        killed = len(self._tree.kill_all())
        if self._tree.refresh():
            killed += len(self._tree.kill_all())
        self._record.descendants = self._tree.descendants
        return killed

    def is_alive(self) -> bool:
        if self._process is not None:
            return self._process.returncode is None
        leader = self._tree.leader
        return leader is not None and is_same_live_process(leader)

    async def wait(self) -> int | None:
        if self._process is not None:
            return await self._process.wait()
        while self.is_alive():
            self._tree.refresh()
            await asyncio.sleep(EXIT_POLL_S)
        return None

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class LocalExecutor:
    """Trainers as children of the daemon, each leading its own session (so its process
    group is the run's tree), stdin from /dev/null, stdout and stderr piped to us."""

    name = "local"

    async def start(self, spec: TrainerSpec) -> LocalTrainerHandle:
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # leads its own process group
        )
        tree = ProcessTree(process.pid)
        leader = tree.leader
        record = HandleRecord(
            executor=self.name,
            pid=process.pid,
            create_time=leader.create_time if leader else 0.0,
            boot_id=boot_id(),
        )
        handle = LocalTrainerHandle(tree, record, process)
        handle._start_readers()
        return handle

    def reattach(self, record: HandleRecord) -> LocalTrainerHandle | None:
        if record.boot_id != boot_id():
            return None  # another boot: the pids name other processes, if any
        identity = ProcessIdentity(record.pid, record.create_time)
        tree = ProcessTree(identity, record.descendants)
        tree.refresh()
        return LocalTrainerHandle(tree, record, None)


async def drain(handle: TrainerHandle, consumer: asyncio.Future[None]) -> None:
    """After the exit: give ``consumer`` (reading ``handle.output()``) up to
    ``PIPE_DRAIN_TIMEOUT_S`` to finish, then stop reading."""
    _done, pending = await asyncio.wait([consumer], timeout=PIPE_DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await handle.close()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
