"""What a measure reports: rows of the summary table, and the figure they belong to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the table: our number, the peers' numbers, the ratio the goal is about
    (ours / ``ratio_of``, paired sample by sample) and whether the goal is met."""

    measure: str
    ours: float
    unit: str
    goal: str
    met: bool | None
    peers: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    ratio_of: str = ""


@dataclass
class Figure:
    """One numbered figure of issue 7: its rows, the raw numbers behind them, and what
    limits it (the physical floor where known), written into BENCHMARKS.md."""

    number: int
    title: str
    rows: list[Row]
    details: dict[str, Any]
    limits: str
    notes: list[str] = field(default_factory=list)


def format_value(value: float, unit: str) -> str:
    if unit == "µs":
        return f"{value:,.0f} µs"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.3f} s"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if unit == "events/s":
        return f"{value:,.0f}/s"
    if unit == "":
        return f"{value:,.0f}"
    return f"{value:,.2f} {unit}"
