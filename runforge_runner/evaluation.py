"""Validation metrics of a trained model: the metrics.v1 document and its summary.

The profile follows the model and the classes: multiclass (3+ classes) gets per-class
scores; binary with probabilities gets ROC-AUC and log loss; otherwise the base set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline

from runforge_runner.fitting import Split

PROFILE_BASE = "classification.base.v1"
PROFILE_PROBA = "classification.proba.v1"
PROFILE_MULTICLASS = "classification.multiclass.v1"


def json_label(label: Any) -> int | str:
    """A class label as JSON: numpy integers become ints, anything else a string."""
    if isinstance(label, (int, np.integer)):
        return int(label)
    return str(label)


def compute_metrics(model: Pipeline, split: Split) -> dict[str, Any]:
    """The metrics.v1 document for ``model`` on the validation split."""
    classes = split.classes
    predicted = model.predict(split.x_val)
    precision, recall, f1, _ = precision_recall_fscore_support(
        split.y_val, predicted, labels=classes, average="macro", zero_division=0
    )
    document: dict[str, Any] = {
        "schema_version": "metrics.v1",
        "metrics_profile": PROFILE_BASE,
        "num_classes": len(classes),
        "accuracy": float(accuracy_score(split.y_val, predicted)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "confusion_matrix": confusion_matrix(split.y_val, predicted, labels=classes).tolist(),
    }
    if len(classes) > 2:
        per_precision, per_recall, per_f1, _ = precision_recall_fscore_support(
            split.y_val, predicted, labels=classes, average=None, zero_division=0
        )
        document.update(
            metrics_profile=PROFILE_MULTICLASS,
            per_class_precision=[float(v) for v in per_precision],
            per_class_recall=[float(v) for v in per_recall],
            per_class_f1=[float(v) for v in per_f1],
            class_labels=[json_label(label) for label in classes],
        )
    elif hasattr(model, "predict_proba"):
        probabilities = model.predict_proba(split.x_val)
        positive = probabilities[:, 1]
        document.update(
            metrics_profile=PROFILE_PROBA,
            roc_auc=float(roc_auc_score(split.y_val == classes[1], positive)),
            log_loss=float(log_loss(split.y_val, probabilities, labels=classes)),
        )
    return document
