"""Where runs live in a workspace, and the name of every file a run folder holds.

Names only: reading and writing these files is ``runforged.run_folder``'s job on the
daemon's side and ``runforge_runner``'s on the trainer's.
"""

from __future__ import annotations

# Workspace-relative, forward slashes (the form every contract file records).
RUNS_DIR = ".ml/runs"
OUTPUTS_DIR = ".ml/outputs"
INDEX_FILE = ".ml/outputs/index.json"

# Written by the trainer (the runner).
MODEL_FILE = "model.pkl"
PARTIAL_MODEL_FILE = "model.partial.pkl"  # the model as trained so far, on cancel
METRICS_FILE = "metrics.json"
METRICS_V1_FILE = "metrics.v1.json"
FEATURE_IMPORTANCE_FILE = "feature_importance.v1.json"
LINEAR_COEFFICIENTS_FILE = "linear_coefficients.v1.json"
INTERPRETABILITY_INDEX_FILE = "interpretability.index.v1.json"
RUN_FILE = "run.json"  # written last: its presence means the run completed
CANCELLED_MARKER = ".cancelled"  # a graceful cancel: what was saved, at which step

# Written by the daemon.
REQUEST_FILE = "request.json"  # before the spawn: what was asked, resolved
RESULT_FILE = "result.json"  # at the end: the terminal state and why
EVENTS_FILE = "events.jsonl"  # every event of the run, as published (for replay)
LOGS_FILE = "logs.txt"  # the trainer's stdout and non-event stderr lines
INDEX_ORPHAN_MARKER = ".index-orphan"  # completed, but the index update failed
RUN_SUMMARY_FILE = "run-summary.md"  # export_md's output


def relative_run_dir(run_id: str) -> str:
    """The workspace-relative, forward-slash path of run ``run_id``'s folder."""
    return f"{RUNS_DIR}/{run_id}"
