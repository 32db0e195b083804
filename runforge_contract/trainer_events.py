"""The trainer event vocabulary: the JSON lines a trainer writes to stderr.

One declaration for both ends of the pipe:

- ``EMITTED_FIELDS``: what a trainer writes for each event, besides ``event``,
  ``timestamp`` and ``run_id`` (required names, optional names). The runner refuses to
  emit anything else, so that a trainer's mistake fails in its own tests.
- ``RELAYED_FIELDS``: what the daemon checks before it relays a line as an event (field
  name -> JSON type). Deliberately lighter than ``EMITTED_FIELDS``: it is on the relay's
  hot path, and other trainers (a custom one, an older RunForge runner) need only these.
"""

from __future__ import annotations

from typing import Any

RUN_START = "run_start"
DATASET_LOADED = "dataset_loaded"
TRAIN_STARTED = "train_started"
TRAIN_PROGRESS = "train_progress"
TRAIN_FINISHED = "train_finished"
METRICS_COMPUTED = "metrics_computed"
ARTIFACTS_WRITTEN = "artifacts_written"
CANCELLING = "cancelling"
RUN_CANCELLED = "run_cancelled"
RUN_FAILED = "run_failed"  # this project's addition to the events schema

# The events of a run that trains to completion, in order (train_progress repeats).
SUCCESS_SEQUENCE = (
    RUN_START,
    DATASET_LOADED,
    TRAIN_STARTED,
    TRAIN_PROGRESS,
    TRAIN_FINISHED,
    METRICS_COMPUTED,
    ARTIFACTS_WRITTEN,
)
# The events the events schema v1 defines (everything but run_failed).
SCHEMA_EVENTS = frozenset({*SUCCESS_SEQUENCE, CANCELLING, RUN_CANCELLED})
ALL_EVENTS = SCHEMA_EVENTS | {RUN_FAILED}

# Model families whose ``train_progress.total_epochs`` is a ceiling (``max_iter``), not
# the amount of work: the fit stops as soon as it converges by its ``tol``, often far
# earlier. A progress display shows their steps as "iteration N (max_iter M)", no
# percentage, and an ETA only as an upper bound. Every other family's (the forest's
# trees, a custom trainer's epochs) is the work to do.
CEILING_FAMILIES = frozenset({"logistic_regression", "linear_svc"})

# Longest stderr line the daemon will consider as an event.
MAX_EVENT_LINE = 64 * 1024

EMITTED_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    RUN_START: (frozenset({"preset_id", "model_family"}), frozenset({"out_dir"})),
    DATASET_LOADED: (
        frozenset({"num_samples", "num_features", "rows_dropped"}),
        frozenset({"label_column", "dataset_fingerprint_sha256"}),
    ),
    TRAIN_STARTED: (frozenset({"model_family"}), frozenset()),
    TRAIN_PROGRESS: (frozenset({"epoch", "total_epochs"}), frozenset({"loss", "val_accuracy"})),
    TRAIN_FINISHED: (frozenset(), frozenset({"duration_seconds"})),
    METRICS_COMPUTED: (frozenset({"metrics_profile"}), frozenset({"accuracy"})),
    ARTIFACTS_WRITTEN: (frozenset({"artifact_count"}), frozenset({"run_dir"})),
    CANCELLING: (frozenset({"seconds_remaining"}), frozenset({"step"})),
    RUN_CANCELLED: (frozenset({"step"}), frozenset({"reason", "graceful"})),
    RUN_FAILED: (frozenset({"error"}), frozenset({"step"})),
}

_STR, _INT, _NUM, _BOOL, _OBJ = str, int, (int, float), bool, dict
RELAYED_FIELDS: dict[str, dict[str, Any]] = {
    RUN_START: {"run_id": _STR, "preset_id": _STR, "model_family": _STR},
    DATASET_LOADED: {
        "run_id": _STR,
        "num_samples": _INT,
        "num_features": _INT,
        "rows_dropped": _INT,
    },
    TRAIN_STARTED: {"run_id": _STR, "model_family": _STR},
    TRAIN_PROGRESS: {"run_id": _STR, "epoch": _INT, "total_epochs": _INT},
    TRAIN_FINISHED: {"run_id": _STR},
    METRICS_COMPUTED: {"run_id": _STR, "metrics_profile": _STR},
    ARTIFACTS_WRITTEN: {"run_id": _STR},
    CANCELLING: {"run_id": _STR, "seconds_remaining": _NUM},
    RUN_CANCELLED: {"run_id": _STR, "graceful": _BOOL},
    RUN_FAILED: {"run_id": _STR, "error": _OBJ},
}
INT_TYPE = _INT  # a field of this type must not be a bool (JSON true is not a number)
