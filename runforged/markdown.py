"""A run rendered as a Markdown document (``export_md`` writes it as run-summary.md)."""

from __future__ import annotations

from typing import Any

from protocol.messages import RunSummary


def render_run_markdown(
    run: RunSummary | None,
    run_json: Any,
    metrics: Any,
    importance: Any,
    coefficients: Any,
) -> str:
    title = run.name if run is not None and run.name else "run"
    lines = [f"# {_md(title)}", ""]
    if run is not None:
        lines += ["| | |", "|---|---|"]
        rows: list[tuple[str, Any]] = [
            ("run id", f"`{run.run_id}`"),
            ("state", run.state.value),
            ("index", run.index_status.value),
            ("model", run.model),
            ("preset", run.preset),
            ("created", run.created_at),
            ("finished", run.finished_at),
            ("duration", f"{run.duration_ms / 1000:.1f} s" if run.duration_ms else None),
            ("reason", run.reason or None),
            ("folder", f"`{run.run_dir}`"),
        ]
        lines += [f"| {k} | {_md(v)} |" for k, v in rows if v is not None]
        if run.partial_artifacts:
            lines += [
                "",
                "Partial artifacts: " + ", ".join(f"`{p}`" for p in run.partial_artifacts),
            ]
    numbers = _numbers(metrics)
    if numbers:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {_md(k)} | {v:.4f} |" for k, v in numbers]
    ranked = _ranked(importance, ("importance", "value")) or _ranked(
        coefficients, ("coefficient", "value")
    )
    if ranked:
        heading = (
            "Feature importance" if _ranked(importance, ("importance", "value")) else "Coefficients"
        )
        lines += ["", f"## {heading}", "", "| feature | value |", "|---|---|"]
        lines += [f"| {_md(name)} | {value:.4f} |" for name, value in ranked[:20]]
    if isinstance(run_json, dict):
        lines += ["", "## run.json", "", "```json"]
        import json

        lines += [json.dumps(run_json, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def _numbers(document: Any, prefix: str = "") -> list[tuple[str, float]]:
    if not isinstance(document, dict):
        return []
    out: list[tuple[str, float]] = []
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out.append((name, float(value)))
        elif isinstance(value, dict) and not prefix:
            out += _numbers(value, f"{name}.")
    return out


def _ranked(document: Any, value_keys: tuple[str, ...]) -> list[tuple[str, float]]:
    if not isinstance(document, dict):
        return []
    for items in document.values():
        if isinstance(items, list) and items and isinstance(items[0], dict):
            rows = []
            for item in items:
                name = item.get("name") or item.get("feature")
                value = next((item[k] for k in value_keys if k in item), None)
                if isinstance(name, str) and isinstance(value, (int, float)):
                    rows.append((name, float(value)))
            if rows:
                return sorted(rows, key=lambda r: -abs(r[1]))
    return []


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
