"""The per-run monitor: the trainer's parent, which outlives the daemon.

Like SLURM's ``slurmstepd`` or podman's ``conmon``, one small process per run owns
everything that must not die with ``runforged``: it spawns the trainer and is its parent,
holds its stdout and stderr, turns stderr event lines into the run's events (numbered
``run_seq`` and appended to ``events.jsonl``), copies the rest into a capped
``logs.txt``, keeps a cancel's deadline, kills the whole process tree when the trainer is
reaped or the deadline passes, and writes the trainer's exit status atomically to its
record folder. The daemon connects to it over a Unix socket (``attach``), receives the
events from the ``run_seq`` it names on, and can ask it to cancel; it may come and go
any number of times while the run goes on.

In the run folder it appends to ``events.jsonl`` and ``logs.txt`` and re-reads
``events.jsonl`` for a daemon that attaches late: the names are
``runforge_contract.layout``'s and a line's ``run_seq`` is read by
``runforge_contract.event_log`` (as ``runforged.run_folder`` reads it), so the monitor
and the daemon share one definition of each.

Standard library only, with no daemon code, so that it is small (RSS and start-up are in
BENCHMARKS.md) and runs as ``python -I -S runforged/monitor.py RECORD_DIR`` under the
daemon's interpreter, never the user's. The daemon imports this module for the record
layout and readers below (``read_monitor_record``, ``read_exit_record``...), so there is
one definition of each file.

Record folder (``<state dir>/runs/<run id>/``, private to the user):

- ``accepted.json``: written by the daemon when it accepts the run; ``spec`` is what the
  monitor needs (argv, env, working directory, run folder, grace, log cap);
- ``lock``: held (``flock``) by the monitor for as long as it lives, so a live monitor is
  told from a dead one without trusting a pid;
- ``monitor.json``: the monitor's and the trainer's pid, start time and boot id;
- ``monitor.sock``: where the daemon attaches;
- ``exit.json``: the trainer's exit status, written atomically once it is reaped and its
  process tree is gone (the run's events and logs are on disk by then);
- ``monitor.log``: the monitor's own diagnostics.

Escaped descendants: the monitor is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so a
process the trainer started and whose parent exited is re-parented to the monitor, not to
init; every process below the monitor is killed when the trainer is reaped or at the
cancel deadline. The trainer gets ``PR_SET_PDEATHSIG(SIGKILL)``: if the monitor itself is
killed, the trainer dies with it rather than run unmonitored (the daemon then sweeps what
is left, see TRUST_MODEL.md). The spawn, the tree kill, process identity and the exit
record are ``runforge_contract.trainer_parent``'s, shared with the Ray job's entrypoint.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import selectors
import signal
import socket
import sys
import time
from typing import Any

if __name__ == "__main__":
    # Run as a script under -I -S: the contract package sits beside ours (checkout or
    # site-packages); appended, so it can never shadow the standard library.
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runforge_contract import trainer_parent
from runforge_contract.atomicio import write_bytes_atomic
from runforge_contract.event_log import run_seq_of
from runforge_contract.layout import EVENTS_FILE, LOGS_FILE
from runforge_contract.timestamps import utc_now
from runforge_contract.trainer_events import INT_TYPE, MAX_EVENT_LINE, RELAYED_FIELDS, RUN_START
from runforge_contract.trainer_parent import (
    CUT_NOTE,
    MAX_OUTPUT_LINE,
    LineSplitter,
    LogCap,
    boot_id,
    exit_record,
    is_zombie,
    start_ticks,
    write_exit_record,
)
from runforge_protocol.events import (
    CANCEL_COUNTDOWN,
    CANCEL_ESCALATED,
    CANCEL_REQUESTED,
    INVALID_EVENT_LINE,
    LOGS_TRUNCATED,
    RUN_SPAWNED,
)

ACCEPTED = "accepted.json"
LOCK = "lock"
MONITOR_RECORD = "monitor.json"
SOCKET = "monitor.sock"
EXIT_RECORD = "exit.json"
MONITOR_LOG = "monitor.log"

READ_CHUNK = 1 << 16
MAX_LINE = MAX_OUTPUT_LINE  # a longer stdout/stderr line is cut here (LineSplitter)
MAX_EVENT_DEPTH = 32  # nesting of arrays/objects in one event
DEFAULT_MAX_LOG_BYTES = 64 << 20
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1  # what the daemon's MessagePack codec encodes
CLIENT_BACKLOG_BYTES = 1 << 20  # past this, a slow client catches up from events.jsonl
PIPE_DRAIN_S = 2.0  # after the tree is killed, how long to wait for the pipes' EOF

# ---------------------------------------------------------------------- records


def write_json_atomic(path: str, obj: Any) -> None:
    """Temp file beside ``path``, fsync, rename, fsync the folder (0600)."""
    write_bytes_atomic(path, (json.dumps(obj, separators=(",", ":")) + "\n").encode(), 0o600)


def read_json(path: str) -> dict[str, Any] | None:
    """A small JSON object file, or None if absent, unreadable or not an object."""
    try:
        with open(path, "rb") as handle:
            value = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_monitor_record(record_dir: str) -> dict[str, Any] | None:
    return read_json(os.path.join(record_dir, MONITOR_RECORD))


def read_exit_record(record_dir: str) -> dict[str, Any] | None:
    return read_json(os.path.join(record_dir, EXIT_RECORD))


def monitor_is_running(record_dir: str) -> bool:
    """Whether a live monitor holds the run's lock (never fooled by a reused pid: the lock
    dies with the process that took it)."""
    try:
        fd = os.open(os.path.join(record_dir, LOCK), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also releases the lock if we took it
    return False


def same_process(record: dict[str, Any], prefix: str) -> bool:
    """Whether ``record[prefix + "pid"]`` is still the process recorded (same boot, same
    start time, not a zombie)."""
    pid, ticks = record.get(prefix + "pid"), record.get(prefix + "start_ticks")
    if not isinstance(pid, int) or not isinstance(ticks, int) or pid <= 0:
        return False
    if record.get("boot_id") != boot_id():
        return False
    return start_ticks(pid) == ticks and not is_zombie(pid)


def processes_of_run(run_id: str, exclude: int = 0) -> list[int]:
    """Live processes of this user whose environment names ``run_id`` (every process a
    run started inherits ``RUNFORGE_RUN_ID`` unless it cleared its environment): the sweep
    for a run whose monitor is gone."""
    needle = f"RUNFORGE_RUN_ID={run_id}".encode()
    uid = os.getuid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (os.getpid(), exclude):
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ.split(b"\0") and not is_zombie(int(name)):
            found.append(int(name))
    return found


# ---------------------------------------------------------------------- event lines


class InvalidEvent(Exception):
    """A line that claims to be an event but is not a valid one; the message says why."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# Called by the C scanner only for NaN/Infinity: integers and floats keep its fast path.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
