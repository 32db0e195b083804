"""The progress display of ``runforgectl train``: what a person reads while a run trains.
Fed with events as the daemon publishes them, timestamps chosen, so the arithmetic is
checked exactly (the live path is covered by the training tests)."""

from __future__ import annotations

import io
from typing import Any

from runforge_protocol import messages as m
from runforgectl.follow import ProgressDisplay


def event(run_seq: int, ts: float, kind: str, **data: Any) -> m.Event:
    return m.Event(seq=run_seq, run_seq=run_seq, ts=ts, type=kind, run_id="r1", data=data)


def test_eta_counts_from_the_start_of_training_not_from_the_queue() -> None:
    """Queueing and start-up (imports, loading the dataset) took 10 s; the first of four
    steps took 1 s: three steps remain, about 3 s, while 11 s have elapsed in all."""
    out = io.StringIO()
    display = ProgressDisplay(out)
    display(event(1, 100.0, "run_queued"))
    display(event(2, 105.0, "run_start", model_family="random_forest", preset_id="std-train"))
    display(event(3, 110.0, "train_started", model_family="random_forest"))
    display(event(4, 111.0, "train_progress", epoch=1, total_epochs=4, val_accuracy=0.5))
    last = out.getvalue().splitlines()[-1]
    assert "step 1/4" in last
    assert "elapsed 0:11" in last
    assert "ETA 0:03" in last


def test_eta_without_a_train_started_event_counts_from_the_first_event() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out)
    display(event(1, 200.0, "run_start", model_family="x", preset_id="std-train"))
    display(event(2, 202.0, "train_progress", epoch=2, total_epochs=4))
    assert "ETA 0:02" in out.getvalue().splitlines()[-1]


def test_a_fit_that_stops_when_it_converges_shows_iterations_and_an_eta_bound() -> None:
    """Logistic regression: total_epochs is max_iter, a ceiling. No "1/1000" bar, no plain
    ETA: the iterations done, and the time to max_iter named as the bound it is; at the
    end, how the fit ended (converged after 11 of at most 1000)."""
    out = io.StringIO()
    display = ProgressDisplay(out)
    display(event(1, 10.0, "run_start", model_family="logistic_regression", preset_id="p"))
    display(event(2, 12.0, "train_started", model_family="logistic_regression"))
    display(event(3, 13.0, "train_progress", epoch=5, total_epochs=1000, loss=0.7))
    display.PLAIN_STATUS_INTERVAL_S = 0.0
    display(event(4, 14.0, "train_progress", epoch=11, total_epochs=1000, loss=0.66))
    display(event(5, 14.0, "train_finished", duration_seconds=2.0))
    lines = out.getvalue().splitlines()
    first = next(line for line in lines if "iteration 5" in line)
    assert "iteration 5 (max_iter 1000)" in first and "/1000" not in first
    assert "ETA ≤ 3:19 (at max_iter)" in first  # 0.2 s per iteration, 995 to go
    assert lines[-1] == "training finished in 0:04: converged after 11 iterations (max_iter 1000)"


def test_a_fit_that_reached_max_iter_says_so() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out)
    display(event(1, 10.0, "run_start", model_family="linear_svc", preset_id="p"))
    display(event(2, 10.0, "train_started", model_family="linear_svc"))
    display(event(3, 11.0, "train_progress", epoch=2, total_epochs=2, loss=0.5))
    display(event(4, 11.0, "train_finished"))
    assert out.getvalue().splitlines()[-1].endswith(": stopped at max_iter (2) before converging")


def test_a_solver_that_reports_nothing_yet_shows_elapsed_time_only() -> None:
    """liblinear's dual solver reports only every 10 iterations: before that the events
    carry epoch 0 and no numbers; the display says so instead of "0/1000, ETA ?"."""
    out = io.StringIO()
    display = ProgressDisplay(out)
    display(event(1, 10.0, "run_start", model_family="linear_svc", preset_id="p"))
    display(event(2, 10.0, "train_started", model_family="linear_svc"))
    display(event(3, 13.0, "train_progress", epoch=0, total_epochs=1000))
    last = out.getvalue().splitlines()[-1]
    assert last == "fitting (no iteration reported yet; max_iter 1000)  elapsed 0:03"


def test_a_forest_shows_its_trees_out_of_the_total_and_a_plain_eta() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out)
    display(event(1, 10.0, "run_start", model_family="random_forest", preset_id="p"))
    display(event(2, 10.0, "train_started", model_family="random_forest"))
    display(event(3, 12.0, "train_progress", epoch=20, total_epochs=100, val_accuracy=0.8))
    display.PLAIN_STATUS_INTERVAL_S = 0.0
    display(event(4, 20.0, "train_progress", epoch=100, total_epochs=100, val_accuracy=0.9))
    display(event(5, 20.0, "train_finished"))
    lines = out.getvalue().splitlines()
    assert "step 20/100" in lines[-3] and "ETA 0:08" in lines[-3]
    assert "ETA" not in lines[-2]  # done: nothing remains
    assert lines[-1] == "training finished in 0:10 (100/100 steps)"
