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

# A run on a cluster (executor "ray"): what the daemon and the job's entrypoint
# (``runforge_rayjob``, on a cluster node) exchange through the run folder.
EXECUTOR_DIR = ".executor"
SPEC_FILE = "spec.json"  # daemon: argv, environment, working directory, nonce
CONTROL_FILE = "control.json"  # daemon: cancel and kill requests
OUTPUT_FILE = "output"  # entrypoint: the trainer's output lines, tagged, appended
EXIT_FILE = "exit.json"  # entrypoint: the trainer's exit status, once reaped
TAG_STDOUT, TAG_STDERR, TAG_RECORD = b"1", b"2", b"C"  # first byte of an output line
NOT_SHARED_KEY = "runforge_workspace_not_shared"  # in the job's log: no run folder there
EXIT_NOT_SHARED = 78  # the entrypoint's exit status then (EX_CONFIG)


def relative_run_dir(run_id: str) -> str:
    """The workspace-relative, forward-slash path of run ``run_id``'s folder."""
    return f"{RUNS_DIR}/{run_id}"
