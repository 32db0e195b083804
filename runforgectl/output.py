"""Human output: aligned tables, the orphan banner, and JSON for machines."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import msgspec

from runforge_protocol import messages as m

_json = msgspec.json.Encoder()


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Exactly one JSON document (or one line of a JSON-lines stream)."""
    stream = out or sys.stdout
    stream.write(_json.encode(value).decode() + "\n")
    stream.flush()


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide and fullwidth characters (CJK,
    most emoji) take two, combining marks and format characters none."""
    if text.isascii():
        return len(text)
    import unicodedata

    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns (an ellipsis marks the cut)."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        w = display_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [display_width(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], display_width(value))
    line = "  ".join(pad(h, widths[i]) for i, h in enumerate(headers)).rstrip()
    stream.write(line + "\n")
    stream.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        stream.write("  ".join(pad(v, widths[i]) for i, v in enumerate(row)).rstrip() + "\n")


def key_values(pairs: Iterable[tuple[str, Any]], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    items = [(k, _cell(v)) for k, v in pairs]
    width = max((display_width(k) for k, _ in items), default=0)
    for key, value in items:
        stream.write(f"{pad(key, width)}  {value}\n")


def flatten(document: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``[("a.b", 1), ("c", "1, 2")]``: any JSON
    document as key/value rows."""
    if isinstance(document, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in document.items():
            rows.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(document, list) and all(not isinstance(v, (dict, list)) for v in document):
        return [(prefix, ", ".join(_cell(v) for v in document))]
    if isinstance(document, list):
        rows = []
        for i, value in enumerate(document):
            rows.extend(flatten(value, f"{prefix}[{i}]"))
        return rows
    return [(prefix, document)]


def orphan_banner(orphans: Sequence[m.OrphanInfo], out: TextIO | None = None) -> None:
    if not orphans:
        return
    stream = out or sys.stdout
    noun = "run is" if len(orphans) == 1 else "runs are"
    stream.write(
        f"! {len(orphans)} {noun} on disk but missing from the index (orphaned): "
        f"{', '.join(o.run_id for o in orphans[:5])}{' ...' if len(orphans) > 5 else ''}\n"
        f"! Run 'runforgectl recover' to put them back.\n\n"
    )


def error(err: m.ErrorInfo, out: TextIO | None = None) -> None:
    stream = out or sys.stderr
    stream.write(f"error: {err.message} [{err.code.value}]\n")
    if err.remediation:
        stream.write(f"  fix: {err.remediation}\n")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# Every fractional number is shown with this many decimals, so that columns line up and
# 1.0 never reads as the integer 1.
DECIMALS = 4


def number(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:.{DECIMALS}f}" if abs(value) < 1e9 else f"{value:.{DECIMALS}e}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "value") and not isinstance(value, (int, str)):
        return str(value.value)
    if isinstance(value, (dict, list)):
        return _json.encode(value).decode()
    return str(value)
