"""The bundled sample datasets, generated deterministically with the standard library.

``iris_like.csv``: 150 rows, 4 features, 3 classes; small enough for tests and quick
tries (also shipped in ``runforge_contract/data/``). ``demo_large.csv``: 40,000 rows, 20
features, 4 overlapping classes; a default run on it lasts tens of seconds with a steady
stream of progress, for demos and cancel drills. Both come from ``random.Random.random``,
whose sequence Python guarantees across versions, so the bytes (and the fingerprints)
are the same everywhere.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Callable
from pathlib import Path

from runforge_contract.atomicio import write_bytes_atomic

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
SMALL_NAME = "iris_like.csv"
LARGE_NAME = "demo_large.csv"


class _Gaussian:
    """Normal draws by Box-Muller from ``random()`` alone (``gauss`` has no such promise)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def uniform(self) -> float:
        return self._random.random()

    def normal(self, mean: float = 0.0, sigma: float = 1.0) -> float:
        u1 = 1.0 - self._random.random()  # in (0, 1], keeps log() finite
        u2 = self._random.random()
        return mean + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def iris_like_csv() -> bytes:
    """Three flower-like classes of 50, measured on four features, one decimal each."""
    rng = _Gaussian(seed=3)
    # (mean, spread) per feature and class, loosely shaped like petal/sepal measurements.
    profiles = [
        [(5.0, 0.35), (3.4, 0.38), (1.5, 0.17), (0.25, 0.1)],
        [(5.9, 0.5), (2.8, 0.31), (4.3, 0.47), (1.3, 0.2)],
        [(6.6, 0.63), (3.0, 0.32), (5.5, 0.55), (2.0, 0.27)],
    ]
    rows = []
    for label, profile in enumerate(profiles):
        for _ in range(50):
            values = [max(0.1, rng.normal(mean, spread)) for mean, spread in profile]
            rows.append([f"{value:.1f}" for value in values] + [str(label)])
    header = ["sepal_length", "sepal_width", "petal_length", "petal_width", "label"]
    return _to_csv(header, rows)


def demo_large_csv() -> bytes:
    """Four classes around random centres in 20 dimensions, 12 of them informative."""
    rng = _Gaussian(seed=7)
    num_features, informative, num_classes, num_rows = 20, 12, 4, 40_000
    centres = [
        [rng.normal(0.0, 0.55) if f < informative else 0.0 for f in range(num_features)]
        for _ in range(num_classes)
    ]
    rows = []
    for _ in range(num_rows):
        label = int(rng.uniform() * num_classes)
        values = [rng.normal(centre, 1.0) for centre in centres[label]]
        rows.append([f"{value:.4f}" for value in values] + [str(label)])
    header = [f"f{index:02d}" for index in range(1, num_features + 1)] + ["label"]
    return _to_csv(header, rows)


SAMPLES: dict[str, Callable[[], bytes]] = {SMALL_NAME: iris_like_csv, LARGE_NAME: demo_large_csv}


def write_samples(out_dir: Path) -> list[Path]:
    """Write every sample dataset into ``out_dir`` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, generate in SAMPLES.items():
        path = out_dir / name
        write_bytes_atomic(path, generate())
        written.append(path)
    return written
