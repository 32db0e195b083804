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
    RunCancelled,
    TrainerError,
    TrainerSession,
    utc_timestamp,
    workspace_relative,
)
from runforge_runner.dataset import load_dataset
from runforge_runner.params import TrainingPlan

# Progress by the clock, whatever the data size: at most one event per MIN interval
# (and only when the fit moved), at least one per MAX interval while fitting.
PROGRESS_MIN_INTERVAL_S = 0.2
PROGRESS_MAX_INTERVAL_S = 1.0
# How often the main thread looks at the worker and at the cancel latch.
PROGRESS_POLL_S = 0.05


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
    from runforge_runner import artifacts, evaluation, fitting

    split = fitting.split_dataset(dataset, plan.seed)
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
    # Imports the family's estimator and standardizes the features: before train_started,
    # so that the first progress event follows it within a second.
    work.fit = fitting.start_fit(plan, split)
    session.checkpoint()
    session.emit("train_started", model_family=plan.model_family)
    fit_started = time.monotonic()
    watch = _watch_fit(session, fitting.FitWorker(work.fit))
    work.model = work.fit.model()
    fit_seconds = time.monotonic() - fit_started
    session.log(_outcome_line(plan, work.fit))
    session.log(
        f"progress: {watch.events} train_progress events; their numbers took "
        f"{watch.cost_s:.3f} s of CPU, {100 * watch.cost_s / max(fit_seconds, 1e-9):.1f}% of "
        f"the {fit_seconds:.3f} s fit"
    )
    session.emit("train_finished", duration_seconds=round(fit_seconds, 3))
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


@dataclass
class ProgressWatch:
    """What reporting progress cost: events emitted and seconds spent on their numbers."""

    events: int = 0
    cost_s: float = 0.0


def _watch_fit(session: TrainerSession, worker: Any) -> ProgressWatch:
    """Run the fit in its worker; meanwhile act on a cancel at once and report progress by
    the clock: an event when the fit moved and PROGRESS_MIN_INTERVAL_S passed, and at
    least one every PROGRESS_MAX_INTERVAL_S; a last one with the final numbers."""
    fit = worker.fit
    watch = ProgressWatch()
    worker.start()
    last_emitted = time.monotonic()
    last_done = 0
    try:
        while not worker.finished.wait(PROGRESS_POLL_S):
            session.checkpoint()
            now = time.monotonic()
            snapshot = fit.snapshot
            since = now - last_emitted
            if (snapshot.done != last_done and since >= PROGRESS_MIN_INTERVAL_S) or (
                since >= PROGRESS_MAX_INTERVAL_S
            ):
                _emit_progress(session, fit, snapshot, watch)
                last_emitted, last_done = now, snapshot.done
        session.checkpoint()
    except RunCancelled:
        fit.stop()
        raise
    if worker.error is not None:
        error = worker.error
        if isinstance(error, (ValueError, ArithmeticError)):
            # scikit-learn's way of saying the data cannot be fitted (e.g. overflow).
            raise TrainerError(
                ERROR_TRAINING_FAILED,
                f"{fit.family} training failed after {fit.snapshot.done}/{fit.total}: {error}",
            ) from error
        raise error
    _emit_progress(session, fit, fit.snapshot, watch)
    return watch


def _emit_progress(session: TrainerSession, fit: Any, snapshot: Any, watch: ProgressWatch) -> None:
    # CPU time of this thread: what the numbers cost, not how long the worker kept the
    # core busy meanwhile.
    started = time.thread_time()
    val_accuracy, loss = fit.measure(snapshot)
    watch.cost_s += time.thread_time() - started
    watch.events += 1
    fields: dict[str, Any] = {"epoch": snapshot.done, "total_epochs": fit.total}
    if val_accuracy is not None:
        fields["val_accuracy"] = val_accuracy
    if loss is not None and math.isfinite(loss):
        fields["loss"] = loss
    session.emit("train_progress", **fields)


def _outcome_line(plan: TrainingPlan, fit: Any) -> str:
    """One log line saying how the fit ended (also readable from the last progress event:
    ``epoch < total_epochs`` means the model converged before ``max_iter``)."""
    outcome = fit.outcome
    if outcome.converged is None:
        return f"{plan.model_family}: grew {outcome.done} trees"
    tol = plan.value("tol")
    if outcome.converged:
        return (
            f"{plan.model_family}: converged after {outcome.done} iterations "
            f"(tol {tol}, max_iter {outcome.total})"
        )
    return (
        f"{plan.model_family}: reached max_iter={outcome.total} before converging (tol {tol}); "
        "raise max_iter or tol if the metrics look unsettled"
    )


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
