"""structlog set-up: JSON lines for machines, readable console output for people.

Colours only on a terminal and never when ``NO_COLOR`` is set (https://no-color.org).
Under systemd (``JOURNAL_STREAM`` names our stderr) every line starts with its syslog
priority (``<3>`` for errors, ``<6>`` for info...), which journald strips and records, so
``journalctl --user -u runforged -p err`` shows the errors alone.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# sd-daemon(3) priorities, by structlog method name.
SYSLOG_PRIORITY = {
    "debug": 7,
    "info": 6,
    "msg": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
    "fatal": 2,
}


def colours_wanted(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return stream.isatty() and not env.get("NO_COLOR")


def logs_to_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected us to (``JOURNAL_STREAM``
    is ``<device>:<inode>`` of that stream; a child that inherited the variable but writes
    elsewhere must not prefix)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def _priority_prefix(logger: Any, method_name: str, rendered: Any) -> Any:
    return f"<{SYSLOG_PRIORITY.get(method_name, 6)}>{rendered}"


def configure_logging(log_format: str | None, level: str) -> None:
    """``log_format`` None picks console on a terminal and JSON otherwise."""
    if log_format is None:
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=colours_wanted(sys.stderr))
    else:
        renderer = structlog.processors.JSONRenderer()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    if logs_to_journal(sys.stderr):
        processors.append(_priority_prefix)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
