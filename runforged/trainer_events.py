"""Trainer stderr lines -> events: a line is an event only if it is a JSON object with a
known ``event`` type carrying that type's required fields; anything else is a log line,
and a line that looks like an event but is not valid is skipped with a reason."""

from __future__ import annotations

from typing import Any

import msgspec

from runforge_contract.trainer_events import INT_TYPE, MAX_EVENT_LINE, RELAYED_FIELDS

_decoder = msgspec.json.Decoder()


class InvalidEventLine(Exception):
    """A line that claims to be an event but is not a valid one; the message says why."""


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The event in ``line``, None for a plain log line; raises InvalidEventLine."""
    stripped = line.strip()
    if not stripped.startswith((b"{", b"[")):
        return None
    if len(stripped) > MAX_EVENT_LINE:
        raise InvalidEventLine(f"event line of {len(stripped)} bytes exceeds {MAX_EVENT_LINE}")
    try:
        obj = _decoder.decode(stripped)
    except msgspec.DecodeError as exc:
        raise InvalidEventLine(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEventLine(f"JSON {type(obj).__name__}, not an event object")
    kind = obj.get("event")
    if not isinstance(kind, str):
        raise InvalidEventLine("JSON object without a string 'event' field")
    required = RELAYED_FIELDS.get(kind)
    if required is None:
        raise InvalidEventLine(f"unknown event type {kind!r}")
    if not isinstance(obj.get("timestamp"), str):
        raise InvalidEventLine(f"{kind}: missing or non-string 'timestamp'")
    for field, kinds in required.items():
        value = obj.get(field)
        if (
            value is None
            or not isinstance(value, kinds)
            or (kinds is INT_TYPE and isinstance(value, bool))
        ):
            raise InvalidEventLine(f"{kind}: missing or mistyped field {field!r}")
    return obj
