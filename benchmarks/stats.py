"""Summaries of timing samples: median, p99, and ratios paired sample by sample."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (q in 0..100): a value that was observed."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """Median of ours[i] / theirs[i]. Pairs are taken in the same round, so drift in the
    machine's speed (other people's work on shared cores) cancels out within each pair."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError("paired samples must be non-empty and of equal length")
    return median([a / b for a, b in zip(ours, theirs, strict=True)])


def alternating(rounds: int, contenders: Sequence[T]) -> Iterator[tuple[int, list[T]]]:
    """Each round's running order: the contenders rotated by one each round, so that no
    one always goes first (after a cold cache) or last (after the others' garbage)."""
    for index in range(rounds):
        shift = index % len(contenders)
        yield index, [*contenders[shift:], *contenders[:shift]]


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """What the JSON results keep of a sample set."""
    return {
        "n": len(samples),
        "median": median(samples),
        "p99": percentile(samples, 99),
        "min": min(samples),
        "max": max(samples),
    }
