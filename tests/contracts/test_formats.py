"""Our description of RunForge's formats is sound, and the daemon reads what RunForge writes.

Every other test validates what our code writes against these schemas. Here the other
direction: files shaped the way RunForge writes them (every index form, markers, a
run.json with a profile) validate against the same schemas and are read by the daemon.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from runforged.index import RunIndex
from runforged.index_entry import build_index_entry
from runforged.run_folder import read_cancelled_marker
from tests.contracts import IRIS_SAMPLE, load_schema, schema_names, validate
from tests.index.runfolders import run_json_document

USED_BY_TESTS = {
    "cancelled.v1.0.0",
    "events.v1",
    "feature_importance.v1",
    "index-orphan.v1.0.0",
    "index.bare-array",
    "index.v0.2.2.1",
    "index.v1.0.0",
    "inspect.v0.2.2.1",
    "interpretability.index.v1",
    "linear_coefficients.v1",
    "metrics.v1",
    "pipeline.inspect.v0.2.2.2",
    "run.v0.3.6",
}
SHA = "c0ffee" + "0" * 58
OLD_ENTRY = {
    "run_id": "20240105-093000-1f2e3d4c",
    "created_at": "2024-01-05T09:30:00Z",
    "dataset_fingerprint_sha256": SHA,
    "label_column": "label",
    "run_dir": ".ml/runs/20240105-093000-1f2e3d4c",
    "model_pkl": ".ml/runs/20240105-093000-1f2e3d4c/model.pkl",
}
CURRENT_ENTRY = {
    "run_id": "20240301-101500-9a8b7c6d",
    "created_at": "2024-03-01T10:15:00+00:00",
    "name": "baseline",
    "preset_id": "std-train",
    "status": "succeeded",
    "summary": {"duration_ms": 1834, "final_metrics": {"accuracy": 0.94}, "device": "cpu"},
    "run_dir": ".ml/runs/20240301-101500-9a8b7c6d",
    "dataset_fingerprint_sha256": SHA,
    "label_column": "label",
    "model_pkl": ".ml/runs/20240301-101500-9a8b7c6d/model.pkl",
}


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert set(schema_names()) == USED_BY_TESTS
    for name in schema_names():
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("form", "document"),
    [
        ("index.v1.0.0", {"schema_version": "1.0.0", "runs": [CURRENT_ENTRY]}),
        ("index.v0.2.2.1", {"schema_version": "0.2.2.1", "runs": [OLD_ENTRY]}),
        ("index.bare-array", [OLD_ENTRY, CURRENT_ENTRY]),
    ],
)
def test_each_index_form_runforge_writes_is_valid_and_read_entry_for_entry(
    tmp_path: Path, form: str, document: Any
) -> None:
    validate(form, document)
    (tmp_path / ".ml" / "outputs").mkdir(parents=True)
    (tmp_path / ".ml" / "outputs" / "index.json").write_text(json.dumps(document))
    index = RunIndex(tmp_path)
    index.load()
    runs = document if isinstance(document, list) else document["runs"]
    assert [entry.run_id for entry in index.entries()] == [run["run_id"] for run in runs]
    assert index.take_corrupt_kept_as() == []


@pytest.mark.parametrize(
    ("form", "document"),
    [
        ("index.v1.0.0", {"schema_version": "1.0.0", "runs": [OLD_ENTRY]}),
        ("index.v1.0.0", {"schema_version": "1.0.0", "runs": [{**CURRENT_ENTRY, "x": 1}]}),
        ("index.v0.2.2.1", {"schema_version": "1.0.0", "runs": [OLD_ENTRY]}),
        ("index.bare-array", {"runs": []}),
        ("cancelled.v1.0.0", {"schema_version": "cancelled.v1.0.0", "run_id": "a/b"}),
        ("events.v1", {"event": "train_progress", "timestamp": "2024-01-01T00:00:00Z"}),
    ],
)
def test_the_schemas_reject_what_runforge_would_not_read(form: str, document: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(form, document)


def test_a_run_json_with_a_profile_needs_all_three_profile_fields() -> None:
    run = run_json_document("20240301-101500-9a8b7c6d", "2024-03-01T10:15:00Z")
    profiled = {
        **run,
        "profile_name": "fast",
        "profile_version": "1",
        "expanded_parameters_hash": SHA,
    }
    validate("run.v0.3.6", profiled)
    for missing in ("profile_version", "expanded_parameters_hash"):
        incomplete = copy.deepcopy(profiled)
        del incomplete[missing]
        with pytest.raises(jsonschema.ValidationError):
            validate("run.v0.3.6", incomplete)


def test_a_run_folder_runforge_wrote_becomes_an_index_entry_from_its_run_json(
    tmp_path: Path,
) -> None:
    run_id = "20240301-101500-9a8b7c6d"
    run_dir = tmp_path / ".ml" / "runs" / run_id
    run_dir.mkdir(parents=True)
    document = run_json_document(run_id, "2024-03-01T10:15:00Z", accuracy=0.9)
    validate("run.v0.3.6", document)
    (run_dir / "run.json").write_text(json.dumps(document))
    (run_dir / "model.pkl").write_bytes(b"pickle")
    entry = build_index_entry(tmp_path, run_dir)
    validate("index.v1.0.0", {"schema_version": "1.0.0", "runs": [msgspec.to_builtins(entry)]})
    assert (entry.run_id, entry.label_column) == (run_id, "label")
    assert entry.model_pkl == f".ml/runs/{run_id}/model.pkl"


def test_a_cancelled_marker_runforge_wrote_is_read(tmp_path: Path) -> None:
    # RunForge writes partial_artifacts relative to the run folder: read as written.
    marker = {
        "schema_version": "cancelled.v1.0.0",
        "run_id": "20240301-101500-9a8b7c6d",
        "run_dir": ".ml/runs/20240301-101500-9a8b7c6d",
        "cancelled_at": "2024-03-01T10:16:02.5Z",
        "step": "artifact_writing",
        "reason": "user cancelled via VS Code progress UI",
        "partial_artifacts": ["model.pkl"],
    }
    validate("cancelled.v1.0.0", marker)
    (tmp_path / ".cancelled").write_text(json.dumps(marker))
    read = read_cancelled_marker(tmp_path)
    assert read is not None
    assert (read.step, read.partial_artifacts) == ("artifact_writing", ["model.pkl"])


def test_the_sample_csv_is_iris_shaped() -> None:
    header, *rows = IRIS_SAMPLE.read_text(encoding="utf-8").splitlines()
    assert header.split(",")[-1] == "label"
    assert len(rows) == 51 and {row.rsplit(",", 1)[1] for row in rows} == {"0", "1", "2"}