# An escaped UTF-16 surrogate: a pair is fine, a lone one is not valid for msgspec.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_INF = math.inf


def _check_values(container: Any, depth: int) -> None:
    """Integers in the 64-bit range, finite floats, depth at most MAX_EVENT_DEPTH."""
    for value in container.values() if type(container) is dict else container:
        kind = type(value)
        if kind is int:
            if not INT_MIN <= value <= INT_MAX:
                raise InvalidEvent(f"integer {str(value)[:40]} is out of the 64-bit range")
        elif kind is float:
            if value != value or value == _INF or value == -_INF:
                raise InvalidEvent("a number is out of the double range (or NaN)")
        elif kind is dict or kind is list:
            if depth >= MAX_EVENT_DEPTH:
                raise InvalidEvent(f"nested deeper than {MAX_EVENT_DEPTH} levels")
            _check_values(value, depth + 1)


def parse_event(line: bytes) -> tuple[str, bytes] | None:
    """``(event type, the event object as JSON)`` for an event line, None for a plain log
    line; raises InvalidEvent. Only what the daemon's codecs accept passes: 64-bit
    integers, finite numbers, valid UTF-8 without lone surrogates, depth at most 32. The
    line itself is returned when it holds no surrogate escape (the hot path), else its
    canonical re-encoding."""
    parsed = decode_event(line)
    return None if parsed is None else (parsed[0]["event"], parsed[1])


