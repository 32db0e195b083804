"""The test trainer's model: a majority-class baseline over a CSV, and its metrics."""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import os
from dataclasses import dataclass

DATASET_ENV = "RUNFORGE_DATASET"
# Used when no dataset is given: two balanced classes, so metrics.v1 is well defined.
SYNTHETIC_NAME = "synthetic:rf_test_trainer"
SYNTHETIC_ROWS = 20


@dataclass(frozen=True)
class Dataset:
    path: str
    fingerprint_sha256: str
    label_column: str
    num_features: int
    labels: list[str]  # one per usable row
    rows_dropped: int  # rows with a missing value or the wrong number of cells


def load_dataset() -> Dataset:
    """The CSV named by ``RUNFORGE_DATASET`` (label column ``label``, else the last one)."""
    path = os.environ.get(DATASET_ENV, "")
    if path:
        with open(path, "rb") as stream:
            data = stream.read()
    else:
        path = SYNTHETIC_NAME
        lines = ["x1,x2,label"] + [f"{i},{i * i},{i % 2}" for i in range(SYNTHETIC_ROWS)]
        data = ("\n".join(lines) + "\n").encode()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    header, body = rows[0], rows[1:]
    label_index = header.index("label") if "label" in header else len(header) - 1
    usable = [row for row in body if len(row) == len(header) and all(c.strip() for c in row)]
    return Dataset(
        path=path,
        fingerprint_sha256=hashlib.sha256(data).hexdigest(),
        label_column=header[label_index],
        num_features=len(header) - 1,
        labels=[row[label_index] for row in usable],
        rows_dropped=len(body) - len(usable),
    )


@dataclass(frozen=True)
class Baseline:
    """Predicts the most frequent class (the smallest label on a tie)."""

    classes: list[str]
    majority: str


def fit(dataset: Dataset) -> Baseline:
    counts = collections.Counter(dataset.labels)
    classes = sorted(counts)
    majority = min(classes, key=lambda label: (-counts[label], label))
    return Baseline(classes=classes, majority=majority)


def metrics_v1(model: Baseline, dataset: Dataset) -> dict[str, object]:
    """metrics.v1.json for the baseline evaluated on the dataset (metrics schema v1)."""
    counts = collections.Counter(dataset.labels)
    total = len(dataset.labels)
    precision, recall, f1 = [], [], []
    for label in model.classes:
        hit = counts[label] if label == model.majority else 0
        predicted = total if label == model.majority else 0
        p = hit / predicted if predicted else 0.0
        r = hit / counts[label]
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    metrics: dict[str, object] = {
        "schema_version": "metrics.v1",
        "metrics_profile": "classification.base.v1",
        "num_classes": len(model.classes),
        "accuracy": counts[model.majority] / total,
        "precision_macro": sum(precision) / len(precision),
        "recall_macro": sum(recall) / len(recall),
        "f1_macro": sum(f1) / len(f1),
        "confusion_matrix": [
            [counts[truth] if predicted == model.majority else 0 for predicted in model.classes]
            for truth in model.classes
        ],
    }
    if len(model.classes) > 2:
        metrics.update(
            metrics_profile="classification.multiclass.v1",
            per_class_precision=precision,
            per_class_recall=recall,
            per_class_f1=f1,
            class_labels=model.classes,
        )
    return metrics
