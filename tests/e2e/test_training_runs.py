"""Training real models through the daemon, and browsing them with every observability
command: the real runforged, the real runforgectl, the bundled runner on the bundled
small sample, and the files left on disk."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.contracts import validate, validate_file
from tests.e2e.conftest import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    FAMILIES,
    LINEAR_FAMILIES,
    error_of,
    events_on_disk,
    index_path,
    read_json,
    run_dir,
    start_detached,
    wait_result,
)
from tests.harness import DaemonProcess, wait_for

RUN_FILES = ("run.json", "events.jsonl", "logs.txt", "request.json", "result.json", "model.pkl")


def numeric_top_level(document: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in document.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def markdown_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under ``## heading``."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def assert_summary_has_metrics_and_interpretability(
    markdown: str, folder: Path, family: str
) -> None:
    """run-summary.md shows the metrics as written, and the model's own explanation:
    every class's coefficients for a linear model, the importances for a forest."""
    metrics = read_json(folder / "metrics.v1.json")
    metric_rows = dict(markdown_rows(markdown, "Metrics"))
    assert metric_rows["accuracy"] == f"{metrics['accuracy']:.4f}"
    assert metric_rows["num_classes"] == str(metrics["num_classes"])
    if family in LINEAR_FAMILIES:
        document = read_json(folder / "linear_coefficients.v1.json")
        expected = [
            [str(group["class"]), f["name"], f"{f['coefficient']:.4f}"]
            for group in document["coefficients_by_class"]
            for f in group["features"]
        ]
        assert markdown_rows(markdown, "Coefficients") == expected
    else:
        document = read_json(folder / "feature_importance.v1.json")
        expected = [
            [f["name"], f"{f['importance']:.4f}"] for f in document["features_by_importance"]
        ]
        assert markdown_rows(markdown, "Feature importance") == expected


