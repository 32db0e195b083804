"""``runforgectl bridge``: the protocol as JSON lines on stdin/stdout, for editor adapters
that would rather spawn a process than link ZeroMQ and MessagePack.

Input, one JSON object per line: any protocol request (``{"type": "ping", "id": "1"}``),
forwarded as is (ids are the adapter's own), or a bridge command handled here:
``{"type": "subscribe", "prefix": "run/<key>/"}`` / ``{"type": "unsubscribe", ...}``.
Output, one JSON object per line, in arrival order: every reply (``{"id", "ok", "result"
| "error"}``) and every event of the subscribed prefixes as ``{"topic": ..., "event":
{...}}``. Requests are answered concurrently, so replies may come out of order: match
them by ``id``. End of input ends the bridge (exit 0).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import msgspec
import zmq

from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforge_protocol.errors import ErrorCode
from runforgectl import jsonlines

_json = msgspec.json.Encoder()


def run_bridge(endpoints: Endpoints) -> int:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    control = ctx.socket(zmq.DEALER)
    events = ctx.socket(zmq.SUB)
    for sock in (control, events):
        sock.setsockopt(zmq.LINGER, 0)
    control.connect(endpoints.control)
    events.connect(endpoints.events)
    poller = zmq.Poller()
    poller.register(control, zmq.POLLIN)
    poller.register(events, zmq.POLLIN)
    stdin = sys.stdin.buffer.fileno()
    poller.register(stdin, zmq.POLLIN)
    reader = jsonlines.LineReader()
    try:
        while True:
            for item, _ in poller.poll():
                if item is control:
                    _emit_reply(control.recv())
                elif item is events:
                    topic, payload = events.recv_multipart()
                    event = m.event_decoder.decode(payload)
                    _emit({"topic": topic.decode(errors="replace"), "event": event})
                else:
                    chunk = os.read(stdin, 1 << 16)
                    if not chunk:
                        return 0
                    for line in reader.feed(chunk):
                        if isinstance(line, jsonlines.LineTooLong):
                            _emit(m.error("", ErrorCode.MESSAGE_TOO_LARGE, str(line)))
                        else:
                            _forward(line, control, events)
    finally:
        control.close()
        events.close()
        ctx.term()


def _forward(line: bytes, control: zmq.Socket[bytes], events: zmq.Socket[bytes]) -> None:
    try:
        loose = jsonlines.decode_object(line)
    except jsonlines.JsonLineError as exc:
        _emit(m.error("", ErrorCode.BAD_REQUEST, str(exc)))
        return
    kind = loose.get("type")
    if kind in ("subscribe", "unsubscribe"):
        prefix = loose.get("prefix", "")
        if not isinstance(prefix, str):
            _emit(m.error(_id(loose), ErrorCode.BAD_REQUEST, "prefix must be a string"))
            return
        option = zmq.SUBSCRIBE if kind == "subscribe" else zmq.UNSUBSCRIBE
        events.setsockopt(option, prefix.encode())
        _emit({"id": _id(loose), "ok": True, "result": {"type": kind, "prefix": prefix}})
        return
    try:
        request = jsonlines.decode_request(line)
    except jsonlines.JsonLineError as exc:
        _emit(m.error(_id(loose), ErrorCode.BAD_REQUEST, str(exc), details=exc.details))
        return
    control.send(m.encode(request))


def _emit_reply(payload: bytes) -> None:
    try:
        _emit(m.reply_decoder.decode(payload))
    except msgspec.DecodeError as exc:
        _emit(m.error("", ErrorCode.INTERNAL_ERROR, f"undecodable reply from the daemon: {exc}"))


def _emit(value: Any) -> None:
    sys.stdout.buffer.write(_json.encode(value) + b"\n")
    sys.stdout.buffer.flush()


def _id(loose: dict[str, Any]) -> str:
    value = loose.get("id")
    return value if isinstance(value, str) else ""
