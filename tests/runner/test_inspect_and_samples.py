"""inspect, inspect-artifact and sample-data print one JSON document, valid where a
contract schema exists; their failures are one line and an exit code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runforge_contract.sample_data import LARGE_NAME, SMALL_NAME, iris_like_csv
from runforge_runner.contract import EXIT_BAD_DATA, EXIT_USAGE
from tests.contracts import validate
from tests.runner.conftest import SMALL_DATASET, Workspace


def test_inspect_describes_a_dataset(workspace: Workspace) -> None:
    result = workspace.run(["inspect", "--dataset", str(SMALL_DATASET)])
    assert result.returncode == 0
    document = json.loads(result.stdout)
    validate("inspect.v0.2.2.1", document)
    assert document["columns"][-1] == "label" and document["label_present"] is True
    assert document["num_rows"] == 150 and document["num_features_excluding_label"] == 4
    assert document["fingerprint_sha256"] == hashlib.sha256(SMALL_DATASET.read_bytes()).hexdigest()


def test_inspect_reports_a_missing_label_without_failing(workspace: Workspace) -> None:
    result = workspace.run(["inspect", "--dataset", str(SMALL_DATASET), "--label", "species"])
    document = json.loads(result.stdout)
    validate("inspect.v0.2.2.1", document)
    assert document["label_present"] is False and document["num_features_excluding_label"] == 5


def test_inspect_of_a_malformed_file_is_one_line_and_exit_3(
    workspace: Workspace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a;b;label\n1;2;0\n")
    result = workspace.run(["inspect", "--dataset", str(bad)])
    assert result.returncode == EXIT_BAD_DATA and result.stdout == ""
    assert result.logs == [
        f"runforge_runner: error: dataset {bad} is separated by semicolons, "
        "not commas; save it as comma-separated CSV"
    ]


def test_inspect_artifact_describes_a_trained_pipeline(workspace: Workspace) -> None:
    trained = workspace.run(workspace.train_args("for-inspect", "--param", "max_iter=2"))
    assert trained.returncode == 0
    result = workspace.run(["inspect-artifact", "--artifact", ".ml/runs/for-inspect/model.pkl"])
    assert result.returncode == 0
    document = json.loads(result.stdout)
    validate("pipeline.inspect.v0.2.2.2", document)
    assert document["artifact_path"] == ".ml/runs/for-inspect/model.pkl"
    assert [step["name"] for step in document["pipeline_steps"]] == ["scaler", "classifier"]
    assert document["pipeline_steps"][1]["type"] == "LogisticRegression"
    assert document["has_preprocessing"] is True and document["step_count"] == 2


def test_inspect_artifact_refuses_what_is_not_a_model(workspace: Workspace) -> None:
    junk = workspace.root / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    result = workspace.run(["inspect-artifact", "--artifact", "junk.pkl"])
    assert result.returncode == EXIT_BAD_DATA
    assert "not a loadable model pickle" in result.logs[-1]
    missing = workspace.run(["inspect-artifact", "--artifact", "nope.pkl"])
    assert missing.returncode == EXIT_USAGE and "does not exist" in missing.logs[-1]


def test_sample_data_writes_both_bundled_datasets(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    result = workspace.run(["sample-data", "--out", str(out)])
    assert result.returncode == 0
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert set(files) == {SMALL_NAME, LARGE_NAME}
    assert files[SMALL_NAME]["rows"] == 150 and files[LARGE_NAME]["rows"] == 40_000
    for name, entry in files.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]
    assert (out / SMALL_NAME).read_bytes() == SMALL_DATASET.read_bytes()


def test_the_bundled_small_dataset_is_what_the_generator_makes() -> None:
    assert SMALL_DATASET.read_bytes() == iris_like_csv()


def test_the_large_dataset_is_the_same_bytes_every_time(large_dataset: Path) -> None:
    # Fixed fingerprint: generated from random.Random.random, stable across Python versions.
    assert (
        hashlib.sha256(large_dataset.read_bytes()).hexdigest()
        == "9f70190a533ffd6dc1070e7777242216a711b934caa6add233cc6943bd8a410e"
    )