def train_following(daemon: DaemonProcess, workspace: Path, *args: str) -> tuple[str, str]:
    """``runforgectl train`` (following to the end): (run id, its human output)."""
    result = daemon.ctl("train", "--workspace", str(workspace), *args, timeout=300)
    assert result.returncode == EXIT_OK, (result.stdout, result.stderr)
    run_id = result.stdout.splitlines()[0].split()[0]
    return run_id, result.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_to_completion_and_is_indexed_with_real_values(
    daemon: DaemonProcess, sample_workspace: Path, family: str
) -> None:
    run_id, shown = train_following(daemon, sample_workspace, "--model", family)

    # The followed run: progress, then the summary.
    assert f"run {run_id}: {family}" in shown
    assert "elapsed" in shown
    if family in LINEAR_FAMILIES:
        # max_iter is a ceiling: iterations, no "N/1000" bar; at the end, how it ended.
        assert "iteration " in shown and re.search(r"step \d+/\d+", shown) is None
        assert "converged after " in shown or "stopped at max_iter" in shown
    else:
        assert "step " in shown
    assert shown.index("training finished") < shown.index(f"run {run_id}: completed")
    assert any(line.split() == ["state", "completed"] for line in shown.splitlines())

    folder = run_dir(sample_workspace, run_id)
    for name in RUN_FILES:
        assert (folder / name).is_file(), name
    result = read_json(folder / "result.json")
    assert result["state"] == "completed"
    assert result["exit_code"] == 0
    assert result["index_status"] == "indexed"
    request = read_json(folder / "request.json")
    assert request["run_id"] == run_id
    assert request["model"] == family
    assert request["profile"] == "fast"
    run_json = validate_file("run.v0.3.6", folder / "run.json")
    assert run_json["run_id"] == run_id
    assert run_json["model_family"] == family
    assert (folder / "logs.txt").stat().st_size >= 0

    # The index: the daemon's entry, from real values only.
    index = read_json(index_path(sample_workspace))
    validate("index.v1.0.0", index)
    [entry] = index["runs"]
    assert entry["run_id"] == run_id
    assert entry["status"] == "succeeded"
    assert entry["run_dir"] == f".ml/runs/{run_id}"
    assert entry["created_at"] == run_json["created_at"]
    assert entry["preset_id"] == "std-train"
    assert entry["dataset_fingerprint_sha256"] == run_json["dataset"]["fingerprint_sha256"]
    assert entry["label_column"] == run_json["label_column"]
    assert (sample_workspace / entry["model_pkl"]).is_file()
    assert entry["summary"]["duration_ms"] == result["duration_ms"] > 0
    assert entry["summary"]["device"] == "cpu"
    assert entry["summary"]["final_metrics"] == numeric_top_level(
        read_json(folder / "metrics.json")
    )
    assert 0.0 < entry["summary"]["final_metrics"]["accuracy"] <= 1.0

    # Events persisted in order, ending with the daemon's terminal event.
    events = events_on_disk(sample_workspace, run_id)
    assert [e["run_seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "run_queued"
    assert types.index("run_spawned") < types.index("run_start") < types.index("artifacts_written")
    assert types[-2:] == ["index_updated", "run_terminal"]

    # runs: human and --json.
    listed = daemon.ctl("runs", "--workspace", str(sample_workspace), check=True).stdout
    [row] = [line for line in listed.splitlines() if line.startswith(run_id)]
    assert "completed" in row
    runs = daemon.ctl_json("runs", "--workspace", str(sample_workspace))
    assert runs["orphans"] == []
    [summary] = runs["runs"]
    assert summary["run_id"] == run_id
    assert summary["state"] == "completed" and summary["index_status"] == "indexed"
    assert summary["final_metrics"] == entry["summary"]["final_metrics"]

    # show and metrics (by id here; "latest" has its own test).
    shown_json = daemon.ctl_json("show", run_id, "--workspace", str(sample_workspace))
    assert shown_json["run_id"] == run_id
    assert shown_json["document"] == run_json
    assert f"run {run_id} (" in daemon.ctl("show", run_id, "-w", str(sample_workspace)).stdout
    metrics = daemon.ctl_json("metrics", run_id, "--workspace", str(sample_workspace))
    validate("metrics.v1", metrics["document"])
    assert metrics["document"] == read_json(folder / "metrics.v1.json")
    metrics_text = daemon.ctl("metrics", run_id, "-w", str(sample_workspace), check=True).stdout
    assert "accuracy" in metrics_text

    # Interpretability: what each family has, and a structured error for what it has not.
    if family in LINEAR_FAMILIES:
        present, absent = "coefficients", "feature-importance"
        schema = "linear_coefficients.v1"
    else:
        present, absent = "feature-importance", "coefficients"
        schema = "feature_importance.v1"
    document = daemon.ctl_json(present, "--workspace", str(sample_workspace))
    assert document["run_id"] == run_id
    validate(schema, document["document"])
    assert daemon.ctl(present, "-w", str(sample_workspace), check=True).stdout.strip()
    missing = error_of(daemon.ctl(absent, "--workspace", str(sample_workspace), "--json"))
    assert missing["code"] == "ARTIFACT_NOT_FOUND"
    interpretability = daemon.ctl_json("interpretability", "--workspace", str(sample_workspace))
    validate("interpretability.index.v1", interpretability["document"])
    assert interpretability["document"]["run_id"] == run_id

    # inspect-artifact of the model it wrote.
    model = str(folder / "model.pkl")
    pipeline = daemon.ctl_json("inspect-artifact", model, "--workspace", str(sample_workspace))
    validate("pipeline.inspect.v0.2.2.2", pipeline["document"])
    assert daemon.ctl("inspect-artifact", model, "-w", str(sample_workspace), check=True).stdout

    # export-md writes run-summary.md into the run folder.
    exported = daemon.ctl_json("export-md", "--workspace", str(sample_workspace))
    summary_md = folder / "run-summary.md"
    assert exported["path"] == f".ml/runs/{run_id}/run-summary.md"
    assert summary_md.read_text() == exported["markdown"]
    assert run_id in exported["markdown"]
    assert_summary_has_metrics_and_interpretability(exported["markdown"], folder, family)
    again = daemon.ctl("export-md", "--workspace", str(sample_workspace), check=True).stdout
    assert f"wrote .ml/runs/{run_id}/run-summary.md" in again

    # Nothing is active any more.
    assert daemon.ctl_json("active", "--workspace", str(sample_workspace))["runs"] == []
    assert "no active runs" in daemon.ctl("active", check=True).stdout


def test_latest_is_the_newest_index_entry_for_show_and_metrics(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    first = start_detached(daemon, sample_workspace)
    assert wait_result(sample_workspace, first)["state"] == "completed"
    second = start_detached(daemon, sample_workspace, "--model", "random_forest")
    assert wait_result(sample_workspace, second)["state"] == "completed"
    # A later run that fails is not "latest": latest means the newest index entry.
    broken = sample_workspace / "data" / "broken.csv"
    broken.write_text("a,b\n1,2\n")
    failed = daemon.ctl("train", "-w", str(sample_workspace), "--dataset", str(broken))
    assert failed.returncode == EXIT_RUN_FAILED, (failed.stdout, failed.stderr)

    for command in ("show", "metrics"):
        latest = daemon.ctl_json(command, "--workspace", str(sample_workspace))
        assert latest["run_id"] == second, command
        assert f"run {second} (" in daemon.ctl(command, "-w", str(sample_workspace)).stdout
    assert daemon.ctl_json("feature-importance", "-w", str(sample_workspace))["run_id"] == second
    assert daemon.ctl_json("show", first, "-w", str(sample_workspace))["run_id"] == first

    # runs: newest first, the failed run visible and marked with its reason.
    runs = daemon.ctl_json("runs", "--workspace", str(sample_workspace))["runs"]
    assert [r["state"] for r in runs] == ["failed", "completed", "completed"]
    assert [r["run_id"] for r in runs][1:] == [second, first]
    assert runs[0]["reason"]
    listed = daemon.ctl("runs", "--workspace", str(sample_workspace)).stdout
    assert "failed" in listed and listed.index(second) < listed.index(first)


def test_latest_on_a_workspace_without_runs_is_no_runs(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    for command in ("show", "metrics", "export-md", "coefficients", "interpretability"):
        error = error_of(daemon.ctl(command, "--workspace", str(sample_workspace), "--json"))
        assert error["code"] == "NO_RUNS", command
        assert error["remediation"]
        human = daemon.ctl(command, "--workspace", str(sample_workspace))
        assert human.returncode == 1 and "NO_RUNS" in human.stderr
    runs = daemon.ctl_json("runs", "--workspace", str(sample_workspace))
    assert runs["runs"] == [] and runs["orphans"] == []
    assert "no runs in" in daemon.ctl("runs", "-w", str(sample_workspace)).stdout


def test_inspect_dataset_describes_the_sample_in_both_outputs(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    csv = str(sample_workspace / "data" / "iris_like.csv")
    inspected = daemon.ctl_json("inspect-dataset", csv, "--workspace", str(sample_workspace))
    document = inspected["document"]
    validate("inspect.v0.2.2.1", document)
    assert document["num_rows"] == 150
    assert document["label_present"] is True
    assert document["num_features_excluding_label"] == 4
    human = daemon.ctl("inspect-dataset", csv, "-w", str(sample_workspace), check=True).stdout
    assert "num_rows" in human and "150" in human


def test_sample_data_then_train_is_the_main_job(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    """The README's main job: sample data into a trusted workspace, then train on it."""
    written = daemon.ctl_json("sample-data", str(sample_workspace / "samples"))["written"]
    small = next(p for p in written if p.endswith("iris_like.csv"))
    run_id, shown = train_following(daemon, sample_workspace, "--dataset", small)
    assert f"run {run_id}: completed" in shown
    assert daemon.ctl_json("show", "-w", str(sample_workspace))["run_id"] == run_id


def test_feature_importance_is_shown_as_a_ranked_feature_table(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    run_id = start_detached(daemon, sample_workspace, "--model", "random_forest")
    assert wait_result(sample_workspace, run_id)["state"] == "completed"
    lines = daemon.ctl("feature-importance", "-w", str(sample_workspace), check=True).stdout
    header, _rule, *rows = lines.splitlines()[1:]
    assert header.split() == ["feature", "value"]
    document = read_json(run_dir(sample_workspace, run_id) / "feature_importance.v1.json")
    assert [row.split()[0] for row in rows] == [
        f["name"] for f in document["features_by_importance"]
    ]


def test_a_linear_svc_cancelled_inside_liblinear_ends_cancelled_graceful(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    """liblinear fits in one C call that cannot be interrupted; a cancel during it still
    takes the runner's graceful path (its SIGTERM handler, its main thread watching the
    latch while the worker is inside liblinear): marker, run_cancelled, no SIGKILL."""
    # 150,000 rows, four classes, a large C and a tiny tol: several seconds in liblinear.
    generator = np.random.default_rng(7)
    x = generator.normal(size=(150_000, 20))
    y = (x[:, :4].sum(axis=1) + generator.normal(size=len(x)) > 0).astype(int)
    y += 2 * (x[:, 5] > 0)
    header = ",".join([f"f{i}" for i in range(20)] + ["label"])
    dataset = sample_workspace / "data" / "svc.csv"
    np.savetxt(dataset, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt=["%.5f"] * 20 + ["%d"])  # fmt: skip
    reply = daemon.ctl_json(
        "train", "--workspace", str(sample_workspace), "--detach", "--dataset", str(dataset),
        "--model", "linear_svc",
        "--param", "C=10000", "--param", "tol=1e-12", "--param", "max_iter=1000000",
    )  # fmt: skip
    assert "run" in reply, reply
    run_id: str = reply["run"]["run_id"]

    def liblinear_reported() -> bool:
        events = events_on_disk(sample_workspace, run_id)
        # epoch >= 1: liblinear has reported a step (the primal solver with its objective
        # as loss; scikit-learn < 1.5 defaults to the dual solver, which reports steps only).
        return any(e["type"] == "train_progress" and e["data"].get("epoch", 0) >= 1 for e in events)

    wait_for(liblinear_reported, timeout=180)
    daemon.ctl("cancel", "--workspace", str(sample_workspace), run_id, timeout=120)
    result = wait_result(sample_workspace, run_id)
    assert result["state"] == "cancelled_graceful", result
    folder = run_dir(sample_workspace, run_id)
    marker = validate_file("cancelled.v1.0.0", folder / ".cancelled")
    assert marker["step"] == "training"
    types = [e["type"] for e in events_on_disk(sample_workspace, run_id)]
    assert "train_finished" not in types and "cancel_escalated" not in types
    assert (
        types.index("cancel_requested") < types.index("cancelling") < types.index("run_cancelled")
    )
