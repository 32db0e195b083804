"""The control server: ROUTER for requests, XPUB for events, one asyncio loop.

Sockets are plain (synchronous) pyzmq sockets driven by the loop through their file
descriptors: ZeroMQ's descriptor is edge-triggered, so every readiness callback drains
the socket until it is empty, and every send re-checks for input that arrived meanwhile.
This keeps a request's round trip free of per-message future and task overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgspec
import structlog
import zmq

from runforge_protocol import events as ev
from runforge_protocol.discovery import Endpoints
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import (
    HARD_MAX_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    REQUEST_TAGS,
    Counters,
    Event,
    Reply,
    decode_loose,
    decode_request,
    encode,
    error,
    invalid_field,
    ok,
)
from runforged.errors import RunforgeError
from runforged.runtime import DaemonLock, prepare_runtime_dir
from runforged.sdnotify import SystemdNotifier, stopped_for_restart

log = structlog.get_logger("runforged.server")


@dataclass(frozen=True)
class Answer:
    """How the application answers one request type."""

    call: Callable[[Any], Any]  # the request -> a result Struct (or an awaitable of one)
    is_async: bool  # run as its own task
    while_stopping: bool  # still answered while the daemon stops (else SHUTTING_DOWN)


class Application(Protocol):
    """What the server serves: started before the first request is read, stopped after
    the last, and asked for the answer to each request type (``runforged.dispatch``)."""

    async def start(self) -> None: ...

    async def stop(self, *, keep_runs: bool = False) -> None: ...

    def answer_for(self, request_type: type) -> Answer | None: ...


_SNDMORE_NOBLOCK = zmq.SNDMORE | zmq.NOBLOCK


class EventPublisher:
    """Stamps events with the daemon-wide sequence number and publishes them."""

    def __init__(self, socket: zmq.Socket[bytes], counters: Counters) -> None:
        self._socket = socket
        self._counters = counters
        self._seq = 0
        self._encoder = msgspec.msgpack.Encoder()

    def stamp(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        workspace: str = "",
        run_id: str = "",
        run_seq: int = 0,
    ) -> Event:
        self._seq += 1
        return Event(
            seq=self._seq,
            run_seq=run_seq,
            ts=time.time(),
            type=event_type,
            workspace=workspace,
            run_id=run_id,
            data=data,
        )

    def send(self, topic: bytes, event: Event) -> None:
        # XPUB never blocks: a subscriber past its high-water mark loses messages, and the
        # sequence numbers let it see the gap and fill it with a replay.
        # Two plain sends: measurably cheaper per event than send_multipart on this path.
        try:
            self._socket.send(topic, _SNDMORE_NOBLOCK)
            self._socket.send(self._encoder.encode(event), zmq.NOBLOCK)
        except zmq.Again:
            pass
        self._counters.events_published += 1

    def relay(self, topic: bytes, event: Event) -> None:
        """Publish an event numbered and persisted elsewhere (a run's monitor): it gets
        its daemon-wide ``seq`` here."""
        self._seq += 1
        event.seq = self._seq
        self.send(topic, event)

    def daemon_event(self, event_type: str, data: dict[str, Any]) -> Event:
        event = self.stamp(event_type, data)
        self.send(ev.daemon_topic(event_type), event)
        return event


class Daemon:
    """One daemon process: owns the runtime directory and the sockets, and serves an
    ``Application`` (attached with ``attach`` once the sockets are bound)."""

    def __init__(self, endpoints: Endpoints, notifier: SystemdNotifier | None = None) -> None:
        self.endpoints = endpoints
        self.notifier = notifier or SystemdNotifier()
        self.counters = Counters()
        self.started = time.monotonic()
        self.pid = os.getpid()
        self.stopping = False
        # Leave runs to their monitors when stopping (a restart), instead of cancelling.
        self.keep_runs = False
        self._stop_signal: int | None = None
        self._lock = DaemonLock(endpoints)
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.subscriptions = 0
        self.publisher: EventPublisher
        self._app: Application | None = None

    def attach(self, app: Application) -> None:
        self._app = app

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Prepare the runtime directory, take the lock, bind. Raises RuntimeDirError."""
        prepare_runtime_dir(self.endpoints.runtime_dir)
        self._lock.acquire()
        try:
            self._ctx = zmq.Context()
            old_umask = os.umask(0o077)  # socket files 0600: only this user may connect
            try:
                self._router = self._ctx.socket(zmq.ROUTER)
                self._router.setsockopt(zmq.LINGER, 1000)
                self._router.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MESSAGE_BYTES)
                self._router.setsockopt(zmq.RCVHWM, 10_000)
                self._router.setsockopt(zmq.SNDHWM, 10_000)
                self._router.bind(self.endpoints.control)
                self._xpub = self._ctx.socket(zmq.XPUB)
                self._xpub.setsockopt(zmq.LINGER, 1000)
                # Pass every (un)subscription up, duplicates included, so that status
                # counts subscribers rather than distinct topics.
                self._xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
                self._xpub.setsockopt(zmq.SNDHWM, 200_000)
                self._xpub.setsockopt(zmq.MAXMSGSIZE, 4096)
                self._xpub.bind(self.endpoints.events)
            finally:
                os.umask(old_umask)
            self.endpoints.pid_path.write_text(f"{os.getpid()}\n")
        except BaseException:
            self.close()
            raise
        self.publisher = EventPublisher(self._xpub, self.counters)

    def close(self) -> None:
        for sock in (self._router, self._xpub):
            if sock is not None:
                sock.close()
        self._router = self._xpub = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        with contextlib.suppress(FileNotFoundError):
            self.endpoints.pid_path.unlink()
        self._lock.release()

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT or a ``shutdown`` request, then stop cleanly."""
        assert self._router is not None and self._xpub is not None
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        if self._app is not None:
            # Reconciliation of a crashed daemon's runs finishes before any request is
            # read: no new run can start while old ones are still being classified.
            await self._app.start()
        loop.add_reader(self._router.fileno(), self._drain_router)
        loop.add_reader(self._xpub.fileno(), self._drain_xpub)
        self.publisher.daemon_event(ev.DAEMON_STARTED, {"pid": self.pid})
        self.notifier.ready(f"serving on {self.endpoints.control}")
        watchdog = self._spawn(self._watchdog()) if self.notifier.watchdog_interval_s else None
        log.info("daemon_ready", control=self.endpoints.control, events=self.endpoints.events)
        if on_ready is not None:
            on_ready()
        # A request may have raced the reader registration.
        loop.call_soon(self._drain_router)
        await self._stop_requested.wait()

        self.stopping = True
        if self._stop_signal == signal.SIGTERM and not self.keep_runs:
            # `systemctl --user restart` and `stop` both send SIGTERM: ask which it is.
            self.keep_runs = await asyncio.to_thread(stopped_for_restart)
        log.info("daemon_stopping", keep_runs=self.keep_runs)
        self.notifier.stopping()
        self.publisher.daemon_event(ev.DAEMON_STOPPING, {"pid": self.pid})
        if self._app is not None:
            await self._app.stop(keep_runs=self.keep_runs)
        # Let in-flight request handlers finish and their replies leave.
        pending = [t for t in self._tasks if t is not watchdog]
        if pending:
            await asyncio.wait(pending, timeout=10)
        if watchdog is not None:
            watchdog.cancel()
        loop.remove_reader(self._router.fileno())
        loop.remove_reader(self._xpub.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
            # Already stopping: a late SIGTERM must not turn a clean exit into status -15.
            signal.signal(signum, signal.SIG_IGN)
        log.info("daemon_stopped")

    def request_stop(self, signum: int | None = None, *, keep_runs: bool = False) -> None:
        if signum is not None:
            log.info("signal_received", signal=signal.Signals(signum).name)
            self._stop_signal = self._stop_signal or signum
        self.keep_runs = self.keep_runs or keep_runs
        if self._stop_requested is not None:
            self._stop_requested.set()

    def uptime(self) -> float:
        return time.monotonic() - self.started

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s or 1.0
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ requests

    def _drain_router(self) -> None:
        sock = self._router
        if sock is None:
            return
        while _readable(sock):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            try:
                self._on_frames(frames)
            except Exception:
                # Never out of this callback: the frames queued behind this one would wait
                # for the next edge of the descriptor, which may never come.
                log.exception("frame_failed", frames=len(frames))
                self.counters.dropped_frames += 1

    def _drain_xpub(self) -> None:
        sock = self._xpub
        if sock is None:
            return
        while _readable(sock):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frame[:1] == b"\x01":
                self.subscriptions += 1
            elif frame[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def _on_frames(self, frames: list[bytes]) -> None:
        """Split ``[identity, (b"",) payload]`` and answer. REQ peers send the empty
        delimiter, DEALER peers need not; anything else is a framing error."""
        self.counters.requests += 1
        if len(frames) < 2:
            self.counters.dropped_frames += 1  # no payload and nothing to answer
            return
        if frames[1] == b"":
            envelope, body = frames[:2], frames[2:]
        else:
            envelope, body = frames[:1], frames[1:]
        if len(body) != 1:
            self._send(
                envelope,
                error(
                    "",
                    ErrorCode.BAD_REQUEST,
                    f"expected exactly one payload frame after the envelope, got {len(body)}",
                    "send one MessagePack-encoded request per message",
                ),
            )
            return
        payload = body[0]
        if len(payload) > MAX_MESSAGE_BYTES:
            self._send(
                envelope,
                error(
                    "",
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"request of {len(payload)} bytes exceeds the limit of "
                    f"{MAX_MESSAGE_BYTES} bytes",
                    details={"size": len(payload), "limit": MAX_MESSAGE_BYTES},
                ),
            )
            return
        try:
            request = decode_request(payload)
        except msgspec.ValidationError as exc:
            loose = decode_loose(payload)
            tag = loose.get("type")
            field, message = invalid_field(exc)
            if isinstance(tag, str) and tag not in REQUEST_TAGS:
                code, message = ErrorCode.UNKNOWN_REQUEST, f"unknown request type {tag!r}"
                details: dict[str, Any] = {"known_types": sorted(REQUEST_TAGS)}
            else:
                code, message = ErrorCode.BAD_REQUEST, f"invalid request: {message}"
                details = {"field": field} if field else {}
            self._send(
                envelope,
                error(
                    _id_of(loose),
                    code,
                    message,
                    "see protocol/PROTOCOL.md for the request types and their fields",
                    details,
                ),
            )
            return
        except msgspec.DecodeError as exc:
            # Includes NestingTooDeep: a map or array nested beyond the decoder's depth.
            self._send(
                envelope,
                error(
                    "",
                    ErrorCode.BAD_REQUEST,
                    f"undecodable request (expected MessagePack): {exc}",
                    "encode requests with MessagePack as described in protocol/PROTOCOL.md",
                ),
            )
            return
        if request.protocol != PROTOCOL_VERSION:
            self._send(
                envelope,
                error(
                    request.id,
                    ErrorCode.PROTOCOL_MISMATCH,
                    f"client speaks protocol {request.protocol}, this daemon speaks "
                    f"{PROTOCOL_VERSION}",
                    "upgrade the client (or the daemon) so that both speak the same version",
                    {"client": request.protocol, "daemon": PROTOCOL_VERSION},
                ),
            )
            return
        kind = type(request)
        answer = self._app.answer_for(kind) if self._app is not None else None
        if answer is None:
            self._send(
                envelope,
                error(request.id, ErrorCode.UNKNOWN_REQUEST, f"no handler for {kind.__name__}"),
            )
            return
        if self.stopping and not answer.while_stopping:
            self._send(
                envelope,
                error(
                    request.id,
                    ErrorCode.SHUTTING_DOWN,
                    "the daemon is shutting down and accepts no new work",
                    "start it again with 'runforgectl daemon start'",
                ),
            )
            return
        if answer.is_async:
            self._spawn(self._answer_async(envelope, request.id, answer, request))
            return
        try:
            result = answer.call(request)
        except RunforgeError as exc:
            self._send(envelope, _error_reply(request.id, exc))
            return
        except Exception:
            log.exception("handler_failed", request=kind.__name__)
            self._send(envelope, _internal_error(request.id))
            return
        self._send(envelope, ok(request.id, result))

    async def _answer_async(
        self, envelope: list[bytes], request_id: str, answer: Answer, request: Any
    ) -> None:
        try:
            result = await answer.call(request)
        except RunforgeError as exc:
            self._send(envelope, _error_reply(request_id, exc))
        except Exception:
            log.exception("handler_failed", request=type(request).__name__)
            self._send(envelope, _internal_error(request_id))
        else:
            self._send(envelope, ok(request_id, result))

    def _send(self, envelope: list[bytes], reply: Reply) -> None:
        if not reply.ok:
            self.counters.errors += 1
        sock = self._router
        if sock is None:
            return
        try:
            sock.send_multipart([*envelope, encode(reply)], zmq.NOBLOCK)
        except zmq.Again:
            self.counters.dropped_frames += 1
        # Sending can consume the descriptor's edge: look for input that arrived meanwhile.
        asyncio.get_running_loop().call_soon(self._drain_router)


def _readable(sock: zmq.Socket[bytes]) -> bool:
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


def _id_of(loose: dict[Any, Any]) -> str:
    value = loose.get("id")
    return value if isinstance(value, str) else ""


def _error_reply(request_id: str, exc: RunforgeError) -> Reply:
    return error(request_id, exc.code, exc.message, exc.remediation, exc.details)


def _internal_error(request_id: str) -> Reply:
    return error(
        request_id,
        ErrorCode.INTERNAL_ERROR,
        "the daemon failed to handle this request (see its log)",
        "report it with the daemon log; the daemon keeps serving",
    )
