"""Trainer stderr lines -> events for the daemon's own relays (the in-process executor
and the Ray relay): a line is an event only if it is a JSON object with a known ``event``
type carrying that type's required fields; anything else is a log line, and a line that
looks like an event but is not valid is skipped with a reason. The rule itself is the
per-run monitor's (``runforged.monitor.decode_event``, standard library only), so every
executor accepts and refuses exactly the same lines."""

from __future__ import annotations

from typing import Any

from runforged.monitor import InvalidEvent, decode_event


class InvalidEventLine(Exception):
    """A line that claims to be an event but is not a valid one; the message says why."""


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The event in ``line``, None for a plain log line; raises InvalidEventLine."""
    try:
        parsed = decode_event(line)
    except InvalidEvent as exc:
        raise InvalidEventLine(str(exc)) from None
    return None if parsed is None else parsed[0]
