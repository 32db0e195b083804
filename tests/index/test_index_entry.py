"""Index entries are made of what the run folder records, and the orphan marker's format."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from runforge_protocol.errors import ErrorCode
from runforge_protocol.records import RecoverySkipError, RunState
from runforged.errors import RunforgeError
from runforged.index_entry import build_index_entry
from runforged.run_folder import RunFolderError, write_index_orphan_marker
from tests.contracts import validate, validate_file
from tests.index.runfolders import (
    FINGERPRINT,
    completed_run,
    created_at_of,
    finish_training,
    legacy_run,
    result_record,
    run_dir_of,
    run_id_at,
    started_run,
)


def index_document(*entries: msgspec.Struct) -> dict[str, object]:
    return {"schema_version": "1.0.0", "runs": [msgspec.to_builtins(e) for e in entries]}


def test_entry_takes_every_value_from_run_request_and_result_files(tmp_path: Path) -> None:
    run_dir = completed_run(tmp_path, 3)

    entry = build_index_entry(tmp_path, run_dir)

    validate("index.v1.0.0", index_document(entry))
    rel = f".ml/runs/{run_id_at(3)}"
    assert msgspec.to_builtins(entry) == {
        "run_id": run_id_at(3),  # run.json
        "created_at": created_at_of(3),  # run.json
        "name": "run number 3",  # request.json
        "preset_id": "hq-train",  # request.json
        "status": "succeeded",
        "summary": {
            "duration_ms": 7003,  # result.json, measured by the daemon
            "final_metrics": {"accuracy": 0.93, "num_samples": 51, "num_features": 4},
            "device": "cpu",  # result.json
        },
        "run_dir": rel,
        "dataset_fingerprint_sha256": FINGERPRINT,  # run.json
        "label_column": "label",  # run.json
        "model_pkl": f"{rel}/model.pkl",  # run.json artifacts, made workspace-relative
    }


def test_entry_uses_the_outcome_the_daemon_passes_before_result_json_exists(
    tmp_path: Path,
) -> None:
    run_dir = started_run(tmp_path, 4)
    finish_training(run_dir, 4)
    outcome = result_record(run_dir, 4)
    outcome.duration_ms = 4321

    entry = build_index_entry(tmp_path, run_dir, outcome)

    assert not (run_dir / "result.json").exists()
    assert entry.summary is not None and entry.summary.duration_ms == 4321


def test_entry_of_a_run_made_outside_the_daemon_says_what_disk_does_not_record(
    tmp_path: Path,
) -> None:
    """No request.json/result.json: preset and device are the documented values, the
    name falls back to the run id (the schema's rule), the duration is the time from
    created_at to run.json's last write."""
    run_dir = legacy_run(tmp_path, 5)
    created = 1_740_819_600 + 5 * 60  # created_at_of(5) as UNIX seconds
    os.utime(run_dir / "run.json", ns=(0, (created + 42) * 1_000_000_000))

    entry = build_index_entry(tmp_path, run_dir)

    validate("index.v1.0.0", index_document(entry))
    assert entry.name == run_id_at(5)
    assert entry.preset_id == "std-train"
    assert entry.summary is not None
    assert entry.summary.device == "cpu"
    assert entry.summary.duration_ms == 42_000


def test_a_run_the_daemon_classified_failed_is_indexed_as_failed(tmp_path: Path) -> None:
    run_dir = completed_run(tmp_path, 6)

    entry = build_index_entry(tmp_path, run_dir, result_record(run_dir, 6, RunState.FAILED))

    assert entry.status == "failed"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", RecoverySkipError.CORRUPT_RUN_JSON),
        (b'{"run_id": "x"}', RecoverySkipError.CORRUPT_RUN_JSON),
    ],
)
def test_a_run_json_that_cannot_make_an_entry_is_refused(
    tmp_path: Path, content: bytes, error: RecoverySkipError
) -> None:
    run_dir = completed_run(tmp_path, 7)
    (run_dir / "run.json").write_bytes(content)

    with pytest.raises(RunFolderError) as caught:
        build_index_entry(tmp_path, run_dir)

    assert caught.value.error is error
    assert "run.json" in caught.value.message


def test_a_folder_outside_the_runs_folder_is_refused(tmp_path: Path) -> None:
    completed_run(tmp_path, 8)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    with pytest.raises(RunFolderError):
        build_index_entry(tmp_path, elsewhere)


def test_orphan_marker_follows_its_schema_and_names_the_underlying_error(tmp_path: Path) -> None:
    run_dir = completed_run(tmp_path, 9)
    try:
        try:
            os.open(tmp_path / "no-such-dir" / "index.json", os.O_RDONLY)
        except OSError as exc:
            raise RunforgeError(ErrorCode.INDEX_WRITE_FAILED, "index write failed") from exc
    except RunforgeError as failure:
        path = write_index_orphan_marker(tmp_path, run_id_at(9), failure)

    assert path == run_dir / ".index-orphan"
    marker = validate_file("index-orphan.v1.0.0", path)
    assert marker["run_id"] == run_id_at(9)
    assert marker["run_dir"] == f".ml/runs/{run_id_at(9)}"
    assert marker["index_path"] == ".ml/outputs/index.json"
    assert marker["error"]["type"] == "FileNotFoundError"
    assert "No such file or directory" in marker["error"]["message"]
    assert [p.name for p in run_dir.iterdir() if ".tmp" in p.name] == []


def test_orphan_marker_refuses_a_hostile_run_id(tmp_path: Path) -> None:
    with pytest.raises(RunforgeError) as caught:
        write_index_orphan_marker(tmp_path, "../../etc", OSError("disk full"))

    assert caught.value.code is ErrorCode.INVALID_RUN_ID
    assert not run_dir_of(tmp_path, "x").parent.exists()
