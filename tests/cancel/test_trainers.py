"""The purpose-built trainers do what their modes promise, run directly (no daemon)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from runforge_contract.trainer_events import SUCCESS_SEQUENCE
from runforge_protocol.records import RunState
from runforged.outcome import classify_terminal_state
from runforged.run_folder import read_cancelled_marker
from tests.cancel.conftest import StartTrainer, Trainer
from tests.contracts import IRIS_SAMPLE, validate, validate_file

CONTRACT_EVENTS = list(SUCCESS_SEQUENCE)
QUICK_FLUSH = {"RF_TEST_FLUSH_S": "0.2"}


def contract_sequence(trainer: Trainer) -> list[str]:
    """Event names with runs of train_progress collapsed to one."""
    names: list[str] = []
    for name in trainer.event_names():
        if not (name == "train_progress" and names and names[-1] == name):
            names.append(name)
    return names


def assert_events_valid(events: list[dict[str, Any]]) -> None:
    for event in events:
        validate("events.v1", event)


def assert_complete_run_on_disk(trainer: Trainer) -> dict[str, Any]:
    run_json = validate_file("run.v0.3.6", trainer.run_dir / "run.json")
    assert run_json["run_id"] == trainer.run_dir.name
    validate_file("metrics.v1", trainer.run_dir / "metrics.v1.json")
    assert (trainer.run_dir / run_json["artifacts"]["model_pkl"]).is_file()
    return run_json


def ignores_sigterm(pid: int) -> bool:
    """From the kernel's own record of the process's ignored signals."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    raise AssertionError(f"no SigIgn in /proc/{pid}/status")


def classify(trainer: Trainer, cancel_requested: bool) -> RunState:
    names = trainer.event_names()
    return classify_terminal_state(
        exit_code=trainer.proc.returncode,
        cancel_requested=cancel_requested,
        artifacts_written="artifacts_written" in names,
        run_json_exists=(trainer.run_dir / "run.json").is_file(),
        marker_valid=read_cancelled_marker(trainer.run_dir) is not None,
        run_cancelled="run_cancelled" in names,
        killed=False,
    ).state


def cancel_during_training(trainer: Trainer) -> None:
    trainer.wait_ready()
    trainer.wait_events("train_progress")
    trainer.proc.send_signal(signal.SIGTERM)


