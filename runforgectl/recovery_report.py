"""The recovery report for people: a summary and three tables, as text or Markdown."""

from __future__ import annotations

import sys
from typing import Any

from runforgectl import output

SECTIONS = (
    ("recovered", "Recovered", ["run", "folder", "reason"], ("run_id", "run_dir", "reason")),
    ("skipped", "Skipped", ["folder", "error", "message"], ("run_dir", "error", "message")),
    (
        "cancelled_excluded",
        "Cancelled (not indexed)",
        ["run", "folder", "reason"],
        ("run_id", "run_dir", "reason"),
    ),
)
EMPTY = {
    "recovered": "No runs needed recovery.",
    "skipped": "No folders were skipped.",
    "cancelled_excluded": "No cancelled runs found.",
}


def summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("run folders scanned", report.get("scanned_run_dirs", 0)),
        ("already indexed", report.get("already_indexed", 0)),
        ("recovered", len(report.get("recovered", []))),
        ("skipped", len(report.get("skipped", []))),
        ("cancelled, excluded", len(report.get("cancelled_excluded", []))),
    ]
    if report.get("in_flight"):
        rows.append(("in flight, left alone", report["in_flight"]))
    # One row per path: a path is shown as a path, never as a list.
    rows += [("corrupt index kept as", path) for path in report.get("corrupt_index_kept_as", [])]
    rows.append(("recovered at", report.get("recovered_at", "")))
    return rows


def render_text(workspace: str, report: dict[str, Any]) -> None:
    print(f"Recovery of {workspace}\n")
    output.key_values(summary_rows(report))
    for key, title, headers, fields in SECTIONS:
        items = report.get(key, [])
        print(f"\n{title}")
        if not items:
            print(f"  {EMPTY[key]}")
            continue
        output.table(headers, [[item.get(f) for f in fields] for item in items], sys.stdout)


def render_markdown(workspace: str, report: dict[str, Any]) -> str:
    lines = [f"# Recovery report: `{workspace}`", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {_md(value)} |" for label, value in summary_rows(report)]
    for key, title, headers, fields in SECTIONS:
        items = report.get(key, [])
        lines += ["", f"## {title}", ""]
        if not items:
            lines.append(EMPTY[key])
            continue
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        for item in items:
            lines.append("| " + " | ".join(_md(item.get(f)) for f in fields) + " |")
    return "\n".join(lines) + "\n"


def _md(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
