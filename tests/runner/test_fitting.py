"""Training like scikit-learn trains: the runner's models against a plain ``fit()`` of the
same estimator and parameters, convergence by ``tol`` and how it is reported, progress by
the clock with numbers that move, and a cancel that is acted on mid-fit whatever one
iteration or one tree costs.

Every run is the real runner as a subprocess on real CSV files; the plain fits run here,
with scikit-learn directly.
"""

from __future__ import annotations

import datetime
import itertools
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tests.runner.conftest import (
    SMALL_DATASET,
    LiveRunner,
    RunnerResult,
    Workspace,
    assert_events_valid,
)
from tests.runner.test_cancel import assert_cancelled_gracefully

Track = Callable[[LiveRunner], LiveRunner]
SEED = 42


def plain_fit(dataset: Path, family: str, **params: Any) -> tuple[Pipeline, np.ndarray, np.ndarray]:
    """What a scikit-learn user would write: (fitted pipeline, x_val, y_val)."""
    header = dataset.read_text().splitlines()[0].split(",")
    table = np.loadtxt(dataset, delimiter=",", skiprows=1)
    label = header.index("label")
    x, y = np.delete(table, label, axis=1), table[:, label].astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    if family == "random_forest":
        forest = RandomForestClassifier(random_state=SEED, n_jobs=1, **params)
        model = Pipeline([("classifier", forest)])
    elif family == "linear_svc":
        svc = LinearSVC(random_state=SEED, **params)
        model = Pipeline([("scaler", StandardScaler()), ("classifier", svc)])
    else:
        logistic = LogisticRegression(random_state=SEED, **params)
        model = Pipeline([("scaler", StandardScaler()), ("classifier", logistic)])
    return model.fit(x_train, y_train), x_val, y_val


def trained(result: RunnerResult) -> Pipeline:
    assert result.returncode == 0, result.logs
    assert_events_valid(result.events)
    model: Pipeline = pickle.loads((result.run_dir / "model.pkl").read_bytes())
    return model


def accuracy_of(result: RunnerResult) -> float:
    metrics = json.loads((result.run_dir / "metrics.v1.json").read_text())
    return float(metrics["accuracy"])


@pytest.mark.parametrize("data", ["small", "large"])
@pytest.mark.parametrize("family", ["logistic_regression", "linear_svc"])
def test_linear_models_equal_a_plain_fit_of_the_same_estimator(
    workspace: Workspace, large_dataset: Path, family: str, data: str
) -> None:
    dataset = SMALL_DATASET if data == "small" else large_dataset
    result = workspace.run(
        workspace.train_args(f"eq-{family}-{data}", "--model", family), dataset=dataset
    )
    ours = trained(result)
    plain, x_val, y_val = plain_fit(dataset, family, C=1.0, max_iter=1000, tol=1e-4)
    np.testing.assert_allclose(ours[-1].coef_, plain[-1].coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours[-1].intercept_, plain[-1].intercept_, rtol=1e-6, atol=1e-9)
    assert np.array_equal(ours[-1].classes_, plain[-1].classes_)
    assert np.array_equal(ours.predict(x_val), plain.predict(x_val))
    assert accuracy_of(result) == pytest.approx(plain.score(x_val, y_val), abs=1e-12)
    # The fitted model is a plain scikit-learn one: nothing of the runner rides along
    # (liblinear was fitted with verbose=1 to read its progress; the saved model says 0).
    assert not hasattr(ours[-1], "_skl_callbacks")
    assert ours[-1].get_params() == plain[-1].get_params()
    assert result.stdout == ""  # liblinear's progress lines were read, not leaked


@pytest.mark.parametrize("data", ["small", "large"])
def test_the_forest_has_exactly_the_trees_of_a_plain_fit(
    workspace: Workspace, large_dataset: Path, data: str
) -> None:
    dataset = SMALL_DATASET if data == "small" else large_dataset
    trees = 100 if data == "small" else 12
    result = workspace.run(
        workspace.train_args(
            f"eq-forest-{data}", "--model", "random_forest", "--param", f"n_estimators={trees}"
        ),
        dataset=dataset,
    )
    ours = trained(result)
    plain, x_val, y_val = plain_fit(dataset, "random_forest", n_estimators=trees)
    assert len(ours[-1].estimators_) == trees
    assert ours[-1].get_params() == plain[-1].get_params()
    assert np.array_equal(ours[-1].apply(x_val), plain[-1].apply(x_val))
    assert np.array_equal(ours.predict_proba(x_val), plain.predict_proba(x_val))
    assert accuracy_of(result) == pytest.approx(plain.score(x_val, y_val), abs=1e-12)


