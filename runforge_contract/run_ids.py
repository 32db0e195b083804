"""Run ids: what may name a run folder, and how the daemon makes a fresh one."""

from __future__ import annotations

import re
import secrets
import threading
from datetime import datetime, timezone

# What the daemon accepts as a run id in a request: it names a direct child of .ml/runs.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What the cancelled and index-orphan marker schemas allow in their run_id field.
MARKER_RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,256}")


def is_valid_run_id(run_id: str) -> bool:
    """Whether ``run_id`` can safely name a folder under ``.ml/runs``."""
    return bool(RUN_ID_PATTERN.fullmatch(run_id)) and ".." not in run_id


_issued_lock = threading.Lock()
_issued_second = ""
_issued_this_second: set[str] = set()


def new_run_id() -> str:
    """A fresh run id, ``YYYYMMDD-HHMMSS-<8 lowercase hex>`` in UTC.

    The random suffix alone makes collisions unlikely; remembering the ids handed out in
    the current second makes them impossible within this process, whatever the concurrency.
    """
    global _issued_second
    with _issued_lock:
        second = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        if second != _issued_second:
            _issued_second = second
            _issued_this_second.clear()
        while True:
            run_id = f"{second}-{secrets.token_hex(4)}"
            if run_id not in _issued_this_second:
                _issued_this_second.add(run_id)
                return run_id
