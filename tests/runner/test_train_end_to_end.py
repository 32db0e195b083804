"""Each model family trained end to end by the real runner; every output checked
against RunForge's contract schemas."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from runforge_contract.trainer_events import SUCCESS_SEQUENCE
from tests.contracts import validate_file
from tests.runner.conftest import (
    SMALL_DATASET,
    RunnerResult,
    Workspace,
    assert_events_valid,
)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> RunnerResult:
    """One run shared by several checks: no profile, at most five iterations, a dataset
    inside the workspace, and ``--device cuda``."""
    workspace = Workspace(tmp_path_factory.mktemp("plain"))
    dataset = workspace.root / "data" / "flowers.csv"
    dataset.parent.mkdir()
    dataset.write_bytes(SMALL_DATASET.read_bytes())
    args = workspace.train_args("plain", "--param", "max_iter=5")
    args[args.index("cpu")] = "cuda"
    return workspace.run(args, dataset=dataset)


SUCCESS_ORDER = list(SUCCESS_SEQUENCE)


def collapse_progress(names: list[str]) -> list[str]:
    """The event sequence with each run of train_progress shown once."""
    collapsed: list[str] = []
    for name in names:
        if not (name == "train_progress" and collapsed and collapsed[-1] == name):
            collapsed.append(name)
    return collapsed


def assert_completed(result: RunnerResult, run_id: str) -> dict[str, Any]:
    assert result.returncode == 0, result.logs + result.names()
    assert_events_valid(result.events)
    assert collapse_progress(result.names()) == SUCCESS_ORDER
    assert {event["run_id"] for event in result.events} == {run_id}
    run = validate_file("run.v0.3.6", result.run_dir / "run.json")
    assert run["run_id"] == run_id
    assert not (result.run_dir / ".cancelled").exists()
    return run


@pytest.mark.parametrize(
    ("family", "interpretability", "schema"),
    [
        (
            "logistic_regression",
            "linear_coefficients.v1.json",
            "linear_coefficients.v1",
        ),
        ("random_forest", "feature_importance.v1.json", "feature_importance.v1"),
        ("linear_svc", "linear_coefficients.v1.json", "linear_coefficients.v1"),
    ],
)
def test_each_family_trains_on_the_bundled_data_with_contract_valid_files_and_events(
    workspace: Workspace, family: str, interpretability: str, schema: str
) -> None:
    run_id = f"20261124-075900-{family[:8]}"
    result = workspace.run(workspace.train_args(run_id, "--model", family, "--profile", "fast"))
    run = assert_completed(result, run_id)

    assert run["model_family"] == family
    assert run["run_id"] == result.run_dir.name
    assert (
        run["dataset"]["fingerprint_sha256"]
        == result.of("dataset_loaded")[0]["dataset_fingerprint_sha256"]
    )
    assert run["label_column"] == "label"
    assert run["num_samples"] == 150 and run["num_features"] == 4
    assert run["artifacts"]["model_pkl"] == "model.pkl"
    metrics = validate_file("metrics.v1", result.run_dir / "metrics.v1.json")
    assert metrics["metrics_profile"] == "classification.multiclass.v1"
    assert metrics["accuracy"] == run["metrics"]["accuracy"]
    assert json.loads((result.run_dir / "metrics.json").read_text()) == run["metrics"]
    validate_file(schema, result.run_dir / interpretability)
    index = validate_file(
        "interpretability.index.v1",
        result.run_dir / "interpretability.index.v1.json",
    )
    assert index["run_id"] == run_id
    for entry in index["available_artifacts"].values():
        assert (result.run_dir / entry["path"]).is_file()

    finished = result.of("artifacts_written")[0]
    assert finished["run_dir"] == f".ml/runs/{run_id}"
    assert finished["artifact_count"] == len([p for p in result.run_dir.iterdir()])

    model = pickle.loads((result.run_dir / "model.pkl").read_bytes())
    assert model.predict([[5.0, 3.4, 1.5, 0.25]]).shape == (1,)

    # Progress by the clock: on 150 rows the fit is over in moments, so the last event
    # (always sent, with the final numbers) may be the only one.
    progress = result.of("train_progress")
    assert progress
    done = [event["epoch"] for event in progress]
    assert done == sorted(done) and done[-1] >= 1
    last = progress[-1]
    if family == "random_forest":
        assert done[-1] == last["total_epochs"]  # every tree grown
    else:
        assert done[-1] < last["total_epochs"]  # converged by tol before max_iter
    assert 0 <= last["val_accuracy"] <= 1
    assert ("loss" in last) == (family != "random_forest")


def test_binary_data_with_probabilities_gets_the_proba_metrics_profile(
    workspace: Workspace, tmp_path: Path
) -> None:
    rows = SMALL_DATASET.read_text().splitlines()
    binary = tmp_path / "binary.csv"
    binary.write_text("\n".join(r for r in rows if not r.endswith(",2")) + "\n")
    result = workspace.run(workspace.train_args("binary", "--profile", "fast"), dataset=binary)
    assert_completed(result, "binary")
    metrics = validate_file("metrics.v1", result.run_dir / "metrics.v1.json")
    assert metrics["metrics_profile"] == "classification.proba.v1"
    coefficients = validate_file(
        "linear_coefficients.v1", result.run_dir / "linear_coefficients.v1.json"
    )
    assert [entry["class"] for entry in coefficients["coefficients_by_class"]] == [1]

    svc = workspace.run(
        workspace.train_args("binary-svc", "--model", "linear_svc", "--profile", "fast"),
        dataset=binary,
    )
    assert_completed(svc, "binary-svc")
    svc_metrics = validate_file("metrics.v1", svc.run_dir / "metrics.v1.json")
    assert svc_metrics["metrics_profile"] == "classification.base.v1"


def test_string_labels_are_kept_as_written(workspace: Workspace, tmp_path: Path) -> None:
    names = {"0": "setosa", "1": "versicolor", "2": "virginica"}
    rows = SMALL_DATASET.read_text().splitlines()
    renamed = [rows[0]] + [r.rsplit(",", 1)[0] + "," + names[r.rsplit(",", 1)[1]] for r in rows[1:]]
    dataset = tmp_path / "named.csv"
    dataset.write_text("\n".join(renamed) + "\n")
    result = workspace.run(
        workspace.train_args("named", "--model", "random_forest", "--profile", "fast"),
        dataset=dataset,
    )
    assert_completed(result, "named")
    metrics = json.loads((result.run_dir / "metrics.v1.json").read_text())
    assert metrics["class_labels"] == ["setosa", "versicolor", "virginica"]


def test_same_data_seed_and_parameters_give_identical_metrics(workspace: Workspace) -> None:
    documents = []
    for run_id in ("first", "second"):
        result = workspace.run(
            workspace.train_args(
                run_id, "--model", "random_forest", "--seed", "7", "--profile", "fast"
            )
        )
        assert result.returncode == 0
        documents.append((result.run_dir / "metrics.v1.json").read_text())
    assert documents[0] == documents[1]


def test_run_json_records_profile_and_hyperparameters_with_their_source(
    workspace: Workspace,
) -> None:
    result = workspace.run(
        workspace.train_args(
            "provenance",
            *("--model", "random_forest", "--profile", "fast"),
            *("--param", "max_depth=4", "--seed", "3"),
        )
    )
    run = assert_completed(result, "provenance")
    assert run["profile_name"] == "fast"
    assert run["profile_version"]
    sources = {p["name"]: (p["value"], p["source"]) for p in run["hyperparameters"]}
    assert sources["max_depth"] == (4, "cli")
    assert sources["n_estimators"] == (25, "profile")
    assert sources["min_samples_leaf"] == (1, "model_default")
    assert sources["random_state"] == (3, "cli")


def test_without_a_profile_run_json_omits_the_profile_fields(plain_run: RunnerResult) -> None:
    run = assert_completed(plain_run, "plain")
    assert "profile_name" not in run and "expanded_parameters_hash" not in run


def test_the_last_progress_event_reports_the_iterations_done(plain_run: RunnerResult) -> None:
    last = plain_run.of("train_progress")[-1]
    assert last["total_epochs"] == 5 and 1 <= last["epoch"] <= 5


def test_dataset_path_and_run_dir_are_workspace_relative(plain_run: RunnerResult) -> None:
    run = json.loads((plain_run.run_dir / "run.json").read_text())
    assert run["dataset"]["path"] == "data/flowers.csv"
    assert plain_run.of("run_start")[0]["out_dir"] == ".ml/runs/plain"


def test_device_cuda_is_accepted_and_trains_on_the_cpu_with_a_note(
    plain_run: RunnerResult,
) -> None:
    assert plain_run.returncode == 0
    assert any("GPU" in line for line in plain_run.logs)


def test_the_runner_never_writes_the_workspace_index(plain_run: RunnerResult) -> None:
    workspace_root = plain_run.run_dir.parents[2]
    assert not (workspace_root / ".ml" / "outputs").exists()
    assert sorted(p.name for p in (workspace_root / ".ml" / "runs").iterdir()) == ["plain"]


def test_run_folder_holds_only_complete_files(plain_run: RunnerResult) -> None:
    for path in plain_run.run_dir.iterdir():
        assert not path.name.startswith("."), f"temp file left behind: {path.name}"
        if path.suffix == ".json":
            json.loads(path.read_text())
