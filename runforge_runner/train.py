"""One training run, step by step, speaking the runner contract.

run_start -> dataset_loaded -> train_started -> train_progress... -> train_finished ->
metrics_computed -> artifacts_written, with a cancel check between every chunk of work.
When cancelled, the flush saves what is finished: the model as trained so far
(``model.partial.pkl`` during training, ``model.pkl`` once training is done) and the
metrics if they were computed. run.json is written last and never on cancel, so its
presence means the run completed.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runforge_contract.layout import (
    FEATURE_IMPORTANCE_FILE,
    INTERPRETABILITY_INDEX_FILE,
    LINEAR_COEFFICIENTS_FILE,
    METRICS_FILE,
    METRICS_V1_FILE,
    MODEL_FILE,
    PARTIAL_MODEL_FILE,
    RUN_FILE,
)
from runforge_runner.contract import (
    ERROR_TRAINING_FAILED,
    STEP_ARTIFACTS,
    STEP_DATASET_LOADING,
    STEP_METRICS,
    STEP_SHUTDOWN,
    STEP_TRAINING,
    TrainerError,
    TrainerSession,
    utc_timestamp,
    workspace_relative,
)
from runforge_runner.dataset import load_dataset
from runforge_runner.params import TrainingPlan


@dataclass(frozen=True)
class TrainRequest:
    """The resolved ``train`` command line."""

    plan: TrainingPlan
    dataset_path: Path
    label_column: str
    device: str


@dataclass
class FinishedWork:
    """What exists so far, so that a cancel can flush it. ``Any`` holds sklearn objects,
    which are imported only once the dataset is loaded."""

    fit: Any = None
    model: Any = None
    metrics: dict[str, Any] | None = None
    written: set[str] = field(default_factory=set)


def train_run(session: TrainerSession, request: TrainRequest) -> None:
    """The whole run; raises ``RunCancelled`` at the first check after a cancel."""
    created_at = utc_timestamp()
    plan = request.plan
    work = FinishedWork()
    session.on_cancel(lambda: _flush_finished_work(session, work))

    session.emit(
        "run_start",
        preset_id=plan.preset,
        model_family=plan.model_family,
        out_dir=session.run_dir_relative,
    )
    session.enter_step(STEP_DATASET_LOADING)
    if request.device == "cuda":
        session.log("--device cuda: scikit-learn has no GPU support; training on the CPU")
    dataset = load_dataset(request.dataset_path, request.label_column, session.checkpoint)
    session.checkpoint()
    # scikit-learn takes about a second to import; by now the cancel handler has long been
    # in place and the dataset is known to be usable.
    from runforge_runner import artifacts, evaluation, training

    split = training.split_dataset(dataset, plan.seed)
    session.emit(
        "dataset_loaded",
        num_samples=len(dataset.labels),
        num_features=len(dataset.feature_names),
        rows_dropped=dataset.rows_dropped,
        label_column=dataset.label_column,
        dataset_fingerprint_sha256=dataset.fingerprint_sha256,
    )
    session.checkpoint()

    session.enter_step(STEP_TRAINING)
    session.emit("train_started", model_family=plan.model_family)
    fit_started = time.monotonic()
    work.fit = training.start_fit(plan, split)
    while work.fit.done < work.fit.total:
        session.checkpoint()
        try:
            progress = work.fit.fit_chunk()
        except (ValueError, ArithmeticError) as error:
            # scikit-learn's way of saying the data cannot be fitted (e.g. overflow).
            raise TrainerError(
                ERROR_TRAINING_FAILED,
                f"{plan.model_family} training failed at {work.fit.done}/{work.fit.total}: {error}",
            ) from error
        fields: dict[str, Any] = {
            "epoch": progress.done,
            "total_epochs": progress.total,
            "val_accuracy": progress.val_accuracy,
        }
        if progress.loss is not None and math.isfinite(progress.loss):
            fields["loss"] = progress.loss
        session.emit("train_progress", **fields)
    work.model = work.fit.model()
    session.emit("train_finished", duration_seconds=round(time.monotonic() - fit_started, 3))
    session.checkpoint()

    session.enter_step(STEP_METRICS)
    work.metrics = evaluation.compute_metrics(work.model, split)
    session.checkpoint()
    _write_metrics(session, work)
    session.emit(
        "metrics_computed",
        metrics_profile=work.metrics["metrics_profile"],
        accuracy=work.metrics["accuracy"],
    )
    session.checkpoint()

    session.enter_step(STEP_ARTIFACTS)
    _write_model(session, work, MODEL_FILE)
    session.checkpoint()
    if plan.model_family == "random_forest":
        interpretability_file = FEATURE_IMPORTANCE_FILE
        interpretability = artifacts.feature_importance(work.model, dataset.feature_names)
    else:
        interpretability_file = LINEAR_COEFFICIENTS_FILE
        interpretability = artifacts.linear_coefficients(
            work.model, dataset.feature_names, plan.model_family
        )
    session.write_json(interpretability_file, interpretability)
    session.checkpoint()
    record = artifacts.RunRecord(
        run_id=session.run_id,
        created_at=created_at,
        dataset_path=workspace_relative(request.dataset_path),
        dataset=dataset,
        plan=plan,
        metrics=work.metrics,
        interpretability_file=interpretability_file,
    )
    session.write_json(
        INTERPRETABILITY_INDEX_FILE,
        artifacts.interpretability_index(record, interpretability, utc_timestamp()),
    )
    session.write_json(METRICS_FILE, artifacts.metrics_summary(record))
    session.checkpoint()
    # From here on the run is complete: run.json is its proof, artifacts_written its news.
    session.write_json(RUN_FILE, artifacts.run_document(record))
    session.emit(
        "artifacts_written",
        artifact_count=len(session.written_artifacts),
        run_dir=session.run_dir_relative,
    )
    session.enter_step(STEP_SHUTDOWN)


def _write_metrics(session: TrainerSession, work: FinishedWork) -> None:
    session.write_json(METRICS_V1_FILE, work.metrics)
    work.written.add(METRICS_V1_FILE)


def _write_model(session: TrainerSession, work: FinishedWork, name: str) -> None:
    session.write_bytes(name, pickle.dumps(work.model, protocol=pickle.HIGHEST_PROTOCOL))
    work.written.add(name)


def _flush_finished_work(session: TrainerSession, work: FinishedWork) -> None:
    """Save on cancel whatever is finished and not yet on disk."""
    if work.model is not None:
        if MODEL_FILE not in work.written:
            _write_model(session, work, MODEL_FILE)
    elif work.fit is not None:
        work.model = work.fit.model()
        if work.model is not None:
            _write_model(session, work, PARTIAL_MODEL_FILE)
    if work.metrics is not None and METRICS_V1_FILE not in work.written:
        _write_metrics(session, work)
