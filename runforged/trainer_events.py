"""Trainer stderr lines -> events: a line is an event only if it is a JSON object with a
known ``event`` type carrying that type's required fields; anything else is a log line,
and a line that looks like an event but is not valid is skipped with a reason."""

from __future__ import annotations

from typing import Any

import msgspec

# Required fields and their JSON types per event type (events.schema.v1.json), plus the
# runner's documented extra ``run_failed``. Validation stays this light on purpose: it is
# on the relay's hot path, and the full schema is checked in the runner's own tests.
_STR, _INT, _NUM, _BOOL, _OBJ = str, int, (int, float), bool, dict
REQUIRED: dict[str, dict[str, Any]] = {
    "run_start": {"run_id": _STR, "preset_id": _STR, "model_family": _STR},
    "dataset_loaded": {
        "run_id": _STR,
        "num_samples": _INT,
        "num_features": _INT,
        "rows_dropped": _INT,
    },
    "train_started": {"run_id": _STR, "model_family": _STR},
    "train_progress": {"run_id": _STR, "epoch": _INT, "total_epochs": _INT},
    "train_finished": {"run_id": _STR},
    "metrics_computed": {"run_id": _STR, "metrics_profile": _STR},
    "artifacts_written": {"run_id": _STR},
    "cancelling": {"run_id": _STR, "seconds_remaining": _NUM},
    "run_cancelled": {"run_id": _STR, "graceful": _BOOL},
    "run_failed": {"run_id": _STR, "error": _OBJ},
}
MAX_EVENT_LINE = 64 * 1024

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
    required = REQUIRED.get(kind)
    if required is None:
        raise InvalidEventLine(f"unknown event type {kind!r}")
    if not isinstance(obj.get("timestamp"), str):
        raise InvalidEventLine(f"{kind}: missing or non-string 'timestamp'")
    for field, kinds in required.items():
        value = obj.get(field)
        if (
            value is None
            or not isinstance(value, kinds)
            or (kinds is _INT and isinstance(value, bool))
        ):
            raise InvalidEventLine(f"{kind}: missing or mistyped field {field!r}")
    return obj
