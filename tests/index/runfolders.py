"""Run folders as the runner and the daemon leave them, built for the index tests.

A completed run has what the runner writes (``run.json`` per run schema v0.3.6, written
last, plus its artifacts and logs) and what the daemon writes (``request.json`` before
the spawn, ``result.json`` at the end). Cancelled and failed runs have no ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec

from runforge_contract.atomicio import write_bytes_atomic, write_json_atomic
from runforge_protocol.records import IndexErrorInfo, IndexStatus, ResultRecord, RunState
from runforged.disk_formats import RequestRecord

FINGERPRINT = hashlib.sha256(b"sepal_length,sepal_width,label\n5.1,3.5,setosa\n").hexdigest()
BASE_TIME = datetime(2025, 3, 1, 9, 0, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_id_at(n: int) -> str:
    """The n-th run id of a test, in the daemon's one format; ids sort like their times."""
    moment = BASE_TIME + timedelta(minutes=n)
    return f"{moment:%Y%m%d-%H%M%S}-{n:08x}"


def created_at_of(n: int) -> str:
    return iso(BASE_TIME + timedelta(minutes=n))


def run_json_document(run_id: str, created_at: str, *, accuracy: float = 0.93) -> dict[str, Any]:
    """A run.json valid against run schema v0.3.6, as the runner writes it."""
    return {
        "run_id": run_id,
        "runforge_version": "0.1.0",
        "schema_version": "run.v0.3.6",
        "created_at": created_at,
        "dataset": {"path": "/data/iris.csv", "fingerprint_sha256": FINGERPRINT},
        "label_column": "label",
        "model_family": "logistic_regression",
        "num_samples": 51,
        "num_features": 4,
        "dropped_rows_missing_values": 0,
        "metrics": {"accuracy": accuracy, "num_samples": 51, "num_features": 4},
        "metrics_v1": {
            "schema_version": "metrics.v1",
            "metrics_profile": "classification.multiclass.v1",
            "artifact_path": "metrics.v1.json",
        },
        "linear_coefficients_schema_version": "linear_coefficients.v1",
        "linear_coefficients_artifact": "linear_coefficients.v1.json",
        "artifacts": {
            "model_pkl": "model.pkl",
            "metrics_v1_json": "metrics.v1.json",
            "linear_coefficients_json": "linear_coefficients.v1.json",
        },
        "hyperparameters": [{"name": "C", "value": 1.0, "source": "model_default"}],
    }


def run_dir_of(workspace: Path, folder: str) -> Path:
    return workspace / ".ml" / "runs" / folder


def _request(workspace: Path, run_id: str, folder: str, n: int, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "workspace": str(workspace),
        "run_dir": f".ml/runs/{folder}",
        "created_at": created_at_of(n),
        "name": f"run number {n}",
        "preset": "hq-train",
        "model": "logistic_regression",
        "device": "cpu",
        "dataset_path": "/data/iris.csv",
        "python_path": "/usr/bin/python3",
        "runner_module": "runforge_runner",
    }
    values.update(fields)
    return RequestRecord(**values)


def _write_record(path: Path, record: msgspec.Struct) -> None:
    write_bytes_atomic(path, msgspec.json.encode(record))


def started_run(workspace: Path, n: int, *, folder: str | None = None) -> Path:
    """A run the daemon has just spawned: folder, request.json, logs, no result yet."""
    run_id = run_id_at(n)
    folder = folder or run_id
    run_dir = run_dir_of(workspace, folder)
    run_dir.mkdir(parents=True)
    _write_record(run_dir / "request.json", _request(workspace, run_id, folder, n))
    (run_dir / "logs.txt").write_text("loading dataset\n", encoding="utf-8")
    return run_dir


def finish_training(run_dir: Path, n: int, *, run_id: str | None = None) -> None:
    """What the runner leaves when training succeeds: artifacts, then run.json last."""
    (run_dir / "model.pkl").write_bytes(b"\x80\x04 pretend pickle " + str(n).encode())
    write_json_atomic(run_dir / "metrics.v1.json", {"schema_version": "metrics.v1"})
    write_json_atomic(
        run_dir / "run.json", run_json_document(run_id or run_id_at(n), created_at_of(n))
    )


def result_record(run_dir: Path, n: int, state: RunState = RunState.COMPLETED) -> ResultRecord:
    return ResultRecord(
        run_id=run_id_at(n),
        run_dir=f".ml/runs/{run_dir.name}",
        state=state,
        exit_code=0 if state is RunState.COMPLETED else 1,
        started_at=created_at_of(n),
        finished_at=iso(BASE_TIME + timedelta(minutes=n, seconds=7)),
        duration_ms=7000 + n,
        device="cpu",
        final_metrics={"accuracy": 0.93},
        index_status=IndexStatus.INDEXED
        if state is RunState.COMPLETED
        else IndexStatus.NOT_INDEXED,
    )


def completed_run(
    workspace: Path,
    n: int,
    *,
    folder: str | None = None,
    run_id: str | None = None,
    index_error: str | None = None,
) -> Path:
    """A run that completed under the daemon. ``index_error``: its index update failed
    with that message (result.json says orphaned; the caller writes the marker)."""
    run_dir = started_run(workspace, n, folder=folder)
    finish_training(run_dir, n, run_id=run_id)
    result = result_record(run_dir, n)
    if index_error is not None:
        result.index_status = IndexStatus.ORPHANED
        result.index_error = IndexErrorInfo(type="OSError", message=index_error)
    _write_record(run_dir / "result.json", result)
    return run_dir


def legacy_run(workspace: Path, n: int) -> Path:
    """A run written by an older RunForge: run.json and artifacts, no daemon files."""
    run_dir = run_dir_of(workspace, run_id_at(n))
    run_dir.mkdir(parents=True)
    finish_training(run_dir, n)
    return run_dir


def cancelled_run(workspace: Path, n: int, *, graceful: bool = True) -> Path:
    """A cancelled run: the runner's ``.cancelled`` marker when graceful (none when the
    daemon had to SIGKILL it), the daemon's verdict in result.json, no run.json."""
    run_dir = started_run(workspace, n)
    if graceful:
        write_json_atomic(
            run_dir / ".cancelled",
            {
                "schema_version": "cancelled.v1.0.0",
                "run_id": run_id_at(n),
                "run_dir": f".ml/runs/{run_dir.name}",
                "cancelled_at": created_at_of(n),
                "step": "training",
                "partial_artifacts": [],
            },
        )
    state = RunState.CANCELLED_GRACEFUL if graceful else RunState.CANCELLED_FORCED
    _write_record(run_dir / "result.json", result_record(run_dir, n, state))
    return run_dir


def failed_run(workspace: Path, n: int) -> Path:
    """A run whose trainer crashed: no run.json, result.json says failed."""
    run_dir = started_run(workspace, n)
    _write_record(run_dir / "result.json", result_record(run_dir, n, RunState.FAILED))
    return run_dir


def index_path(workspace: Path) -> Path:
    return workspace / ".ml" / "outputs" / "index.json"


def read_index(workspace: Path) -> Any:
    return json.loads(index_path(workspace).read_text(encoding="utf-8"))


def write_index(workspace: Path, document: Any) -> None:
    """An index.json as another writer (an older RunForge) leaves it."""
    path = index_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)


def indexed_ids(workspace: Path) -> list[str]:
    return [entry["run_id"] for entry in read_index(workspace)["runs"]]


def file_states(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime_ns of every file under ``root``, by relative path."""
    states = {}
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath) / filename
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            states[path.relative_to(root).as_posix()] = (digest, path.stat().st_mtime_ns)
    return states
