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
