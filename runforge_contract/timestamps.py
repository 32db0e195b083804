"""The one timestamp format of every contract file: ISO 8601 UTC, milliseconds, ``Z``."""

from __future__ import annotations

import math
from datetime import datetime, timezone


def utc_now() -> str:
    """Now, e.g. ``2024-01-31T14:25:01.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: str) -> datetime | None:
    """An ISO 8601 timestamp with its time zone, or None if it is not one."""
    try:
        # Python 3.10's fromisoformat does not know the "Z" suffix.
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def sort_timestamp(value: str | None) -> float:
    """``value`` as UNIX seconds for ordering runs; missing or unusable times sort oldest."""
    parsed = parse_timestamp(value) if value is not None else None
    return parsed.timestamp() if parsed is not None else -math.inf
