"""What a trainer's parent process does, the one way (Linux ``/proc``; standard library only).

Two programs are a trainer's parent: the per-run monitor (``runforged/monitor.py``) on
this machine, and the Ray job's entrypoint (``runforge_rayjob``) on a cluster node. Where
they decide the same thing, the decision is here:

- **spawn**: the trainer starts in its own session, stdin on ``/dev/null``, stdout and
  stderr on the parent's pipes, and dies with its parent (``PR_SET_PDEATHSIG``), so it
  never runs unwatched; an exec failure is reported to the parent, not lost in the child.
- **the tree**: the parent is a child subreaper, so a process whose own parent exited is
  re-parented to it rather than to init: the trainer's tree is every process below the
  parent, whoever double-forked.
- **kill**: SIGKILL to every live process below the parent, again until none is left (a
  fork racing the kill is caught on the next pass), reaping as it goes.
- **identity**: a process is its pid with its start time (and the boot id), so a reused
  pid is never taken for it.
- **exit record**: ``exit.json``, written atomically once the trainer is reaped and its
  tree is gone, has the same fields from both (``exit_record``); each adds its own.
- **lines**: the trainer's output is cut into lines the same way (``LineSplitter``): a
  line longer than ``MAX_OUTPUT_LINE`` is kept up to there, marked with ``CUT_NOTE``,
  and the rest of it dropped (counted); a cut line is a log line, never an event.
- **the log cap**: ``logs.txt`` stops at ``maxLogBytes`` with one note (``LogCap``), and
  what was not written is said at the end; whoever writes ``logs.txt`` (the monitor for a
  local run, the daemon for a run on a cluster) applies it.

Where each sends the trainer's lines differs and stays in each program (ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runforge_contract.atomicio import write_bytes_atomic
from runforge_contract.timestamps import utc_now

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_SETTLE_S = 10.0  # how long to keep killing and reaping what is left of a tree
MAX_OUTPUT_LINE = 1 << 20  # a longer stdout/stderr line is cut here
CUT_NOTE = b" [runforge: line cut at %d bytes]" % MAX_OUTPUT_LINE

_libc: Any = None


def prctl(option: int, value: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}) failed: {os.strerror(err)}")


def become_subreaper() -> None:
    """Orphans below this process are re-parented to it (and reaped by it)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


