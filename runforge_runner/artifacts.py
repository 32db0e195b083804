"""The documents a finished run leaves in its folder, built from the trained model.

Interpretability (feature importance for forests, standardized coefficients for linear
models), the interpretability index, ``metrics.json`` and ``run.json`` (run schema
v0.3.6, a closed schema: the run's display name, preset, device and duration are not in
it; the daemon records them in its own ``request.json`` / ``result.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.pipeline import Pipeline

from runforge_contract.layout import (
    FEATURE_IMPORTANCE_FILE,
    LINEAR_COEFFICIENTS_FILE,
    METRICS_V1_FILE,
    MODEL_FILE,
)
from runforge_runner import __version__
from runforge_runner.dataset import Dataset
from runforge_runner.evaluation import json_label
from runforge_runner.params import PROFILE_VERSION, TrainingPlan

TOP_K = 10
SUMMARY_TOP_K = 5


def feature_importance(model: Pipeline, feature_names: list[str]) -> dict[str, Any]:
    """feature_importance.v1: the forest's Gini importances, ranked and in column order."""
    importances = [float(v) for v in model[-1].feature_importances_]
    ranked = sorted(zip(feature_names, importances, strict=True), key=lambda f: (-f[1], f[0]))
    return {
        "schema_version": "feature_importance.v1",
        "model_family": "random_forest",
        "importance_type": "gini_importance",
        "num_features": len(feature_names),
        "features_by_importance": [
            {"name": name, "importance": value, "rank": rank}
            for rank, (name, value) in enumerate(ranked, start=1)
        ],
        "features_by_original_order": [
            {"name": name, "importance": value, "index": index}
            for index, (name, value) in enumerate(zip(feature_names, importances, strict=True))
        ],
        "top_k": [name for name, _ in ranked[:TOP_K]],
    }


def linear_coefficients(
    model: Pipeline, feature_names: list[str], model_family: str
) -> dict[str, Any]:
    """linear_coefficients.v1: coefficients in standardized space, ranked per class.

    Binary models have one row of coefficients, for the positive class (the second)."""
    estimator = model[-1]
    classes = [json_label(label) for label in estimator.classes_]
    rows = estimator.coef_
    row_classes = classes[1:] if len(rows) == 1 else classes
    by_class = []
    for label, row, intercept in zip(row_classes, rows, estimator.intercept_, strict=True):
        features = sorted(
            ((name, float(value)) for name, value in zip(feature_names, row, strict=True)),
            key=lambda f: (-abs(f[1]), f[0]),
        )
        by_class.append(
            (
                label,
                float(intercept),
                [
                    {
                        "name": name,
                        "coefficient": value,
                        "abs_coefficient": abs(value),
                        "rank": rank,
                    }
                    for rank, (name, value) in enumerate(features, start=1)
                ],
            )
        )
    return {
        "schema_version": "linear_coefficients.v1",
        "model_family": model_family,
        "coefficient_space": "standardized",
        "num_features": len(feature_names),
        "num_classes": len(classes),
        "classes": classes,
        "intercepts": [{"class": label, "intercept": value} for label, value, _ in by_class],
        "coefficients_by_class": [
            {"class": label, "features": features} for label, _, features in by_class
        ],
        "top_k_by_class": [
            {"class": label, "top_features": [f["name"] for f in features[:TOP_K]]}
            for label, _, features in by_class
        ],
    }


@dataclass(frozen=True)
class RunRecord:
    """What run.json and the index entry are made of."""

    run_id: str
    created_at: str
    dataset_path: str
    dataset: Dataset
    plan: TrainingPlan
    metrics: dict[str, Any]
    interpretability_file: str  # FEATURE_IMPORTANCE_FILE or LINEAR_COEFFICIENTS_FILE


def interpretability_index(
    record: RunRecord, interpretability: dict[str, Any], created_at: str
) -> dict[str, Any]:
    """interpretability.index.v1: where each interpretability artifact is, with a summary."""
    available: dict[str, Any] = {
        "metrics_v1": {
            "schema_version": record.metrics["schema_version"],
            "path": METRICS_V1_FILE,
            "summary": {
                "metrics_profile": record.metrics["metrics_profile"],
                "accuracy": record.metrics["accuracy"],
            },
        }
    }
    if record.interpretability_file == FEATURE_IMPORTANCE_FILE:
        available["feature_importance_v1"] = {
            "schema_version": interpretability["schema_version"],
            "path": FEATURE_IMPORTANCE_FILE,
            "summary": {
                "model_family": interpretability["model_family"],
                "top_k": interpretability["top_k"][:SUMMARY_TOP_K],
            },
        }
    else:
        available["linear_coefficients_v1"] = {
            "schema_version": interpretability["schema_version"],
            "path": LINEAR_COEFFICIENTS_FILE,
            "summary": {
                "model_family": interpretability["model_family"],
                "num_classes": interpretability["num_classes"],
                "top_k_by_class": [
                    {"class": entry["class"], "top_features": entry["top_features"][:SUMMARY_TOP_K]}
                    for entry in interpretability["top_k_by_class"]
                ],
            },
        }
    return {
        "schema_version": "interpretability.index.v1",
        "run_id": record.run_id,
        "runforge_version": __version__,
        "created_at": created_at,
        "available_artifacts": available,
    }


def metrics_summary(record: RunRecord) -> dict[str, Any]:
    """metrics.json and run.json's ``metrics``: the frozen three-key summary."""
    return {
        "accuracy": record.metrics["accuracy"],
        "num_samples": len(record.dataset.labels),
        "num_features": len(record.dataset.feature_names),
    }


def run_document(record: RunRecord) -> dict[str, Any]:
    """run.json, run schema v0.3.6."""
    dataset = record.dataset
    document: dict[str, Any] = {
        "run_id": record.run_id,
        "runforge_version": __version__,
        "schema_version": "run.v0.3.6",
        "created_at": record.created_at,
        "dataset": {"path": record.dataset_path, "fingerprint_sha256": dataset.fingerprint_sha256},
        "label_column": dataset.label_column,
        "model_family": record.plan.model_family,
        "num_samples": len(dataset.labels),
        "num_features": len(dataset.feature_names),
        "dropped_rows_missing_values": dataset.rows_dropped,
        "metrics": metrics_summary(record),
        "metrics_v1": {
            "schema_version": "metrics.v1",
            "metrics_profile": record.metrics["metrics_profile"],
            "artifact_path": METRICS_V1_FILE,
        },
    }
    artifacts = {"model_pkl": MODEL_FILE, "metrics_v1_json": METRICS_V1_FILE}
    if record.interpretability_file == FEATURE_IMPORTANCE_FILE:
        document["feature_importance_schema_version"] = "feature_importance.v1"
        document["feature_importance_artifact"] = FEATURE_IMPORTANCE_FILE
        artifacts["feature_importance_json"] = FEATURE_IMPORTANCE_FILE
    else:
        document["linear_coefficients_schema_version"] = "linear_coefficients.v1"
        document["linear_coefficients_artifact"] = LINEAR_COEFFICIENTS_FILE
        artifacts["linear_coefficients_json"] = LINEAR_COEFFICIENTS_FILE
    document["artifacts"] = artifacts
    if record.plan.profile is not None:
        document["profile_name"] = record.plan.profile
        document["profile_version"] = PROFILE_VERSION
        document["expanded_parameters_hash"] = record.plan.expanded_parameters_hash()
    document["hyperparameters"] = record.plan.run_json_hyperparameters()
    return document
