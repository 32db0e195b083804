"""Process-tree mechanics for one trainer: record its descendants, signal them, find survivors.

Mechanics only: nothing here knows about grace windows, countdowns or terminal states (that
policy lives in ``runforged.cancel``). A process is identified by its pid *and* its start
time, so a pid the kernel has handed to an unrelated process is never signalled. Every
operation tolerates processes that have already exited.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import psutil

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# CONFIG_PROC_CHILDREN (Linux >= 3.5, on in mainstream distributions' kernels).
PROC_CHILDREN_FILES = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


class ProcessIdentity(msgspec.Struct, frozen=True):
    """One process, told apart from any later process that reuses its pid."""

    pid: int
    create_time: float  # psutil's start time (UNIX seconds); stable for the process's life

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the process ``pid`` right now, or None if there is none."""
        start = _create_time(pid)
        return None if start is None else cls(pid, start)


def boot_id() -> str:
    """This boot's id: a persisted (pid, create_time) is meaningful only within one boot."""
    return BOOT_ID_PATH.read_text(encoding="ascii").strip()


def is_same_live_process(identity: ProcessIdentity) -> bool:
    """Whether ``identity`` still names a live (not zombie) process, e.g. a trainer recorded
    by a daemon that crashed. Compare boot ids first: across a reboot the answer is no."""
    try:
        process = psutil.Process(identity.pid)
        return (
            process.create_time() == identity.create_time
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class ProcessTree:
    """The trainer (leader of its own process group) and every descendant ever seen.

    The daemon spawns the trainer with ``start_new_session=True``, so the trainer's pid is
    also its process-group id. Descendants that leave the group (``setsid``, their own
    process group) are only reachable through what ``refresh()`` recorded while their
    parent was alive, hence the supervisor calls it periodically and right before a kill.
    ``refresh()`` may run in a worker thread while the other methods run on the event
    loop: records are only ever added (or replaced when their pid was reused).
    """

    def __init__(
        self, leader: int | ProcessIdentity, descendants: Iterable[ProcessIdentity] = ()
    ) -> None:
        """``leader``: the pid of a trainer just spawned (its start time is read now; if it
        is already gone the tree is empty), or an identity recorded earlier, e.g. persisted
        by a daemon that then crashed, with the ``descendants`` recorded with it."""
        self.leader = ProcessIdentity.of(leader) if isinstance(leader, int) else leader
        self._descendants = {identity.pid: identity for identity in descendants}

    @property
    def descendants(self) -> list[ProcessIdentity]:
        """Every descendant recorded so far, alive or not, oldest record first."""
        return list(self._descendants.values())

    def refresh(self) -> list[ProcessIdentity]:
        """Record the live descendants of the leader and of every recorded descendant still
        alive (so workers that outlived the trainer keep being followed). Returns the ones
        seen for the first time."""
        live = [p for p in self._recorded() if _create_time(p.pid) == p.create_time]
        pending = [p.pid for p in live]
        visited = set(pending)
        new: list[ProcessIdentity] = []
        children_of = _children_reader()
        while pending:
            parent = pending.pop()
            for child in children_of(parent):
                if child in visited:
                    continue
                visited.add(child)
                start = _child_start_time(child, parent)
                if start is None:
                    continue
                pending.append(child)
                known = self._descendants.get(child)
                if known is None or known.create_time != start:
                    # A recorded pid with a new start time is a new descendant: the old
                    # process is gone, so nothing is lost by replacing its record.
                    self._descendants[child] = ProcessIdentity(child, start)
                    new.append(self._descendants[child])
        return new

    def terminate_leader(self) -> bool:
        """SIGTERM to the leader only (never its workers). True if it was delivered."""
        return self.leader is not None and signal_process(self.leader, signal.SIGTERM)

    def kill_all(self) -> list[ProcessIdentity]:
        """SIGKILL the leader's process group and every recorded process that is still the
        same process. Returns the recorded processes that were signalled."""
        if self.leader is not None and _group_is_trainers(self.leader):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.leader.pid, signal.SIGKILL)
        return [p for p in self._recorded() if signal_process(p, signal.SIGKILL)]

    def survivors(self) -> list[ProcessIdentity]:
        """Recorded processes (leader included) that are still alive and not zombies."""
        return [p for p in self._recorded() if is_same_live_process(p)]

    def _recorded(self) -> list[ProcessIdentity]:
        leader = [] if self.leader is None else [self.leader]
        return leader + list(self._descendants.values())


def signal_process(identity: ProcessIdentity, sig: int) -> bool:
    """Send ``sig`` to ``identity`` if that process still exists. True if delivered.

    On Linux a pidfd pins the process between the identity check and the signal, so a pid
    recycled in between cannot be hit; elsewhere the window is the few microseconds between
    the check and ``os.kill``.
    """
    try:
        pidfd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return False
    except OSError as error:
        # Kernels before 5.3 and some seccomp profiles refuse pidfds.
        if error.errno not in (errno.ENOSYS, errno.EPERM):
            raise
        return _check_then_kill(identity, sig)
    try:
        if _create_time(identity.pid) != identity.create_time:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return _check_then_kill(identity, sig)
    finally:
        os.close(pidfd)


def _group_is_trainers(leader: ProcessIdentity) -> bool:
    """Whether the process group whose id is the leader's pid is still the trainer's."""
    # Only the process holding pid P can create group P, and Linux does not hand out a pid
    # that is still some group's id. So while P is free or still the leader's, a group P is
    # the trainer's; once a stranger holds P, the trainer's group is gone. (The one gap: a
    # stranger takes P, starts its own group and exits, all between two looks.)
    holder = _create_time(leader.pid)
    return holder is None or holder == leader.create_time


def _check_then_kill(identity: ProcessIdentity, sig: int) -> bool:
    if _create_time(identity.pid) != identity.create_time:
        return False
    try:
        os.kill(identity.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _create_time(pid: int) -> float | None:
    try:
        start: float = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return start


def _child_start_time(child: int, parent: int) -> float | None:
    """The start time of ``child`` if it is still ``parent``'s child: read before the
    parent, so that a pid reused after the listing is never taken for a descendant."""
    try:
        process = psutil.Process(child)
        start: float = process.create_time()
        if process.ppid() != parent:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return start


def _children_reader() -> Callable[[int], list[int]]:
    """How to list a process's children: from /proc/<pid>/task/<tid>/children, which costs
    as much as the tree is large, or, on kernels built without it, from one pass over
    every process on the machine."""
    if PROC_CHILDREN_FILES:
        return _children_from_proc
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_table().items():
        children.setdefault(ppid, []).append(pid)
    return lambda pid: children.get(pid, [])


def _children_from_proc(pid: int) -> list[int]:
    children: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children", "rb") as listing:
                children.extend(int(child) for child in listing.read().split())
        except OSError:
            continue  # the thread or the process exited meanwhile
    return children


def _parent_table() -> dict[int, int]:
    """pid -> ppid for every process, in one pass over /proc."""
    table: dict[int, int] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info["ppid"]
        if ppid is not None:
            table[process.pid] = ppid
    return table
