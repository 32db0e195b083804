"""A synchronous client of runforged: one DEALER for requests, one SUB for events.

Imports only pyzmq, msgspec and ``runforge_protocol``: editors and scripts call runforgectl all the
time, so start-up cost matters more here than anywhere.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import msgspec
import zmq

from runforge_protocol import messages as m
from runforge_protocol.discovery import (
    Endpoints,
    RuntimeDirError,
    RuntimeDirMissing,
    check_runtime_dir,
)


class DaemonUnavailable(Exception):
    """The daemon is not running, or did not answer in time."""


class DaemonTimeout(DaemonUnavailable):
    """The daemon's socket is there but no reply came in time (the request may have been
    acted on)."""


class DaemonError(Exception):
    """The daemon answered with a structured error."""

    def __init__(self, reply: m.Reply) -> None:
        assert reply.error is not None
        super().__init__(reply.error.message)
        self.error = reply.error


class Client:
    def __init__(self, endpoints: Endpoints, timeout_s: float = 10.0) -> None:
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._control: zmq.Socket[bytes] | None = None
        self._events: zmq.Socket[bytes] | None = None
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-"

    def close(self) -> None:
        for sock in (self._control, self._events):
            if sock is not None:
                sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def not_running_message(self) -> str:
        return (
            f"runforged is not running (no answer on {self.endpoints.control_path}); "
            f"start it with 'runforgectl daemon start'"
        )

    def check_runtime_dir(self) -> None:
        """The daemon's own rule (``discovery.check_runtime_dir``), checked before
        connecting, then the socket itself. Raises :class:`DaemonUnavailable`."""
        try:
            check_runtime_dir(self.endpoints.runtime_dir, refusing_to="connect")
        except RuntimeDirMissing:
            raise DaemonUnavailable(self.not_running_message()) from None
        except RuntimeDirError as exc:
            raise DaemonUnavailable(str(exc)) from None
        control = self.endpoints.control_path
        if not control.exists():
            raise DaemonUnavailable(self.not_running_message())
        if not os.access(control, os.R_OK | os.W_OK):
            raise DaemonUnavailable(f"permission denied on the daemon's socket {control}")

    def _control_socket(self) -> zmq.Socket[bytes]:
        if self._control is None:
            self.check_runtime_dir()
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoints.control)
            self._control = sock
        return self._control

    def call(self, request: m.RequestBase, timeout_s: float | None = None) -> m.Reply:
        """Send ``request`` and wait for its reply (matched on the request id)."""
        sock = self._control_socket()
        request.id = f"{self._prefix}{next(self._ids)}"
        sock.send(m.encode(request))
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not sock.poll(remaining_ms, zmq.POLLIN):
                # The socket may now hold a late reply: never reuse it.
                sock.close(linger=0)
                self._control = None
                if not self.endpoints.control_path.exists():
                    raise DaemonUnavailable(self.not_running_message())
                raise DaemonTimeout(
                    f"runforged did not answer within {wait_s:g} s on "
                    f"{self.endpoints.control_path} (raise --timeout, or check "
                    f"'runforgectl status')"
                )
            reply = m.reply_decoder.decode(sock.recv())
            if reply.id == request.id:
                return reply

    def result(self, request: m.RequestBase, timeout_s: float | None = None) -> m.Result:
        reply = self.call(request, timeout_s)
        if not reply.ok or reply.result is None:
            raise DaemonError(reply)
        return reply.result

    # ------------------------------------------------------------------ events

    def subscribe(self, prefix: bytes = b"") -> None:
        """Connect the event socket and subscribe to a topic prefix (call before the
        request whose events you want, then allow for ZeroMQ's subscription delay by
        replaying what was missed)."""
        if self._events is None:
            self.check_runtime_dir()
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 200_000)
            sock.connect(self.endpoints.events)
            self._events = sock
        self._events.setsockopt(zmq.SUBSCRIBE, prefix)

    def next_events(self, timeout_s: float) -> Iterator[m.Event]:
        """Events that arrive within ``timeout_s`` (all that are queued, then stop)."""
        assert self._events is not None, "subscribe() first"
        sock = self._events
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return
        for _topic, event in queued_events(sock):
            yield event


def queued_events(sock: zmq.Socket[bytes]) -> Iterator[tuple[bytes, m.Event]]:
    """``(topic, event)`` for every event already queued on a SUB socket, without
    waiting; frames that are not a well-formed event are skipped.

    Every event is two frames, topic then payload (PROTOCOL.md), read with two plain
    ``recv`` calls: several times cheaper per event than ``recv_multipart``, which asks
    libzmq after every frame whether more follow (BENCHMARKS.md, figure 6). That question
    is asked only when a payload does not decode: if more frames follow, the frame taken
    for a payload was the topic of the next message (the one before had a single frame),
    and the reader steps forward by one frame; so it never stays out of step, and a
    message of another shape costs at most itself."""
    try:
        while True:
            topic = sock.recv(zmq.NOBLOCK)
            payload = sock.recv(zmq.NOBLOCK)
            while True:
                try:
                    event = m.event_decoder.decode(payload)
                except (msgspec.DecodeError, RecursionError):
                    if not sock.getsockopt(zmq.RCVMORE):
                        break  # the payload ended its message: skip it
                    topic, payload = payload, sock.recv(zmq.NOBLOCK)
                    continue
                yield topic, event
                break
    except zmq.Again:
        return  # nothing (more) queued; a lone last frame is dropped
