"""A run rendered as a Markdown document (``export_md`` writes it as run-summary.md)."""

from __future__ import annotations

import json
from typing import Any

from runforge_protocol.messages import RunSummary

# How many features each interpretability table shows (per class for coefficients).
TOP_FEATURES = 20


def render_run_markdown(
    run: RunSummary | None,
    run_json: Any,
    metrics: Any,
    importance: Any,
    coefficients: Any,
) -> str:
    """``importance`` is a feature_importance.v1 document and ``coefficients`` a
    linear_coefficients.v1 document (RunForge's formats), or None when the run has none."""
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
        lines += [f"| {_md(k)} | {_number(v)} |" for k, v in numbers]
    ranked = _importances(importance)
    if ranked:
        lines += ["", "## Feature importance", "", "| feature | importance |", "|---|---|"]
        lines += [f"| {_md(name)} | {value:.4f} |" for name, value in ranked[:TOP_FEATURES]]
    by_class = _coefficients_by_class(coefficients)
    if by_class:
        lines += [
            "",
            "## Coefficients",
            "",
            "Standardized feature space: the change per standard deviation of the feature.",
            "",
            "| class | feature | coefficient |",
            "|---|---|---|",
        ]
        for label, features in by_class:
            lines += [
                f"| {_md(label)} | {_md(name)} | {value:.4f} |"
                for name, value in features[:TOP_FEATURES]
            ]
    if isinstance(run_json, dict):
        lines += ["", "## run.json", "", "```json"]
        lines += [json.dumps(run_json, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def _numbers(document: Any, prefix: str = "") -> list[tuple[str, int | float]]:
    """Top-level numbers of a metrics document, and those of its nested objects."""
    if not isinstance(document, dict):
        return []
    out: list[tuple[str, int | float]] = []
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out.append((name, value))
        elif isinstance(value, dict) and not prefix:
            out += _numbers(value, f"{name}.")
    return out


def _number(value: int | float) -> str:
    # Counts (num_classes...) stay integers; measurements get four decimals.
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _importances(document: Any) -> list[tuple[str, float]]:
    """(feature, importance) from feature_importance.v1, largest first as the file ranks
    them."""
    if not isinstance(document, dict):
        return []
    return _named_values(document.get("features_by_importance"), "importance")


def _coefficients_by_class(document: Any) -> list[tuple[Any, list[tuple[str, float]]]]:
    """(class, [(feature, coefficient)]) from linear_coefficients.v1, in the file's order
    (features by absolute magnitude). A binary model has one entry, the positive class."""
    if not isinstance(document, dict) or not isinstance(
        document.get("coefficients_by_class"), list
    ):
        return []
    out = []
    for group in document["coefficients_by_class"]:
        if isinstance(group, dict):
            features = _named_values(group.get("features"), "coefficient")
            if features:
                out.append((group.get("class"), features))
    return out


def _named_values(items: Any, value_key: str) -> list[tuple[str, float]]:
    if not isinstance(items, list):
        return []
    rows = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name, value = item.get("name"), item.get(value_key)
        if (
            isinstance(name, str)
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            rows.append((name, float(value)))
    return rows


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