def test_complete_emits_every_contract_event_in_order_and_writes_a_valid_run(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("complete", RF_TEST_STEPS="4")
    assert trainer.wait() == 0
    assert contract_sequence(trainer) == CONTRACT_EVENTS
    assert trainer.event_names().count("train_progress") == 4
    events = trainer.events()
    assert_events_valid(events)
    assert {event["run_id"] for event in events} == {trainer.run_dir.name}
    assert events[-1]["run_dir"] == ".ml/runs/" + trainer.run_dir.name
    assert_complete_run_on_disk(trainer)
    assert (trainer.run_dir / "trainer.pid").read_text().strip() == str(trainer.pid)
    assert classify(trainer, cancel_requested=False) is RunState.COMPLETED


def test_complete_trains_its_baseline_on_the_dataset_it_is_given(
    start_trainer: StartTrainer,
) -> None:
    iris = IRIS_SAMPLE
    trainer = start_trainer("complete", RUNFORGE_DATASET=str(iris))
    assert trainer.wait() == 0
    run_json = assert_complete_run_on_disk(trainer)
    assert run_json["num_samples"] == len(iris.read_text().splitlines()) - 1
    assert run_json["metrics_v1"]["metrics_profile"] == "classification.multiclass.v1"


def test_graceful_counts_down_writes_the_marker_then_reports_run_cancelled(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("graceful", RF_TEST_FLUSH_S="1.5")
    cancel_during_training(trainer)
    assert trainer.wait() == 143
    events = trainer.events()
    assert_events_valid(events)
    names = [event["event"] for event in events]
    assert names[-1] == "run_cancelled"
    assert events[-1]["graceful"] is True and events[-1]["step"] == "training"
    countdown = [e["seconds_remaining"] for e in events if e["event"] == "cancelling"]
    assert countdown[0] == 2
    assert countdown == sorted(countdown, reverse=True) and len(set(countdown)) == len(countdown)
    marker = validate_file("cancelled.v1.0.0", trainer.run_dir / ".cancelled")
    assert marker["step"] == "training"
    assert marker["run_dir"] == ".ml/runs/" + trainer.run_dir.name
    checkpoint = f".ml/runs/{trainer.run_dir.name}/checkpoint.partial.json"
    assert marker["partial_artifacts"] == [checkpoint]
    assert (trainer.workspace / checkpoint).is_file()
    assert not (trainer.run_dir / "run.json").exists()
    assert classify(trainer, cancel_requested=True) is RunState.CANCELLED_GRACEFUL


def test_ignore_sigterm_keeps_training_until_killed(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("ignore_sigterm")
    cancel_during_training(trainer)
    progress = trainer.event_names().count("train_progress")
    trainer.wait_events("train_progress", progress + 2)
    assert ignores_sigterm(trainer.pid)
    assert trainer.proc.poll() is None
    trainer.proc.kill()
    assert trainer.wait() == -signal.SIGKILL
    assert classify(trainer, cancel_requested=True) is RunState.CANCELLED_FORCED


def test_grandchildren_start_sigterm_proof_descendants_one_in_its_own_session(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_GRANDCHILDREN="4")
    trainer.wait_ready()
    tree = trainer.tree()
    assert tree["trainer"] == trainer.pid
    roles = {d["role"]: d for d in tree["descendants"]}
    assert [d["role"] for d in tree["descendants"]] == [
        "own_session",
        "parent",
        "grandchild",
        "child",
    ]
    assert os.getsid(roles["own_session"]["pid"]) != os.getsid(trainer.pid)
    assert os.getsid(roles["child"]["pid"]) == os.getsid(trainer.pid) == trainer.pid
    assert psutil.Process(roles["grandchild"]["pid"]).ppid() == roles["parent"]["pid"]
    for descendant in tree["descendants"]:
        assert psutil.Process(descendant["pid"]).ppid() == descendant["ppid"]
        assert ignores_sigterm(descendant["pid"])
    assert ignores_sigterm(trainer.pid)


def test_grandchildren_trainer_can_exit_on_sigterm_leaving_its_descendants(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_TRAINER_TERM="exit")
    trainer.wait_ready()
    descendants = trainer.tree()["descendants"]
    trainer.proc.send_signal(signal.SIGTERM)
    assert trainer.wait() == 143
    for descendant in descendants:
        assert psutil.Process(descendant["pid"]).status() != psutil.STATUS_ZOMBIE


def test_marker_no_stderr_closes_stderr_early_and_still_writes_the_marker(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("marker_no_stderr", stderr_pipe=True, **QUICK_FLUSH)
    assert trainer.proc.stderr is not None
    output = trainer.proc.stderr.read()  # returns at EOF: nothing holds stderr any more
    assert [json.loads(line)["event"] for line in output.splitlines()] == ["run_start"]
    trainer.wait_ready()
    assert trainer.proc.poll() is None
    trainer.proc.send_signal(signal.SIGTERM)
    assert trainer.wait() == 143
    marker = read_cancelled_marker(trainer.run_dir)
    assert marker is not None and marker.step in ("dataset_loading", "training")
    validate_file("cancelled.v1.0.0", trainer.run_dir / ".cancelled")


def test_marker_fails_event_reports_run_cancelled_without_a_marker(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("marker_fails_event", **QUICK_FLUSH)
    cancel_during_training(trainer)
    assert trainer.wait() == 143
    assert (trainer.run_dir / ".cancelled").is_dir()
    assert read_cancelled_marker(trainer.run_dir) is None
    events = trainer.events()
    assert events[-1]["event"] == "run_cancelled" and events[-1]["graceful"] is True
    assert any(line.startswith(b"rf_test_trainer: could not write") for line in trainer.lines())
    assert classify(trainer, cancel_requested=True) is RunState.CANCELLED_GRACEFUL


@pytest.mark.parametrize("finish_exit", [0, 143])
def test_finish_on_cancel_finishes_the_run_instead(
    start_trainer: StartTrainer, finish_exit: int
) -> None:
    trainer = start_trainer("finish_on_cancel", RF_TEST_FINISH_EXIT=str(finish_exit))
    cancel_during_training(trainer)
    assert trainer.wait() == finish_exit
    assert contract_sequence(trainer) == CONTRACT_EVENTS
    assert_events_valid(trainer.events())
    assert_complete_run_on_disk(trainer)
    assert not (trainer.run_dir / ".cancelled").exists()
    assert classify(trainer, cancel_requested=True) is RunState.COMPLETED


def test_fail_reports_run_failed_and_exits_1(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("fail")
    assert trainer.wait() == 1
    events = trainer.events()
    assert [e["event"] for e in events] == [
        "run_start",
        "dataset_loaded",
        "train_started",
        "run_failed",
    ]
    assert_events_valid(events[:-1])
    failure = events[-1]
    assert failure["error"]["code"] == "TRAINING_FAILED" and failure["error"]["message"]
    assert failure["run_id"] == trainer.run_dir.name and failure["timestamp"]
    assert classify(trainer, cancel_requested=False) is RunState.FAILED


def test_exit0_no_runjson_exits_0_without_finishing(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("exit0_no_runjson")
    assert trainer.wait() == 0
    assert contract_sequence(trainer) == CONTRACT_EVENTS[:-1]
    assert not (trainer.run_dir / "run.json").exists()
    assert classify(trainer, cancel_requested=False) is RunState.FAILED


def test_flood_numbers_its_progress_events_in_order(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("flood", RF_TEST_EVENTS="3000")
    assert trainer.wait() == 0
    progress = [e for e in trainer.events() if e["event"] == "train_progress"]
    assert [e["epoch"] for e in progress] == list(range(3000))
    assert {e["total_epochs"] for e in progress} == {3000}
    stamps = [e["timestamp"] for e in progress]
    assert stamps == sorted(stamps)
    assert_events_valid(progress[:10])
    assert contract_sequence(trainer) == CONTRACT_EVENTS


def test_flood_can_be_paced(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("flood", RF_TEST_EVENTS="20", RF_TEST_RATE="400")
    assert trainer.wait() == 0
    assert trainer.event_names().count("train_progress") == 20


def test_garbage_interleaves_seven_bad_lines_with_a_complete_run(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("garbage")
    assert trainer.wait() == 0
    valid, invalid = [], []
    for line in trainer.lines():
        try:
            document = json.loads(line)
            validate("events.v1", document)
            valid.append(document["event"])
        except Exception:
            invalid.append(line)
    assert [name for name in valid if name != "train_progress"] == [
        n for n in CONTRACT_EVENTS if n != "train_progress"
    ]
    assert len(invalid) == 7
    assert invalid[0] == b"this line is plain text, not an event"
    assert len(invalid[-1]) > 1 << 20
    assert_complete_run_on_disk(trainer)


def test_crash_midwrite_leaves_a_torn_run_json(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("crash_midwrite")
    assert trainer.wait() == -signal.SIGKILL
    torn = (trainer.run_dir / "run.json").read_bytes()
    assert torn.startswith(b"{")
    with pytest.raises(ValueError):
        json.loads(torn)
    assert "artifacts_written" not in trainer.event_names()
    assert classify(trainer, cancel_requested=False) is RunState.FAILED


def test_sigterm_probe_records_when_the_signal_arrived(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("sigterm_probe", **QUICK_FLUSH)
    trainer.wait_ready()
    before = time.monotonic_ns()
    trainer.proc.send_signal(signal.SIGTERM)
    assert trainer.wait() == 143
    arrival = json.loads((trainer.run_dir / "sigterm_received").read_text())
    assert arrival["monotonic_ns"] >= before
    assert arrival["time_ns"] > 0
    assert read_cancelled_marker(trainer.run_dir) is not None


def test_an_unknown_mode_is_a_usage_error(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("no_such_mode")
    assert trainer.wait() == 2
    assert b"unknown RF_TEST_MODE" in b"\n".join(trainer.lines())
