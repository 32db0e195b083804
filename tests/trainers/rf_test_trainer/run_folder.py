"""One run as the test trainer sees it: its folder, its stderr events, the files it writes."""

from __future__ import annotations

import datetime
import json
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any

from rf_test_trainer.baseline import Dataset, fit, load_dataset, metrics_v1
from runforge_contract.atomicio import write_bytes_atomic, write_json_atomic

MARKER_NAME = ".cancelled"
# The contract's cancelling event caps seconds_remaining at 60.
MAX_SECONDS_REMAINING = 60
EXIT_CANCELLED = 143


def utc_now() -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2025-01-02T03:04:05.678901Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_stderr(data: bytes) -> None:
    """Write all of ``data`` to fd 2; a reader that went away silences the trainer."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view) :]
    except BrokenPipeError:
        pass


class RunFolder:
    """The run folder given by ``--out``, and the phase the run is in (the cancel step)."""

    def __init__(self, out: str, preset: str, model_family: str) -> None:
        self.path = Path(out).absolute()
        self.path.mkdir(parents=True, exist_ok=True)
        self.run_id = self.path.name
        self.run_dir = os.path.relpath(self.path, Path.cwd()).replace(os.sep, "/")
        self.preset = preset
        self.model_family = model_family
        self.created_at = utc_now()
        self.step = "dataset_loading"
        self.dataset: Dataset | None = None
        self.metrics: dict[str, Any] = {}
        self.train_started: float | None = None  # time.monotonic()
        self.written: list[str] = []  # artifact names inside the run folder, in write order

    def emit(self, event: str, **fields: Any) -> None:
        line = {"event": event, "timestamp": utc_now(), "run_id": self.run_id, **fields}
        write_stderr(json.dumps(line).encode() + b"\n")

    def log(self, text: str) -> None:
        """A free-form stderr line (not an event)."""
        write_stderr(f"rf_test_trainer: {text}\n".encode())

    def write_pid(self) -> None:
        write_bytes_atomic(self.path / "trainer.pid", f"{os.getpid()}\n".encode())

    def write_artifact(self, name: str, data: bytes) -> None:
        write_bytes_atomic(self.path / name, data)
        if name not in self.written:
            self.written.append(name)

    def announce(self) -> None:
        self.emit(
            "run_start", preset_id=self.preset, model_family=self.model_family, out_dir=self.run_dir
        )

    def load(self) -> Dataset:
        self.step = "dataset_loading"
        self.dataset = dataset = load_dataset()
        self.emit(
            "dataset_loaded",
            num_samples=len(dataset.labels),
            num_features=dataset.num_features,
            rows_dropped=dataset.rows_dropped,
            label_column=dataset.label_column,
            dataset_fingerprint_sha256=dataset.fingerprint_sha256,
        )
        return dataset

    def start_training(self) -> None:
        self.step = "training"
        self.train_started = time.monotonic()
        self.emit("train_started", model_family=self.model_family)

    def progress(self, epoch: int, total_epochs: int) -> None:
        self.emit("train_progress", epoch=epoch, total_epochs=total_epochs, loss=1.0 / (epoch + 1))

    def train(self, steps: int, step_s: float) -> None:
        """train_started, then one train_progress every ``step_s`` seconds."""
        self.start_training()
        for epoch in range(steps):
            time.sleep(step_s)
            self.progress(epoch, steps)

    def compute_metrics(self) -> None:
        """train_finished, metrics.json and metrics.v1.json, metrics_computed."""
        started = self.train_started if self.train_started is not None else time.monotonic()
        self.emit("train_finished", duration_seconds=time.monotonic() - started)
        self.step = "metrics_computation"
        dataset = self.dataset if self.dataset is not None else self.load()
        self.metrics = metrics_v1(fit(dataset), dataset)
        summary = {
            "accuracy": self.metrics["accuracy"],
            "num_samples": len(dataset.labels),
            "num_features": dataset.num_features,
        }
        self.write_artifact("metrics.json", _json_bytes(summary))
        self.write_artifact("metrics.v1.json", _json_bytes(self.metrics))
        self.emit(
            "metrics_computed",
            metrics_profile=self.metrics["metrics_profile"],
            accuracy=self.metrics["accuracy"],
        )

    def run_json(self) -> dict[str, Any]:
        """run.json (run schema v0.3.6) for this run, once its metrics are computed."""
        dataset = self.dataset if self.dataset is not None else self.load()
        return {
            "run_id": self.run_id,
            "runforge_version": "rf_test_trainer",
            "schema_version": "run.v0.3.6",
            "created_at": self.created_at,
            "dataset": {"path": dataset.path, "fingerprint_sha256": dataset.fingerprint_sha256},
            "label_column": dataset.label_column,
            "model_family": self.model_family,
            "num_samples": len(dataset.labels),
            "num_features": dataset.num_features,
            "dropped_rows_missing_values": dataset.rows_dropped,
            "metrics": {
                "accuracy": self.metrics["accuracy"],
                "num_samples": len(dataset.labels),
                "num_features": dataset.num_features,
            },
            "metrics_v1": {
                "schema_version": "metrics.v1",
                "metrics_profile": self.metrics["metrics_profile"],
                "artifact_path": "metrics.v1.json",
            },
            "artifacts": {"model_pkl": "model.pkl", "metrics_v1_json": "metrics.v1.json"},
        }

    def write_artifacts(self) -> None:
        """model.pkl, then run.json, then artifacts_written: the run is complete after it."""
        self.step = "artifact_writing"
        dataset = self.dataset if self.dataset is not None else self.load()
        self.write_artifact("model.pkl", pickle.dumps(fit(dataset).__dict__))
        self.write_artifact("run.json", _json_bytes(self.run_json()))
        self.emit("artifacts_written", artifact_count=len(self.written), run_dir=self.run_dir)
        self.step = "shutdown"

    def complete(self, steps: int, step_s: float) -> None:
        """Everything after dataset loading."""
        self.train(steps, step_s)
        self.compute_metrics()
        self.write_artifacts()

    def cancel_gracefully(self, flush_s: float, marker_fails: bool = False) -> int:
        """The contract's graceful cancel: countdown while flushing, partial checkpoint,
        ``.cancelled`` marker, ``run_cancelled``. Returns the exit status."""
        step = self.step
        deadline = time.monotonic() + flush_s
        left = flush_s
        self.emit("cancelling", seconds_remaining=_whole_seconds(left), step=step)
        while left > 0:
            time.sleep(min(1.0, left))
            left = deadline - time.monotonic()
            if left > 0:
                self.emit("cancelling", seconds_remaining=_whole_seconds(left), step=step)
        checkpoint = {"run_id": self.run_id, "step": step}
        self.write_artifact("checkpoint.partial.json", _json_bytes(checkpoint))
        marker = {
            "schema_version": "cancelled.v1.0.0",
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "cancelled_at": utc_now(),
            "step": step,
            "reason": "SIGTERM",
            "partial_artifacts": [f"{self.run_dir}/{name}" for name in self.written],
        }
        if marker_fails:
            # Something occupies the marker's name, so the atomic rename onto it fails.
            (self.path / MARKER_NAME).mkdir(exist_ok=True)
        try:
            write_json_atomic(self.path / MARKER_NAME, marker)
        except OSError as error:
            self.log(f"could not write {MARKER_NAME}: {error}")
        self.emit("run_cancelled", step=step, reason="SIGTERM", graceful=True)
        return EXIT_CANCELLED


def _whole_seconds(left: float) -> int:
    return min(MAX_SECONDS_REMAINING, max(0, math.ceil(left)))


def _json_bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()
