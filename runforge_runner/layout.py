"""Names of the files a run leaves in its folder (relative to the run folder)."""

from __future__ import annotations

MODEL_FILE = "model.pkl"
PARTIAL_MODEL_FILE = "model.partial.pkl"  # the model as trained so far, on cancel
METRICS_FILE = "metrics.json"
METRICS_V1_FILE = "metrics.v1.json"
FEATURE_IMPORTANCE_FILE = "feature_importance.v1.json"
LINEAR_COEFFICIENTS_FILE = "linear_coefficients.v1.json"
INTERPRETABILITY_INDEX_FILE = "interpretability.index.v1.json"
RUN_FILE = "run.json"  # written last: its presence means the run completed
