"""runforge_runner.contract, the helper any trainer can use, exercised in-process
(its signal-driven path runs as real processes in test_cancel.py and the README example
below)."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runforge_runner import contract
from runforge_runner.contract import CancelSignal, TrainerError, TrainerSession
from tests.contracts import validate, validate_file
from tests.runner.conftest import (
    LiveRunner,
    Workspace,
    assert_events_valid,
    parse_stderr,
)

README = Path(__file__).resolve().parents[2] / "runforge_runner" / "README.md"


def make_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[TrainerSession, io.StringIO]:
    # A latch that is not installed: these tests must not take over pytest's signals.
    monkeypatch.chdir(tmp_path)
    stream = io.StringIO()
    session = TrainerSession(
        tmp_path / ".ml" / "runs" / "helper-run",
        cancel_signal=CancelSignal(),
        grace_s=5,
        stream=stream,
    )
    return session, stream


def events_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return parse_stderr(stream.getvalue())[0]


def test_emit_writes_one_valid_event_line_with_timestamp_and_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)
    session.emit("train_progress", epoch=1, total_epochs=3, loss=0.5, val_accuracy=0.75)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    validate("events.v1", event)
    assert event["run_id"] == "helper-run"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])


@pytest.mark.parametrize(
    ("event", "fields", "complaint"),
    [
        ("train_exploded", {}, "unknown event type"),
        ("train_progress", {"epoch": 1}, "missing ['total_epochs']"),
        ("train_started", {"model_family": "x", "batch": 3}, "not allowed ['batch']"),
    ],
)
def test_emit_refuses_events_the_daemon_would_skip(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    event: str,
    fields: dict[str, Any],
    complaint: str,
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=re.escape(complaint)):
        session.emit(event, **fields)
    assert stream.getvalue() == ""


def test_a_train_function_that_returns_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)
    assert session.run(lambda s: s.write_json("out.json", {"ok": True})) == contract.EXIT_OK
    assert session.written_artifacts == [".ml/runs/helper-run/out.json"]
    assert events_of(stream) == []


def test_a_trainer_error_becomes_run_failed_with_its_code_and_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)

    def train(active: TrainerSession) -> None:
        raise TrainerError("MY_CODE", "the data is upside down; flip it", contract.EXIT_BAD_DATA)

    assert session.run(train) == contract.EXIT_BAD_DATA
    (failure,) = events_of(stream)
    assert failure["error"] == {"code": "MY_CODE", "message": "the data is upside down; flip it"}
    assert failure["step"] == "dataset_loading"


def test_an_unexpected_exception_is_logged_and_reported_as_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)

    def train(active: TrainerSession) -> None:
        raise RuntimeError("boom")

    assert session.run(train) == contract.EXIT_FAILURE
    events, logs = parse_stderr(stream.getvalue())
    assert any("Traceback" in line for line in logs)
    assert events[-1]["error"] == {"code": "INTERNAL_ERROR", "message": "RuntimeError: boom"}


def test_a_file_that_cannot_be_written_is_a_write_failed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)
    assert session.run(lambda s: s.write_json("missing-dir/x.json", {})) == contract.EXIT_FAILURE
    failure = events_of(stream)[-1]
    assert failure["error"]["code"] == "WRITE_FAILED"
    assert "missing-dir/x.json" in failure["error"]["message"]


def test_a_requested_cancel_flushes_writes_the_marker_then_run_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, stream = make_session(tmp_path, monkeypatch)
    session.on_cancel(lambda: session.write_json("partial.json", {"epoch": 2}))

    def train(active: TrainerSession) -> None:
        active.enter_step(contract.STEP_TRAINING)
        active.cancel_signal.request(signal.SIGTERM)
        active.checkpoint()
        raise AssertionError("checkpoint() must raise once a cancel is requested")

    assert session.run(train) == contract.EXIT_CANCELLED
    events = events_of(stream)
    assert [e["event"] for e in events] == ["cancelling", "run_cancelled"]
    assert_events_valid(events)
    assert events[0]["seconds_remaining"] == 5 and events[0]["step"] == "training"
    marker = validate_file("cancelled.v1.0.0", session.run_dir / ".cancelled")
    assert marker["partial_artifacts"] == [".ml/runs/helper-run/partial.json"]
    assert marker["reason"] == "SIGTERM received"


def test_a_cancel_that_comes_too_late_to_stop_the_work_leaves_a_completed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, _ = make_session(tmp_path, monkeypatch)

    def train(active: TrainerSession) -> None:
        active.cancel_signal.request(signal.SIGTERM)  # after the last checkpoint

    assert session.run(train) == contract.EXIT_OK
    assert not (session.run_dir / ".cancelled").exists()


@pytest.mark.parametrize(("raw", "grace"), [("", 5.0), ("2.5", 2.5), (" 10 ", 10.0)])
def test_grace_comes_from_the_environment(raw: str, grace: float) -> None:
    assert contract.cancel_grace_from_env({"RUNFORGE_CANCEL_GRACE_S": raw}) == grace


@pytest.mark.parametrize("raw", ["soon", "-1", "inf"])
def test_a_bad_grace_is_a_usage_error(raw: str) -> None:
    with pytest.raises(TrainerError) as raised:
        contract.cancel_grace_from_env({"RUNFORGE_CANCEL_GRACE_S": raw})
    assert raised.value.exit_code == contract.EXIT_USAGE


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("### Example custom trainer") :]
    return section[section.index("```python\n") + len("```python\n") :].split("```", 1)[0]


def test_the_readme_example_trainer_completes_a_run(workspace: Workspace, tmp_path: Path) -> None:
    script = tmp_path / "my_trainer.py"
    script.write_text(readme_example())
    completed = subprocess.run(
        [sys.executable, "-u", str(script), "--out", ".ml/runs/demo"],
        cwd=workspace.root,
        env=workspace.environment(None, None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    events, _ = parse_stderr(completed.stderr)
    assert_events_valid(events)
    assert events[-1]["event"] == "artifacts_written"
    assert json.loads((workspace.run_dir("demo") / "model.json").read_text())["epoch"] == 20


def test_the_readme_example_trainer_cancels_as_documented(
    workspace: Workspace, tmp_path: Path
) -> None:
    script = tmp_path / "my_trainer.py"
    script.write_text(readme_example())
    runner = LiveRunner(
        subprocess.Popen(
            [sys.executable, "-u", str(script), "--out", ".ml/runs/demo"],
            cwd=workspace.root,
            env=workspace.environment(None, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        workspace.run_dir("demo"),
    )
    try:
        runner.wait_for_event("train_progress", count=2)
        runner.terminate()
        result = runner.finish()
    finally:
        runner.kill()
    assert result.returncode == contract.EXIT_CANCELLED
    names = result.names()
    assert names[-1] == "run_cancelled" and names.index("cancelling") < len(names) - 1
    marker = json.loads((workspace.run_dir("demo") / ".cancelled").read_text())
    assert marker["step"] == "training"
    assert marker["partial_artifacts"] == [".ml/runs/demo/model.partial.json"]
