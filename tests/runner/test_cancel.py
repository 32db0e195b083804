"""Cancelling the runner: at every step, during a long fit, twice, and during start-up.

A cancel always ends the same way: ``cancelling`` at once (then each second while the
flush runs), the flush of what is finished, ``.cancelled`` written atomically, *then*
``run_cancelled {graceful: true}``, exit 143, and no run.json.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from runforge_runner.contract import EXIT_CANCELLED
from tests.contracts import validate_file
from tests.runner.conftest import (
    HELD_RUNNER,
    LiveRunner,
    RunnerResult,
    Workspace,
    assert_events_valid,
)

Track = Callable[[LiveRunner], LiveRunner]


def assert_cancelled_gracefully(
    result: RunnerResult, step: str, grace: int = 5
) -> dict[str, object]:
    """The shape every graceful cancel has; returns the marker."""
    assert result.returncode == EXIT_CANCELLED, result.logs
    assert_events_valid(result.events)
    names = result.names()
    assert names[-1] == "run_cancelled"
    assert names.count("run_cancelled") == 1
    final = result.events[-1]
    assert final["graceful"] is True and final["step"] == step
    countdown = [e["seconds_remaining"] for e in result.of("cancelling")]
    assert countdown and countdown[0] == grace
    assert countdown == list(range(grace, grace - len(countdown), -1))
    assert {e["step"] for e in result.of("cancelling")} == {step}
    first_cancelling = names.index("cancelling")
    assert "cancelling" not in names[names.index("run_cancelled") :][1:]
    assert "artifacts_written" not in names and "run_failed" not in names
    assert first_cancelling < names.index("run_cancelled")

    marker = validate_file("cancelled.v1.0.0", result.run_dir / ".cancelled")
    run_id = result.run_dir.name
    assert marker["run_id"] == run_id
    assert marker["run_dir"] == f".ml/runs/{run_id}"
    assert marker["step"] == step
    workspace_root = result.run_dir.parents[2]
    partial = marker["partial_artifacts"]
    assert isinstance(partial, list)
    for path in partial:
        assert (workspace_root / path).is_file(), path
    assert not (result.run_dir / "run.json").exists()
    return marker


@pytest.mark.parametrize(
    ("step", "saved", "events_before"),
    [
        ("dataset_loading", [], ["run_start"]),
        ("training", [], ["run_start", "dataset_loaded"]),
        (
            "metrics_computation",
            ["model.pkl"],
            ["run_start", "dataset_loaded", "train_started", "train_progress", "train_finished"],
        ),
        (
            "artifact_writing",
            ["metrics.v1.json", "model.pkl"],
            [
                "run_start",
                "dataset_loaded",
                "train_started",
                "train_progress",
                "train_finished",
                "metrics_computed",
            ],
        ),
    ],
)
def test_cancel_at_each_step_flushes_what_is_finished_and_leaves_a_marker(
    workspace: Workspace,
    live_runners: Track,
    step: str,
    saved: list[str],
    events_before: list[str],
) -> None:
    run_id = f"cancel-{step}"
    runner = live_runners(
        workspace.start(
            workspace.train_args(run_id, "--param", "max_iter=3"),
            extra_env={"RUNFORGE_TEST_HOLD_STEP": step},
            command=HELD_RUNNER,
        )
    )
    runner.wait_for_line(lambda line: line == f"held at {step}")
    runner.terminate()
    result = runner.finish()

    marker = assert_cancelled_gracefully(result, step)
    assert marker["partial_artifacts"] == [f".ml/runs/{run_id}/{name}" for name in saved]
    names = result.names()
    before = [n for n in names[: names.index("cancelling")] if n != "train_progress"]
    assert before == [n for n in events_before if n != "train_progress"]
    if "model.pkl" in saved:
        model = pickle.loads((result.run_dir / "model.pkl").read_bytes())
        assert model.predict([[5.0, 3.4, 1.5, 0.25]]).shape == (1,)


def test_sigterm_during_a_long_fit_is_acted_on_at_once_and_saves_the_partial_model(
    workspace: Workspace, live_runners: Track, large_dataset: Path
) -> None:
    runner = live_runners(
        workspace.start(
            workspace.train_args("long-fit", "--model", "random_forest"), dataset=large_dataset
        )
    )
    runner.wait_for_event("train_progress", count=3)
    runner.terminate()
    result = runner.finish()

    marker = assert_cancelled_gracefully(result, "training")
    assert marker["partial_artifacts"] == [".ml/runs/long-fit/model.partial.pkl"]
    names = result.names()
    # Acted on between two chunks: at most the chunk in flight reports after the request.
    assert names[names.index("cancelling") :].count("train_progress") <= 1
    progress = result.of("train_progress")
    assert progress[-1]["epoch"] < progress[-1]["total_epochs"]
    # The model as grown when the cancel came: at least the trees already reported
    # (progress is sent by the clock, so the last batch may not have been reported yet).
    partial = pickle.loads((result.run_dir / "model.partial.pkl").read_bytes())
    assert len(partial[-1].estimators_) >= progress[-1]["epoch"]
    assert partial[-1].n_estimators == len(partial[-1].estimators_)


def test_a_second_sigterm_does_not_restart_or_corrupt_the_cancel(
    workspace: Workspace, live_runners: Track, large_dataset: Path
) -> None:
    runner = live_runners(
        workspace.start(
            workspace.train_args("twice", "--model", "random_forest"), dataset=large_dataset
        )
    )
    runner.wait_for_event("train_progress", count=2)
    runner.terminate()
    runner.terminate()
    result = runner.finish()
    assert_cancelled_gracefully(result, "training")
    assert [e["seconds_remaining"] for e in result.of("cancelling")].count(5) == 1


def test_sigterm_while_the_runner_starts_up_takes_the_graceful_path(
    workspace: Workspace, live_runners: Track, large_dataset: Path
) -> None:
    # run_start comes before the dataset is read and scikit-learn imported: the slow part.
    runner = live_runners(workspace.start(workspace.train_args("startup"), dataset=large_dataset))
    runner.wait_for_event("run_start")
    runner.terminate()
    result = runner.finish()
    assert_cancelled_gracefully(result, "dataset_loading")
    assert "train_started" not in result.names()


def test_the_countdown_starts_from_the_grace_the_daemon_sets(
    workspace: Workspace, live_runners: Track
) -> None:
    runner = live_runners(
        workspace.start(
            workspace.train_args("grace"),
            extra_env={
                "RUNFORGE_TEST_HOLD_STEP": "dataset_loading",
                "RUNFORGE_CANCEL_GRACE_S": "3",
            },
            command=HELD_RUNNER,
        )
    )
    runner.wait_for_line(lambda line: line == "held at dataset_loading")
    runner.terminate()
    assert_cancelled_gracefully(runner.finish(), "dataset_loading", grace=3)


def test_a_slow_flush_shows_one_countdown_event_per_second_and_exits_when_done(
    workspace: Workspace, live_runners: Track
) -> None:
    trainer = Path(__file__).with_name("custom_trainer.py")
    run_dir = workspace.run_dir("slow-flush")
    runner = live_runners(
        workspace.start(
            [str(run_dir)],
            extra_env={"CUSTOM_FLUSH_S": "3"},
            command=[*HELD_RUNNER[:2], str(trainer)],
        )
    )
    runner.run_dir = run_dir
    runner.wait_for_event("train_progress", count=2)
    runner.terminate()
    runner.wait_for_event("cancelling", count=2)
    runner.terminate()  # during the flush: ignored
    result = runner.finish()

    marker = assert_cancelled_gracefully(result, "training")
    countdown = [e["seconds_remaining"] for e in result.of("cancelling")]
    # A 3 s flush under a 5 s grace: 5, 4, 3 (and 2 if the exit races the next tick); the
    # runner leaves as soon as the flush is done instead of waiting out the grace.
    assert countdown[:3] == [5, 4, 3] and len(countdown) <= 4
    assert marker["partial_artifacts"] == [".ml/runs/slow-flush/checkpoint.json"]
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["epoch"] >= 2