def decode_event(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The one rule for a trainer's event line, used by the monitor and by the daemon's
    own relays (``runforged.trainer_events``): ``(the event object, its JSON)``, None for
    a plain log line; raises InvalidEvent (see :func:`parse_event`)."""
    stripped = line.strip()
    if not stripped.startswith((b"{", b"[")):
        return None
    if len(stripped) > MAX_EVENT_LINE:
        raise InvalidEvent(f"event line of {len(stripped)} bytes exceeds {MAX_EVENT_LINE}")
    try:
        obj = _decoder.decode(stripped.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidEvent("not valid UTF-8") from None
    except RecursionError:
        raise InvalidEvent(f"nested deeper than {MAX_EVENT_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidEvent(f"not valid JSON: {str(exc)[:200]}") from None
    if type(obj) is not dict:
        raise InvalidEvent(f"JSON {type(obj).__name__}, not an event object")
    kind = obj.get("event")
    if type(kind) is not str:
        raise InvalidEvent("JSON object without a string 'event' field")
    required = RELAYED_FIELDS.get(kind)
    if required is None:
        raise InvalidEvent(f"unknown event type {kind[:100]!r}")
    if type(obj.get("timestamp")) is not str:
        raise InvalidEvent(f"{kind}: missing or non-string 'timestamp'")
    for name, kinds in required.items():
        value = obj.get(name)
        if (
            value is None
            or not isinstance(value, kinds)
            or (kinds is INT_TYPE and isinstance(value, bool))
        ):
            raise InvalidEvent(f"{kind}: missing or mistyped field {name!r}")
    _check_values(obj, 1)
    if _SURROGATE_ESCAPE.search(stripped) is None:
        return obj, stripped
    try:
        canonical = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("a string holds a lone UTF-16 surrogate") from None
    return obj, canonical


# ---------------------------------------------------------------------- the monitor


class _Client:
    """One attached daemon connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = bytearray()
        self.attached = False
        self.sent_seq = 0  # the highest run_seq queued for this client
        self.behind = False  # live events skipped: catch up from events.jsonl
        # Where in events.jsonl the next event for this client starts (None: not known
        # yet, found by scanning for ``sent_seq``): a catch-up reads on from here.
        self.file_pos: int | None = None
        self.farewell = b""  # the exit message, queued once the client has caught up


class _Pipe:
    def __init__(self, fd: int, events: bool) -> None:
        self.fd = fd
        self.events = events
        self.lines = LineSplitter()


class Monitor:
    def __init__(self, record_dir: str, spec: dict[str, Any], run_seq: int) -> None:
        self.record_dir = record_dir
        self.spec = spec
        self.run_id: str = spec["run_id"]
        self.run_dir: str = spec["run_dir"]
        self.run_seq = run_seq
        self.log_cap = LogCap(int(spec.get("max_log_bytes") or DEFAULT_MAX_LOG_BYTES))
        self.default_grace_s = float(spec.get("grace_s", 5.0))
        self._prefix = (
            b',"workspace":'
            + json.dumps(spec["workspace"]).encode()
            + b',"run_id":'
            + json.dumps(self.run_id).encode()
            + b',"data":'
        )
        self.sel = selectors.DefaultSelector()
        self.clients: list[_Client] = []
        self.pipes: list[_Pipe] = []
        self.trainer_pid = 0
        self.exit_code: int | None = None
        self.spawn_error = ""
        self.cancel_requested = False
        self.cancel_requested_at: float | None = None  # wall clock
        self.deadline: float | None = None  # monotonic
        self.next_countdown: int | None = None
        self.killed = False
        self.escalated = False
        # run_start seen: the trainer's SIGTERM handler is in place. Before it, SIGTERM's
        # default action would kill the trainer with nothing flushed, so a cancel holds it.
        self.announced = False
        self.term_held = False
        self.invalid_lines = 0
        self.write_failures: dict[str, str] = {}
        self.events_file: Any = None
        self.logs_file: Any = None
        self.listener: socket.socket | None = None
        self.lock_fd = -1
        self.wake_r = -1
        self._batch_ts = b""
        self._unflushed = False  # events.jsonl holds lines not yet handed to the kernel
        # The size of events.jsonl once every line written so far is flushed (None once a
        # write failed: offsets are then unknown and a catch-up scans for run_seq).
        self.events_end: int | None = None

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        """Take the lock, open the run's files, listen, spawn the trainer, record it."""
        if self.lock_fd < 0:
            self.lock_fd = os.open(
                os.path.join(self.record_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        # Usually a no-op: the daemon passes the lock already taken, so that no moment
        # exists between its spawn and our start in which the run looks unowned.
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        os.set_inheritable(self.lock_fd, False)
        trainer_parent.become_subreaper()
        self.events_file = open(  # noqa: SIM115 - lives with the monitor
            os.path.join(self.run_dir, EVENTS_FILE), "ab", buffering=1 << 16
        )
        self.logs_file = open(  # noqa: SIM115
            os.path.join(self.run_dir, LOGS_FILE), "ab", buffering=1 << 16
        )
        with contextlib.suppress(OSError):
            self.log_cap.logged = os.fstat(self.logs_file.fileno()).st_size
        with contextlib.suppress(OSError):
            self.events_end = os.fstat(self.events_file.fileno()).st_size
        sock_path = os.path.join(self.record_dir, SOCKET)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            self.listener.bind(sock_path)
        finally:
            os.umask(old_umask)
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listener")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)  # handled in the loop: a cancel
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        self._spawn()
        record = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "start_ticks": start_ticks(os.getpid()),
            "trainer_pid": self.trainer_pid,
            "trainer_start_ticks": start_ticks(self.trainer_pid) if self.trainer_pid else None,
            "boot_id": boot_id(),
            "started_at": utc_now(),
            "first_run_seq": self.run_seq + 1,
            "spawn_error": self.spawn_error,
        }
        write_json_atomic(os.path.join(self.record_dir, MONITOR_RECORD), record)
        if self.trainer_pid:
            self._publish(
                RUN_SPAWNED,
                json.dumps({"pid": self.trainer_pid, "argv": self.spec["argv"]}).encode(),
            )

    def _spawn(self) -> None:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = trainer_parent.spawn_trainer(
                self.spec["argv"], self.spec["env"], self.spec["cwd"], out_w, err_w
            )
        except OSError as exc:
            self.spawn_error = str(exc)
            os.close(out_r)
            os.close(err_r)
            return
        finally:
            os.close(out_w)
            os.close(err_w)
        self.trainer_pid = pid
        for fd, events in ((out_r, False), (err_r, True)):
            os.set_blocking(fd, False)
            pipe = _Pipe(fd, events)
            self.pipes.append(pipe)
            self.sel.register(fd, selectors.EVENT_READ, pipe)

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Serve until the trainer is reaped and its tree is gone; write exit.json."""
        if self.trainer_pid:
            while self.exit_code is None:
                self._step(self._timeout())
                self._reap()
                self._tick()
            self._kill_tree()
            self._drain_pipes()
        self._finish()
        return 0

    def _timeout(self) -> float:
        if self.deadline is None:
            return 1.0
        now = time.monotonic()
        wake = self.deadline
        if self.next_countdown is not None:
            wake = min(wake, self.deadline - (self.next_countdown - 1))
        return max(0.0, min(1.0, wake - now))

    def _step(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            tag = key.data
            if tag == "listener":
                self._accept()
            elif tag == "wake":
                with contextlib.suppress(BlockingIOError):
                    signals = os.read(self.wake_r, 4096)
                    if signal.SIGTERM in signals:
                        self.cancel(None)
            elif isinstance(tag, _Pipe):
                self._read_pipe(tag)
            elif isinstance(tag, _Client):
                if mask & selectors.EVENT_READ:
                    self._client_read(tag)
                if mask & selectors.EVENT_WRITE and tag in self.clients:
                    self._client_write(tag)
        self._flush_files()
        for client in list(self.clients):
            self._client_write(client)

    def _reap(self) -> None:
        """Reap every child (the trainer, and orphans re-parented to us)."""
        code = trainer_parent.reap_children(self.trainer_pid)
        if code is not None:
            self.exit_code = code

    def _tick(self) -> None:
        """Countdown and deadline of a cancel in progress."""
        if self.deadline is None or self.exit_code is not None:
            return
        now = time.monotonic()
        while self.next_countdown is not None and now >= self.deadline - self.next_countdown:
            remaining = self.next_countdown
            self.next_countdown = remaining - 1 if remaining > 1 else None
            if now < self.deadline:
                self._publish(CANCEL_COUNTDOWN, b'{"seconds_remaining":%d}' % remaining)
        if now >= self.deadline and not self.killed:
            self.killed = True
            self.term_held = False
            self.next_countdown = None
            killed = self._kill_tree()
            self.escalated = True
            self._publish(
                CANCEL_ESCALATED,
                json.dumps({"signal": "SIGKILL", "processes": killed}).encode(),
            )

    # ------------------------------------------------------------------ cancel

    def cancel(self, grace_s: float | None, deadline_wall: float | None = None) -> dict[str, Any]:
        """SIGTERM the trainer (not its workers: they would die before it can flush), count
        down, and kill the whole tree at the deadline; grace 0 kills at once. SIGTERM goes
        only to a trainer that has announced ``run_start`` (its handler is in place): an
        earlier request holds it until the announcement, within the same deadline. A later
        request only ever moves the deadline earlier."""
        now = time.monotonic()
        if deadline_wall is not None:
            grace_s = max(0.0, deadline_wall - time.time())
        if self.exit_code is not None:
            return {"op": "cancel", "exited": True}
        if self.deadline is None:
            grace = self.default_grace_s if grace_s is None else grace_s
            self.cancel_requested = True
            self.cancel_requested_at = time.time()
            self._publish(CANCEL_REQUESTED, json.dumps({"grace_s": grace}).encode())
            if grace > 0:
                if self.announced:
                    self._send_term()
                else:
                    self.term_held = True  # delivered at run_start, within the deadline
            self._arm(now, now + grace)
            return {"op": "cancel", "already": False, "deadline_in_s": grace}
        shortened = grace_s is not None and not self.killed and now + grace_s < self.deadline
        if shortened and grace_s is not None:
            self._arm(now, now + grace_s)
        return {
            "op": "cancel",
            "already": True,
            "shortened": shortened,
            "deadline_in_s": max(0.0, self.deadline - now),
        }

    def _send_term(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.trainer_pid, signal.SIGTERM)

    def _announced(self) -> None:
        """The trainer emitted run_start: deliver a SIGTERM held for it, if the deadline
        has not passed meanwhile."""
        self.announced = True
        if self.term_held and self.exit_code is None and not self.killed:
            self.term_held = False
            self._send_term()

    def _arm(self, now: float, deadline: float) -> None:
        self.deadline = deadline
        remaining = deadline - now
        self.next_countdown = math.ceil(remaining - 1e-6) if remaining > 1e-6 else None
        self._tick()

    def _kill_tree(self) -> int:
        """SIGKILL every process below the monitor (the trainer included, if alive) until
        none is left, reaping them; how many processes were signalled."""
        return trainer_parent.kill_tree(self._reap)

    # ------------------------------------------------------------------ pipes

    def _read_pipe(self, pipe: _Pipe) -> None:
        try:
            chunk = os.read(pipe.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe(pipe)
            return
        lines, cut_head = pipe.lines.feed(chunk)
        # One stamp for the lines of one read: they arrived together.
        self._batch_ts = repr(time.time()).encode()
        for line in lines:
            self._line(pipe, line)
        self._batch_ts = b""
        if cut_head is not None:
            self._line(pipe, cut_head, cut=True)
        self.log_cap.dropped_bytes += pipe.lines.take_dropped()

    def _close_pipe(self, pipe: _Pipe) -> None:
        rest = pipe.lines.rest()
        if rest:
            self._line(pipe, rest)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(pipe.fd)
        os.close(pipe.fd)
        self.pipes.remove(pipe)

    def _drain_pipes(self) -> None:
        """Read what the killed tree left in the pipes, until EOF or PIPE_DRAIN_S."""
        give_up = time.monotonic() + PIPE_DRAIN_S
        while self.pipes and time.monotonic() < give_up:
            self._step(0.05)
        for pipe in list(self.pipes):
            self._close_pipe(pipe)

    def _line(self, pipe: _Pipe, line: bytes, *, cut: bool = False) -> None:
        if pipe.events and not cut:
            try:
                parsed = parse_event(line)
            except InvalidEvent as exc:
                self.invalid_lines += 1
                self._publish(
                    INVALID_EVENT_LINE,
                    json.dumps(
                        {"reason": str(exc), "line": line[:200].decode("utf-8", "replace")}
                    ).encode(),
                )
                parsed = None
            if parsed is not None:
                self._publish(*parsed)
                if parsed[0] == RUN_START:
                    self._announced()
                return
        if cut:
            line += CUT_NOTE
        self._log(line + b"\n")

    def _log(self, data: bytes) -> None:
        written = self.log_cap.admit(data)
        if written is None:
            return
        self._write_log(written)
        if written is not data:  # the cap's note: said once, as an event too
            cap = {"max_log_bytes": self.log_cap.max_bytes, "logged_bytes": self.log_cap.logged}
            self._publish(LOGS_TRUNCATED, json.dumps(cap).encode())

    def _write_log(self, data: bytes) -> None:
        try:
            self.logs_file.write(data)
        except (OSError, ValueError) as exc:
            self._write_failed(LOGS_FILE, exc)

    def _write_failed(self, name: str, exc: BaseException) -> None:
        if name not in self.write_failures:
            self.write_failures[name] = str(exc)
            _diag(f"writing {name} failed: {exc}")

    # ------------------------------------------------------------------ events

    def _publish(self, kind: str, data: bytes) -> None:
        """Number an event, append it to events.jsonl and queue it for attached clients."""
        self.run_seq += 1
        ts = self._batch_ts or repr(time.time()).encode()
        line = (
            b'{"seq":0,"run_seq":%d,"ts":%s,"type":"%s"' % (self.run_seq, ts, kind.encode())
            + self._prefix
            + data
            + b"}\n"
        )
        try:
            self.events_file.write(line)
            self._unflushed = True
            if self.events_end is not None:
                self.events_end += len(line)
        except (OSError, ValueError) as exc:
            self.events_end = None
            self._write_failed(EVENTS_FILE, exc)
        for client in self.clients:
            # sent_seq starts at the client's ``since``: nothing at or below it is sent.
            if client.attached and not client.behind and self.run_seq > client.sent_seq:
                if len(client.outbox) > CLIENT_BACKLOG_BYTES:
                    client.behind = True
                    continue
                client.outbox += line
                client.sent_seq = self.run_seq
                client.file_pos = self.events_end

    def _flush_files(self) -> None:
        self._unflushed = False
        for name, handle in ((EVENTS_FILE, self.events_file), (LOGS_FILE, self.logs_file)):
            if handle.closed:
                continue
            try:
                handle.flush()
            except (OSError, ValueError) as exc:
                self._write_failed(name, exc)

    # ------------------------------------------------------------------ clients

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():
                sock.close()  # only this user's daemon may attach
                continue
            sock.setblocking(False)
            client = _Client(sock)
            self.clients.append(client)
            self.sel.register(sock, selectors.EVENT_READ, client)

    def _client_read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbox += data
        if len(client.inbox) > 1 << 20:
            self._drop(client)
            return
        while b"\n" in client.inbox:
            line, client.inbox = client.inbox.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if isinstance(request, dict):
                self._request(client, request)

    def _request(self, client: _Client, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "attach":
            since = request.get("since")
            since = since if isinstance(since, int) and since >= 0 else 0
            client.attached = True
            client.outbox += self._reply(self._hello())
            self._flush_files()
            client.sent_seq = since
            client.behind = True  # replay from the file first, then live
            self._catch_up(client)
        elif op == "cancel":
            grace = request.get("grace_s")
            deadline = request.get("deadline")
            grace = float(grace) if isinstance(grace, (int, float)) and grace >= 0 else None
            deadline = float(deadline) if isinstance(deadline, (int, float)) else None
            client.outbox += self._reply(self.cancel(grace, deadline))
            self._flush_files()
        elif op == "status":
            client.outbox += self._reply(self._hello())

    def _hello(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "op": "hello",
            "pid": os.getpid(),
            "trainer_pid": self.trainer_pid,
            "run_seq": self.run_seq,
            "cancel_requested": self.cancel_requested,
            "deadline_in_s": None if self.deadline is None else max(0.0, self.deadline - now),
            "killed": self.killed,
            "exited": self.exit_code is not None,
        }

    @staticmethod
    def _reply(obj: dict[str, Any]) -> bytes:
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

    def _catch_up(self, client: _Client) -> None:
        """Queue events after ``client.sent_seq`` from events.jsonl (everything published
        is in it: files are flushed before any client write), then go live. The first
        catch-up of a client scans for its ``since``; later ones read on from where the
        last one stopped, a block at a time, so a client that keeps falling behind costs
        what it reads and no more."""
        try:
            with open(os.path.join(self.run_dir, EVENTS_FILE), "rb") as handle:
                if client.file_pos is None:
                    if not self._scan_to(client, handle):
                        return
                else:
                    handle.seek(client.file_pos)
                while len(client.outbox) <= CLIENT_BACKLOG_BYTES:
                    block = handle.read(CLIENT_BACKLOG_BYTES)
                    end = block.rfind(b"\n") + 1
                    if end == 0 and len(block) == CLIENT_BACKLOG_BYTES:
                        block += handle.readline()  # one line longer than a block
                        end = block.rfind(b"\n") + 1
                    if end == 0:
                        break  # end of file (or a last line still being written)
                    seq = run_seq_of(block[block.rfind(b"\n", 0, end - 1) + 1 : end])
                    client.outbox += memoryview(block)[:end]
                    assert client.file_pos is not None
                    client.file_pos += end
                    if seq is not None:
                        client.sent_seq = seq
                    if end < len(block):
                        break
        except OSError as exc:
            _diag(f"catch-up read failed: {exc}")
        if client.sent_seq >= self.run_seq:
            client.behind = False

    @staticmethod
    def _scan_to(client: _Client, handle: Any) -> bool:
        """Queue whole lines after ``client.sent_seq`` from the start of the file, line by
        line, until the backlog is full; set ``client.file_pos`` to where they end. False
        when the backlog filled up (the catch-up goes on at the next write)."""
        pos = 0
        for line in handle:
            if not line.endswith(b"\n"):
                break
            pos += len(line)
            seq = run_seq_of(line)
            if seq is None or seq <= client.sent_seq:
                continue
            client.outbox += line
            client.sent_seq = seq
            if len(client.outbox) > CLIENT_BACKLOG_BYTES:
                client.file_pos = pos
                return False
        client.file_pos = pos
        return True

    def _client_write(self, client: _Client) -> None:
        if self._unflushed:
            # An event reaches the daemon (and its subscribers) only once it is in
            # events.jsonl: whoever dies next, nothing published is missing from disk.
            self._flush_files()
        if client.behind and len(client.outbox) < CLIENT_BACKLOG_BYTES // 2:
            self._catch_up(client)
        if client.farewell and not client.behind:
            client.outbox += client.farewell  # after every event, never before one
            client.farewell = b""
        if client.outbox:
            try:
                sent = client.sock.send(client.outbox)
                del client.outbox[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(client)
                return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(client.sock, want, client)

    def _drop(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(client.sock)
        client.sock.close()
        if client in self.clients:
            self.clients.remove(client)

    # ------------------------------------------------------------------ the end

    def _finish(self) -> None:
        """Log what was cut, make events and logs durable, write exit.json, tell attached
        clients, and give them a moment to read it all."""
        if note := self.log_cap.dropped_note():
            self._write_log(note)
        for name, handle in ((EVENTS_FILE, self.events_file), (LOGS_FILE, self.logs_file)):
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except (OSError, ValueError) as exc:
                self._write_failed(name, exc)
            with contextlib.suppress(OSError, ValueError):
                handle.close()
        record = exit_record(
            exit_code=self.exit_code,
            spawn_error=self.spawn_error,
            cancel_requested=self.cancel_requested,
            killed=self.killed,
            run_id=self.run_id,
            last_run_seq=self.run_seq,
            invalid_lines=self.invalid_lines,
            log_truncated=self.log_cap.truncated,
            write_failures=self.write_failures,
        )
        try:
            write_exit_record(os.path.join(self.record_dir, EXIT_RECORD), record)
        except OSError as exc:
            _diag(f"exit.json could not be written: {exc}")
        goodbye = self._reply({"op": "exit", **record})
        for client in self.clients:
            if client.attached:
                client.farewell = goodbye
        give_up = time.monotonic() + 5.0
        while any(c.outbox or c.farewell for c in self.clients) and time.monotonic() < give_up:
            self._step(0.05)
        for client in list(self.clients):
            self._drop(client)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.record_dir, SOCKET))


def _diag(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{utc_now()} monitor[{os.getpid()}] {message}\n")
        sys.stderr.flush()


def main(argv: list[str]) -> int:
    """``monitor.py RECORD_DIR RUN_SEQ [LOCK_FD]``: daemonize, start the run, report
    READY (or the error) to the first process, which exits 0 (or 1) so the daemon knows.
    ``RUN_SEQ`` is the last run_seq already used; ``LOCK_FD`` the run's lock, taken."""
    record_dir, run_seq = argv[0], int(argv[1])
    lock_fd = int(argv[2]) if len(argv) > 2 else -1
    accepted = read_json(os.path.join(record_dir, ACCEPTED))
    if accepted is None or not isinstance(accepted.get("spec"), dict):
        _diag("no usable accepted.json")
        return 1
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    if os.fork() != 0:
        os.close(ready_w)
        answer = os.read(ready_r, 4096)
        sys.stdout.write(answer.decode(errors="replace"))
        return 0 if answer.startswith(b"READY") else 1
    os.close(ready_r)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    monitor = Monitor(record_dir, accepted["spec"], run_seq)
    monitor.lock_fd = lock_fd
    try:
        monitor.start()
    except Exception as exc:
        _diag(f"start failed: {exc!r}")
        os.write(ready_w, f"ERROR {exc}\n".encode())
        return 1
    os.write(ready_w, b"READY %d\n" % os.getpid())
    os.close(ready_w)
    return monitor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