# ---------------------------------------------------------------------- identity


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        return handle.read().strip()


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rfind(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    None if there is no such process. With the boot id, it tells a process from a later
    one that reuses its pid."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or not fields or fields[0] in (b"Z", b"X")


def descendants_of(pid: int) -> list[int]:
    """Every live descendant of ``pid``, parents before children."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children", "rb") as listing:
                    children = [int(c) for c in listing.read().split()]
            except OSError:
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    pending.append(child)
    return found


# ---------------------------------------------------------------------- spawn, reap, kill


def spawn_trainer(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, stdout_fd: int, stderr_fd: int
) -> int:
    """Fork and exec the trainer (see the module docstring); its pid. Raises OSError with
    the child's own message if it could not be started (no such program, bad cwd...).
    Call from a single-threaded process (it forks)."""
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    argv = list(argv)
    env = dict(env)
    pid = os.fork()
    if pid == 0:  # the trainer-to-be: nothing here may return
        try:
            os.setsid()
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the prctl took effect
                os._exit(1)
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(signum, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(stdout_fd, 1)
            os.dup2(stderr_fd, 2)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(report_w, f"{type(exc).__name__}: {exc}".encode()[:1000])
        os._exit(127)
    os.close(report_w)
    failure = b""
    while chunk := os.read(report_r, 4096):
        failure += chunk
    os.close(report_r)
    if failure:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise OSError(failure.decode(errors="replace"))
    return pid


def reap_children(trainer_pid: int) -> int | None:
    """Reap every exited child (the trainer, and orphans re-parented here); the trainer's
    exit code (negative: killed by that signal) if it was among them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == trainer_pid:
            code = os.waitstatus_to_exitcode(status)


def kill_tree(on_reaped: Callable[[], None], settle_s: float = KILL_SETTLE_S) -> int:
    """SIGKILL every live process below this one, again and again until none is left or
    ``settle_s`` passes, calling ``on_reaped`` (which reaps) after each pass; how many
    processes were signalled."""
    signalled: set[int] = set()
    give_up = time.monotonic() + settle_s
    while True:
        alive = [p for p in descendants_of(os.getpid()) if not is_zombie(p)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                signalled.add(pid)
        on_reaped()
        if not alive or time.monotonic() > give_up:
            return len(signalled)
        time.sleep(0.005)


# ---------------------------------------------------------------------- lines


class LineSplitter:
    """One pipe's bytes as whole lines (without their newline). A line longer than
    ``MAX_OUTPUT_LINE`` is cut there: ``feed`` returns its head once, apart, and the rest
    of the line is dropped and counted (``take_dropped``)."""

    __slots__ = ("_dropped", "_pending", "cutting")

    def __init__(self) -> None:
        self._pending = b""
        self._dropped = 0
        self.cutting = False  # the current line was cut: drop it up to its newline

    def feed(self, chunk: bytes) -> tuple[list[bytes], bytes | None]:
        """The lines ``chunk`` completes, and the head of a line cut in it (or None)."""
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        if self.cutting and lines:
            self.cutting = False
            self._dropped += len(lines.pop(0)) + 1
        head = None
        if len(self._pending) > MAX_OUTPUT_LINE:
            if self.cutting:
                self._dropped += len(self._pending)
            else:
                head = self._pending[:MAX_OUTPUT_LINE]
                self._dropped += len(self._pending) - MAX_OUTPUT_LINE
                self.cutting = True
            self._pending = b""
        return lines, head

    def rest(self) -> bytes:
        """At end of file: the last line if it had no newline (empty if it was cut)."""
        rest = b"" if self.cutting else self._pending
        self._pending = b""
        return rest

    def take_dropped(self) -> int:
        """Bytes dropped from cut lines since the last call."""
        dropped, self._dropped = self._dropped, 0
        return dropped


class LogCap:
    """``logs.txt`` under its cap (``runforge.maxLogBytes``). Lines are written while they
    fit; the first that does not is replaced by a note (its writer then publishes
    ``logs_truncated``, once); later lines, and the dropped rests of cut lines, are only
    counted, for ``dropped_note`` at the end."""

    def __init__(self, max_bytes: int, logged: int = 0, truncated: bool = False) -> None:
        self.max_bytes = max_bytes
        self.logged = logged  # bytes of logs.txt (what an earlier writer left included)
        self.truncated = truncated
        self.dropped_bytes = 0
        self.dropped_lines = 0

    def admit(self, data: bytes) -> bytes | None:
        """What to write for ``data`` (a line and its newline): ``data`` itself, the cap's
        note when the cap is reached by it (publish ``logs_truncated``), or None."""
        if not self.truncated:
            if self.logged + len(data) <= self.max_bytes:
                self.logged += len(data)
                return data
            self.truncated = True
            self.dropped_bytes += len(data)
            self.dropped_lines += 1
            return (
                f"[runforge: logs.txt reached its cap of {self.max_bytes} bytes "
                "(runforge.maxLogBytes); later output of this run is discarded]\n"
            ).encode()
        self.dropped_bytes += len(data)
        self.dropped_lines += 1
        return None

    def dropped_note(self) -> bytes:
        """The last line of ``logs.txt`` when anything was not written (else empty)."""
        if not self.dropped_bytes:
            return b""
        return (
            f"[runforge: {self.dropped_bytes} bytes of output "
            f"({self.dropped_lines} lines) were not written to logs.txt]\n"
        ).encode()


# ---------------------------------------------------------------------- exit record


def exit_record(
    *,
    exit_code: int | None,
    spawn_error: str,
    cancel_requested: bool,
    killed: bool,
    **extra: Any,
) -> dict[str, Any]:
    """The trainer's exit status as its parent records it: ``exit_code`` (None: never
    started; negative: the signal that killed it), ``spawn_error`` (why it did not start),
    ``cancel_requested``, ``killed`` (the parent killed the tree at a cancel's deadline or
    on request), ``finished_at``; then the parent's own fields."""
    record: dict[str, Any] = {
        "exit_code": exit_code,
        "spawn_error": spawn_error,
        "finished_at": utc_now(),
        "cancel_requested": cancel_requested,
        "killed": killed,
    }
    record.update(extra)
    return record


def write_exit_record(path: str, record: dict[str, Any], mode: int = 0o600) -> None:
    """``exit.json``, atomically: its presence means the trainer is reaped, its tree is
    gone, and its output is all written."""
    write_bytes_atomic(path, (json.dumps(record, separators=(",", ":")) + "\n").encode(), mode)