def test_logistic_regression_stops_when_converged_and_says_so(
    workspace: Workspace, large_dataset: Path
) -> None:
    result = workspace.run(workspace.train_args("converged"), dataset=large_dataset)
    model = trained(result)
    iterations = int(model[-1].n_iter_[0])
    last = result.of("train_progress")[-1]
    assert last["epoch"] == iterations < last["total_epochs"] == 1000
    assert f"logistic_regression: converged after {iterations} iterations" in "\n".join(result.logs)
    run = json.loads((result.run_dir / "run.json").read_text())
    recorded = {p["name"]: (p["value"], p["source"]) for p in run["hyperparameters"]}
    assert recorded["tol"] == (1e-4, "model_default")
    assert recorded["max_iter"] == (1000, "model_default")


def test_reaching_max_iter_is_reported_not_hidden(
    workspace: Workspace, large_dataset: Path
) -> None:
    result = workspace.run(
        workspace.train_args("capped", "--param", "max_iter=2"), dataset=large_dataset
    )
    model = trained(result)
    assert int(model[-1].n_iter_[0]) == 2
    last = result.of("train_progress")[-1]
    assert last["epoch"] == last["total_epochs"] == 2
    assert "logistic_regression: reached max_iter=2 before converging" in "\n".join(result.logs)
    assert not any("ConvergenceWarning" in line for line in result.logs)


def _timestamps(events: list[dict[str, Any]]) -> list[float]:
    return [
        datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        for e in events
    ]


def test_progress_comes_by_the_clock_with_numbers_that_move(
    workspace: Workspace, large_dataset: Path
) -> None:
    # A forest of 40 trees on 32,000 rows: several seconds of fitting, trees of ~0.1-0.5 s.
    result = workspace.run(
        workspace.train_args("cadence", "--model", "random_forest", "--param", "n_estimators=40"),
        dataset=large_dataset,
    )
    trained(result)
    names = result.names()
    window = result.events[names.index("train_started") : names.index("train_finished") + 1]
    progress = [e for e in window if e["event"] == "train_progress"]
    times = _timestamps(window)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # At least one event a second while fitting (generous slack for a shared machine) ...
    assert max(gaps) < 3.0, gaps
    # ... and no more than about ten a second (the last one, with the final numbers, may
    # follow the previous one closely).
    progress_gaps = [b - a for a, b in itertools.pairwise(_timestamps(progress))]
    assert min(progress_gaps[:-1], default=1.0) >= 0.15, progress_gaps
    # Real numbers that move: trees grow one batch after another, accuracy changes.
    epochs = [e["epoch"] for e in progress]
    assert epochs == sorted(epochs) and epochs[-1] == 40 and len(set(epochs)) >= 3
    # (Heartbeats before the first tree is grown say epoch 0 and carry no numbers.)
    assert all("val_accuracy" in e for e in progress if e["epoch"] > 0)
    assert len({e["val_accuracy"] for e in progress if e["epoch"] > 0}) >= 3
    cost = [line for line in result.logs if line.startswith("progress: ")]
    assert len(cost) == 1 and "% of the" in cost[0]


def test_logistic_regression_progress_carries_each_iterations_numbers(
    workspace: Workspace, large_dataset: Path
) -> None:
    result = workspace.run(
        workspace.train_args("lr-progress", "--param", "tol=1e-8"), dataset=large_dataset
    )
    trained(result)
    progress = result.of("train_progress")
    assert all("val_accuracy" in e and "loss" in e for e in progress if e["epoch"] > 0)
    assert [e["epoch"] for e in progress] == sorted(e["epoch"] for e in progress)


def _slow_unit_dataset(path: Path, rows: int) -> Path:
    """A CSV on which one tree with every feature per split takes seconds."""
    generator = np.random.default_rng(7)
    x = generator.normal(size=(rows, 20))
    y = (x[:, :4].sum(axis=1) + generator.normal(size=rows) > 0).astype(int) + 2 * (x[:, 5] > 0)
    header = ",".join([f"f{i}" for i in range(20)] + ["label"])
    table = np.column_stack([x, y])
    np.savetxt(path, table, delimiter=",", header=header, comments="", fmt=["%.5f"] * 20 + ["%d"])
    return path


@pytest.fixture(scope="module")
def slow_unit_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _slow_unit_dataset(tmp_path_factory.mktemp("slow") / "slow.csv", 60_000)


