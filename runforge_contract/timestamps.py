"""The one timestamp format of every contract file: ISO 8601 UTC, milliseconds, ``Z``."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


def utc_now() -> str:
    """Now, e.g. ``2024-01-31T14:25:01.123Z``. With ``time`` alone: the per-run monitor
    and the Ray job's entrypoint write it without importing ``datetime``."""
    now_ms = time.time_ns() // 1_000_000
    seconds, millis = divmod(now_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def parse_timestamp(value: str) -> datetime | None:
    """An ISO 8601 timestamp with its time zone, or None if it is not one."""
    from datetime import datetime

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
