"""``runforgectl bridge``: the protocol as JSON lines on stdin/stdout, for editor adapters
that would rather spawn a process than link ZeroMQ and MessagePack.

Input, one JSON object per line:

- any protocol request (``{"type": "ping", "id": 1}``), forwarded to the daemon. The id is
  the adapter's own (a string or an integer), echoed back unchanged; the bridge sends the
  daemon ids of its own, so its internal requests never collide with the adapter's;
- bridge commands, answered by the bridge itself: ``subscribe`` / ``unsubscribe`` (raw
  topic prefixes, live events only) and ``watch`` / ``unwatch`` (every run of a
  workspace, each event exactly once and in ``run_seq`` order: replayed after a gap,
  after a late subscription, when idle, and after the daemon came back).

Output, one JSON object per line: replies (``{"id", "ok", "result" | "error"}``), events
(``{"topic", "event"}``, plus ``"source"`` for watched runs) and the bridge's own
notices (``{"notify": "ready" | "daemon_lost" | "daemon_back", "data": {...}}``).
Requests are answered concurrently, so replies may come out of order: match them by
``id``. End of input ends the bridge (exit 0). PROTOCOL.md has the full description.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
from zmq.utils.monitor import parse_monitor_message

from runforge_protocol import events as ev
from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforge_protocol.errors import ErrorCode
from runforgectl import jsonlines
from runforgectl.client import queued_events

# A watched run that has been quiet this long is replayed (catches a terminal event that
# was published before the subscription took effect, and anything lost on the way).
IDLE_REPLAY_S = 2.0
TICK_S = 0.5
# Bridge-only error code (never in a daemon reply): the daemon is not there right now.
DAEMON_UNAVAILABLE = "DAEMON_UNAVAILABLE"
BRIDGE_COMMANDS = frozenset({"subscribe", "unsubscribe", "watch", "unwatch"})

_json = msgspec.json.Encoder()

Handler = Callable[[m.Reply], None]


@dataclass
class _Run:
    """One watched run: the last ``run_seq`` delivered to the adapter."""

    workspace: str
    run_id: str
    last: int = 0
    terminal: bool = False
    replaying: bool = False
    quiet_since: float = 0.0


class Bridge:
    def __init__(self, endpoints: Endpoints, out: Any = None) -> None:
        self.endpoints = endpoints
        self.out = out if out is not None else sys.stdout.buffer
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.raw = self._sub()
        self.watch_sub = self._sub()
        self.control: zmq.Socket[bytes] | None = None
        self.monitor: zmq.Socket[bytes] | None = None
        self.poller = zmq.Poller()
        self.poller.register(self.raw, zmq.POLLIN)
        self.poller.register(self.watch_sub, zmq.POLLIN)
        self.wire_ids = itertools.count(1)
        self.adapter: dict[str, Any] = {}  # wire id -> the adapter's id
        self.internal: dict[str, Handler] = {}  # wire id -> the bridge's own handler
        self.connected = False
        self.lost = False  # the daemon went away and has not come back yet
        self.daemon_pid: int | None = None
        self.watched: dict[str, bytes] = {}  # resolved workspace -> topic prefix
        self.runs: dict[tuple[str, str], _Run] = {}
        self._connect_control()

    # ------------------------------------------------------------------ sockets

    def _sub(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 200_000)
        sock.connect(self.endpoints.events)
        return sock

    def _connect_control(self) -> None:
        """A fresh DEALER (and its monitor): a new one after every disconnection, so that
        requests queued for the old daemon are dropped, not delivered to the next one."""
        if self.control is not None:
            assert self.monitor is not None
            self.poller.unregister(self.control)
            self.poller.unregister(self.monitor)
            self.control.disable_monitor()
            self.monitor.close(linger=0)
            self.control.close(linger=0)
        control = self.ctx.socket(zmq.DEALER)
        control.setsockopt(zmq.LINGER, 0)
        self.monitor = control.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        control.connect(self.endpoints.control)
        self.control = control
        self.poller.register(control, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def close(self) -> None:
        if self.control is not None and self.monitor is not None:
            self.control.disable_monitor()
            self.monitor.close(linger=0)
            self.control.close(linger=0)
        self.raw.close(linger=0)
        self.watch_sub.close(linger=0)
        self.ctx.term()

    # ------------------------------------------------------------------ main loop

    def run(self, stdin: int) -> int:
        self.poller.register(stdin, zmq.POLLIN)
        # Lines are cut in linear time, at most jsonlines.MAX_LINE_BYTES each.
        reader = jsonlines.LineReader()
        next_tick = time.monotonic() + TICK_S
        while True:
            timeout_ms = max(0, int((next_tick - time.monotonic()) * 1000))
            for item, _ in self.poller.poll(timeout_ms):
                if item is self.control:
                    self._drain_control()
                elif item is self.monitor:
                    self._on_monitor()
                elif item is self.raw:
                    self._drain_sub(self.raw, watched=False)
                elif item is self.watch_sub:
                    self._drain_sub(self.watch_sub, watched=True)
                elif item == stdin:
                    chunk = os.read(stdin, 1 << 16)
                    if not chunk:
                        return 0
                    for line in reader.feed(chunk):
                        if isinstance(line, jsonlines.LineTooLong):
                            self._emit(m.error("", ErrorCode.MESSAGE_TOO_LARGE, str(line)))
                        else:
                            self._on_line(line)
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + TICK_S

    def _drain_control(self) -> None:
        assert self.control is not None
        while True:
            try:
                payload = self.control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_reply(payload)

    def _drain_sub(self, sock: zmq.Socket[bytes], watched: bool) -> None:
        for raw_topic, event in queued_events(sock):
            topic = raw_topic.decode(errors="replace")
            if not watched:
                self._emit({"topic": topic, "event": event})
            elif not event.run_id:
                self._emit({"topic": topic, "event": event, "source": "live"})
            else:
                self._offer(self._track(event.workspace, event.run_id), event, "live")

    # ------------------------------------------------------------------ the daemon's presence

    def _on_monitor(self) -> None:
        assert self.monitor is not None
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_monitor_message(frames)["event"]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
                self._internal(m.Hello(client="runforgectl-bridge"), self._on_hello)
            elif event == zmq.EVENT_DISCONNECTED:
                self._on_disconnected()
                return  # the monitor socket was replaced

    def _on_disconnected(self) -> None:
        self._drain_control()  # replies that arrived before the connection broke
        was_lost = self.lost
        self.connected = False
        self.lost = True
        self.internal.clear()
        for run in self.runs.values():
            run.replaying = False
        for wire_id, adapter_id in list(self.adapter.items()):
            del self.adapter[wire_id]
            self._emit(
                _unavailable(
                    adapter_id,
                    "the daemon went away before answering; the request may or may not "
                    "have taken effect",
                )
            )
        self._connect_control()
        if not was_lost:  # one notice per absence (a daemon may drop us again mid-start)
            self._emit({"notify": "daemon_lost", "data": {"pid": self.daemon_pid}})

    def _on_hello(self, reply: m.Reply) -> None:
        if not isinstance(reply.result, m.HelloResult):
            return
        previous, self.daemon_pid = self.daemon_pid, reply.result.pid
        if previous is None and not self.lost:
            self._emit({"notify": "ready", "data": reply.result})
            return
        self.lost = False
        self._emit(
            {
                "notify": "daemon_back",
                "data": {
                    "pid": reply.result.pid,
                    "previous_pid": previous,
                    "restarted": previous != reply.result.pid,
                    "daemon_version": reply.result.daemon_version,
                },
            }
        )
        # Catch up: what the old daemon decided last (run_terminal of runs it left in
        # flight is written by the new one), and runs started while we were away.
        for run in self.runs.values():
            if not run.terminal:
                self._replay(run)
        for workspace in self.watched:
            self._list_active(workspace)

    # ------------------------------------------------------------------ adapter input

    def _on_line(self, line: bytes) -> None:
        try:
            loose = jsonlines.decode_object(line)
        except jsonlines.JsonLineError as exc:
            self._emit(m.error("", ErrorCode.BAD_REQUEST, str(exc)))
            return
        adapter_id = loose.get("id", "")
        if not _usable_id(adapter_id):
            message = "id must be a string (at most 4096 characters) or a 64-bit integer"
            self._emit(m.error("", ErrorCode.BAD_REQUEST, message, details={"field": "id"}))
            return
        kind = loose.get("type")
        if kind in BRIDGE_COMMANDS:
            self._bridge_command(kind, loose, adapter_id)
            return
        if adapter_id != "" and adapter_id in self.adapter.values():
            self._emit(
                _error(adapter_id, ErrorCode.BAD_REQUEST, f"id {adapter_id!r} is already in flight")
            )
            return
        wire_id = f"a{next(self.wire_ids)}"
        try:
            request = jsonlines.convert_request({**loose, "id": wire_id})
        except jsonlines.JsonLineError as exc:
            self._emit(_error(adapter_id, ErrorCode.BAD_REQUEST, str(exc), exc.details))
            return
        if self.lost:
            self._emit(_unavailable(adapter_id, "the daemon is not running"))
            return
        self.adapter[wire_id] = adapter_id
        assert self.control is not None
        self.control.send(m.encode(request))

    def _bridge_command(self, kind: str, loose: dict[str, Any], adapter_id: Any) -> None:
        if kind in ("subscribe", "unsubscribe"):
            prefix = loose.get("prefix", "")
            if not isinstance(prefix, str):
                self._emit(_error(adapter_id, ErrorCode.BAD_REQUEST, "prefix must be a string"))
                return
            option = zmq.SUBSCRIBE if kind == "subscribe" else zmq.UNSUBSCRIBE
            self.raw.setsockopt(option, prefix.encode())
            self._emit({"id": adapter_id, "ok": True, "result": {"type": kind, "prefix": prefix}})
            return
        workspace = loose.get("workspace")
        if not isinstance(workspace, str) or not os.path.isabs(workspace):
            message = "workspace must be an absolute path"
            self._emit(_error(adapter_id, ErrorCode.INVALID_PATH, message))
            return
        since = loose.get("since", {})
        if not isinstance(since, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in since.values()
        ):
            message = "since must map run ids to the last run_seq already shown"
            self._emit(_error(adapter_id, ErrorCode.BAD_REQUEST, message))
            return
        resolved = os.path.realpath(workspace)
        prefix = ev.run_topic_prefix(resolved)
        if kind == "unwatch":
            if self.watched.pop(resolved, None) is not None:
                self.watch_sub.setsockopt(zmq.UNSUBSCRIBE, prefix)
                if not self.watched:
                    self.watch_sub.setsockopt(zmq.UNSUBSCRIBE, ev.daemon_topic(""))
            for key in [k for k in self.runs if k[0] == resolved]:
                del self.runs[key]
        else:
            if resolved not in self.watched:
                if not self.watched:
                    self.watch_sub.setsockopt(zmq.SUBSCRIBE, ev.daemon_topic(""))
                self.watched[resolved] = prefix
                self.watch_sub.setsockopt(zmq.SUBSCRIBE, prefix)
            for run_id, last in since.items():
                run = self._track(resolved, run_id)
                run.last = max(run.last, last)
                self._replay(run)
            self._list_active(resolved)
        result = {"type": kind, "workspace": resolved, "prefix": prefix.decode()}
        self._emit({"id": adapter_id, "ok": True, "result": result})

    # ------------------------------------------------------------------ replies

    def _on_reply(self, payload: bytes) -> None:
        try:
            reply = m.reply_decoder.decode(payload)
        except (msgspec.DecodeError, RecursionError) as exc:
            message = f"undecodable reply from the daemon: {exc}"
            self._emit(m.error("", ErrorCode.INTERNAL_ERROR, message))
            return
        handler = self.internal.pop(reply.id, None)
        if handler is not None:
            handler(reply)
            return
        if reply.id not in self.adapter:
            if reply.id == "":  # the daemon could not read some request: say so
                self._emit(reply)
            return  # a reply to a request already failed as DAEMON_UNAVAILABLE
        adapter_id = self.adapter.pop(reply.id)
        result = reply.result
        # Runs the adapter starts or cancels in a watched workspace are followed at once
        # (their first events may precede the subscription).
        if isinstance(result, m.TrainResult | m.CancelResult) and (
            result.run.workspace in self.watched
        ):
            self._replay(self._track(result.run.workspace, result.run.run_id))
        self._emit({"id": adapter_id, "ok": reply.ok, "result": reply.result, "error": reply.error})

    def _internal(self, request: m.RequestBase, handler: Handler) -> None:
        if not self.connected:
            return  # asked again once the daemon is back
        request.id = f"~bridge-{next(self.wire_ids)}"
        self.internal[request.id] = handler
        assert self.control is not None
        self.control.send(m.encode(request))

    # ------------------------------------------------------------------ watched runs

    def _track(self, workspace: str, run_id: str) -> _Run:
        run = self.runs.get((workspace, run_id))
        if run is None:
            run = self.runs[(workspace, run_id)] = _Run(workspace, run_id)
            run.quiet_since = time.monotonic()
        return run

    def _list_active(self, workspace: str) -> None:
        def on_active(reply: m.Reply) -> None:
            if isinstance(reply.result, m.ActiveResult) and workspace in self.watched:
                for summary in reply.result.runs:
                    self._replay(self._track(workspace, summary.run_id))

        self._internal(m.Active(workspace=workspace), on_active)

    def _replay(self, run: _Run, since: int | None = None) -> None:
        if run.replaying or run.terminal or not self.connected:
            return
        since = run.last if since is None else since
        run.replaying = True
        run.quiet_since = time.monotonic()

        def on_replay(reply: m.Reply) -> None:
            run.replaying = False
            result = reply.result
            if not isinstance(result, m.ReplayResult):
                # No events file: not a run this daemon can replay. Stop asking.
                if reply.error is not None and reply.error.code == ErrorCode.RUN_NOT_FOUND:
                    run.terminal = True
                return
            for event in result.events:
                self._offer(run, event, "replay")
            if run.terminal:
                return
            if result.terminal:
                # Ended, yet no run_terminal after ``since``: a daemon killed outright can
                # lose the tail of a run's log, and the next one numbers the run_terminal
                # it appends after what survived. Read the whole log once for it.
                if since > 0:
                    self._replay(run, since=0)
                else:
                    run.terminal = True
            elif result.events and result.events[-1].run_seq < result.last_run_seq:
                self._replay(run, since=result.events[-1].run_seq)

        request = m.Replay(workspace=run.workspace, run_id=run.run_id, since=since)
        self._internal(request, on_replay)

    def _offer(self, run: _Run, event: m.Event, source: str) -> None:
        """Deliver ``event`` if it is the next one of its run; a duplicate is dropped, and
        an event beyond a gap is left to the replay it starts (the daemon persists every
        event before publishing it, so the replay holds it). A run's first run_terminal is
        always delivered, even numbered at or below what was shown (see ``_replay``)."""
        if run.terminal or (event.run_seq <= run.last and event.type != ev.RUN_TERMINAL):
            return
        if event.run_seq > run.last + 1:
            self._replay(run)
            return
        run.terminal = event.type == ev.RUN_TERMINAL
        run.last = max(run.last, event.run_seq)
        run.quiet_since = time.monotonic()
        topic = ev.run_topic(event.workspace, event.run_id, event.type).decode()
        self._emit({"topic": topic, "event": event, "source": source})

    def _tick(self) -> None:
        now = time.monotonic()
        for run in self.runs.values():
            if not run.terminal and not run.replaying and now - run.quiet_since >= IDLE_REPLAY_S:
                self._replay(run)

    def _emit(self, value: Any) -> None:
        self.out.write(_json.encode(value) + b"\n")
        self.out.flush()


def _usable_id(adapter_id: Any) -> bool:
    """An adapter's id: a string within the protocol's text limit, or an integer a
    MessagePack or JavaScript peer can hold (within 64 bits)."""
    if isinstance(adapter_id, str):
        return len(adapter_id) <= m.MAX_TEXT_CHARS
    if isinstance(adapter_id, int) and not isinstance(adapter_id, bool):
        return -(2**63) <= adapter_id <= 2**64 - 1
    return False


def _error(
    adapter_id: Any, code: ErrorCode, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    info = m.ErrorInfo(code=code, message=message, details=details or {})
    return {"id": adapter_id, "ok": False, "result": None, "error": info}


def _unavailable(adapter_id: Any, message: str) -> dict[str, Any]:
    return {
        "id": adapter_id,
        "ok": False,
        "result": None,
        "error": {
            "code": DAEMON_UNAVAILABLE,
            "message": message,
            "remediation": "start it with 'runforgectl daemon start' (or wait for systemd to "
            "restart it); the bridge reconnects by itself",
            "details": {},
        },
    }


def run_bridge(endpoints: Endpoints) -> int:
    bridge = Bridge(endpoints)
    try:
        return bridge.run(sys.stdin.buffer.fileno())
    finally:
        bridge.close()