@pytest.mark.parametrize(
    ("family", "params", "partial"),
    [
        # One tree with max_features=1.0 on 48,000 rows takes seconds: it cannot be split.
        ("random_forest", ["n_estimators=50", "max_features=1.0"], True),
    ],
)
def test_a_cancel_mid_fit_is_graceful_even_when_one_unit_takes_seconds(
    workspace: Workspace,
    live_runners: Track,
    slow_unit_dataset: Path,
    family: str,
    params: list[str],
    partial: bool,
) -> None:
    extra = ["--model", family]
    for param in params:
        extra += ["--param", param]
    runner = live_runners(
        workspace.start(workspace.train_args(f"slow-{family}", *extra), dataset=slow_unit_dataset)
    )
    if partial:  # once a tree is grown (earlier events are heartbeats at epoch 0)
        runner.wait_for_line(lambda line: '"train_progress"' in line and '"epoch": 0,' not in line)
    else:
        runner.wait_for_event("train_progress", count=1)
    runner.terminate()
    result = runner.finish()

    marker = assert_cancelled_gracefully(result, "training")
    assert "train_finished" not in result.names()
    run_id = result.run_dir.name
    if partial:
        assert marker["partial_artifacts"] == [f".ml/runs/{run_id}/model.partial.pkl"]
        model = pickle.loads((result.run_dir / "model.partial.pkl").read_bytes())
        grown = len(model[-1].estimators_)
        assert 1 <= grown < 50
        assert model[-1].n_estimators == grown and model[-1].warm_start is False
    else:
        assert marker["partial_artifacts"] == []


@pytest.fixture(scope="module")
def slow_liblinear_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 120,000 training rows: the fit below takes several seconds on a 2-core machine.
    return _slow_unit_dataset(tmp_path_factory.mktemp("svc") / "svc.csv", 150_000)


# liblinear's primal Newton solver with a large C and a tiny tol: several iterations per
# one-vs-rest problem (four classes), each a pass of conjugate gradient over every row.
LIBLINEAR_SLOW = ["--model", "linear_svc", "--param", "C=10000", "--param", "tol=1e-12"]
LIBLINEAR_SLOW += ["--param", "max_iter=1000000"]


def test_linear_svc_reports_liblinears_own_numbers_while_it_fits(
    workspace: Workspace, slow_liblinear_dataset: Path
) -> None:
    """liblinear fits in one call and keeps its weights to itself, but prints each step it
    takes and its objective: the progress events carry those, read while it runs, and
    the model is still exactly a plain fit()'s. (On the 150,000-row file the fit takes a
    second or more, so several progress events fall inside it even on a busy machine; on
    60,000 rows it took 0.6 s here and, under load, once left a single event.)"""
    result = workspace.run(
        workspace.train_args("svc-progress", *LIBLINEAR_SLOW), dataset=slow_liblinear_dataset
    )
    ours = trained(result)
    assert result.stdout == ""
    names = result.names()
    progress = result.of("train_progress")
    during, last = progress[:-1], progress[-1]
    # The objective per row and unit of C: 1.0 at each problem's start (zero weights),
    # below once steps are taken (printed with four digits, hence the slack).
    reported = [e["loss"] for e in during if "loss" in e]
    assert reported, during
    assert all(0.0 < loss <= 1.001 for loss in reported), reported
    assert min(reported) < 0.99
    epochs = [e["epoch"] for e in progress]
    assert epochs == sorted(epochs)
    # The last event is the fitted model's: n_iter_ (the most steps any problem took).
    assert last["epoch"] == int(ours[-1].n_iter_) < last["total_epochs"] == 1_000_000
    assert "val_accuracy" in last and "loss" in last
    assert names.index("train_finished") == names.index("train_progress") + len(progress)
    plain, x_val, _ = plain_fit(
        slow_liblinear_dataset, "linear_svc", C=10000.0, tol=1e-12, max_iter=1_000_000
    )
    np.testing.assert_allclose(ours[-1].coef_, plain[-1].coef_, rtol=1e-6, atol=1e-9)
    assert np.array_equal(ours.predict(x_val), plain.predict(x_val))


def test_a_cancel_during_liblinears_single_call_is_graceful(
    workspace: Workspace, live_runners: Track, slow_liblinear_dataset: Path
) -> None:
    """liblinear runs in one C call that cannot be interrupted. A SIGTERM during it goes
    through the runner's own path (its handler, the main thread watching the latch while
    the worker is inside liblinear): the countdown, the marker, exit 143, no model (the
    solver finished nothing it would hand back)."""
    runner = live_runners(
        workspace.start(
            workspace.train_args("svc-cancel", *LIBLINEAR_SLOW), dataset=slow_liblinear_dataset
        )
    )
    # Once liblinear has reported its first step: the cancel lands inside its call.
    runner.wait_for_line(lambda line: '"train_progress"' in line and '"loss"' in line)
    runner.terminate()
    result = runner.finish()

    marker = assert_cancelled_gracefully(result, "training")
    names = result.names()
    assert "train_finished" not in names
    assert marker["partial_artifacts"] == []
    assert not (result.run_dir / "model.partial.pkl").exists()
    # It was mid-fit: liblinear's numbers were still coming (no final, measured event).
    assert all("val_accuracy" not in e for e in result.of("train_progress"))
