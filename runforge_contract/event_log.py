"""A run's event log, ``events.jsonl``: one event per line, each line written whole (a
last line without its newline was torn by a crash and is no event).

The per-run monitor and the daemon both append to it, one at a time, and each continues
the run's numbering from it, so both read a line's ``run_seq`` with ``run_seq_of``.
Standard library only: the monitor, a small stdlib-only program, imports it.
"""

from __future__ import annotations

_RUN_SEQ_KEY = b'"run_seq":'


def run_seq_of(line: bytes) -> int | None:
    """The ``run_seq`` of an event line as the daemon and the monitor write it (the
    envelope's fields in order: ``{"seq":0,"run_seq":N,...``); None if it has none."""
    start = line.find(_RUN_SEQ_KEY)
    if start < 0:
        return None
    start += len(_RUN_SEQ_KEY)
    end = line.find(b",", start)
    try:
        return int(line[start:end])
    except ValueError:
        return None
