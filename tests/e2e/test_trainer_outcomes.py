"""What a trainer does decides how its run ends, as the user sees it through runforgectl:
invalid event lines are skipped and counted but never fatal, a runner error fails the
run with the runner's own message, and exit 0 without run.json is "training incomplete"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import (
    EXIT_RUN_FAILED,
    events_on_disk,
    index_path,
    read_json,
    run_dir,
    start_detached,
    wait_result,
)
from tests.harness import DaemonProcess

INVALID_LINES = 6  # rf_test_trainer's garbage mode writes six invalid event lines


def test_invalid_event_lines_are_skipped_counted_and_the_run_completes(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(RF_TEST_MODE="garbage")
    before = daemon.ctl_json("status")["counters"]["invalid_trainer_lines"]
    run_id = start_detached(daemon, workspace)
    result = wait_result(workspace, run_id)
    assert result["state"] == "completed" and result["index_status"] == "indexed"
    assert [e["run_id"] for e in read_json(index_path(workspace))["runs"]] == [run_id]

    status = daemon.ctl_json("status")
    assert status["counters"]["invalid_trainer_lines"] == before + INVALID_LINES
    shown = daemon.ctl("status", check=True).stdout
    [row] = [line for line in shown.splitlines() if line.startswith("invalid trainer lines")]
    assert row.split()[-1] == str(before + INVALID_LINES)

    events = events_on_disk(workspace, run_id)
    skipped = [e for e in events if e["type"] == "invalid_event_line"]
    assert len(skipped) == INVALID_LINES
    assert all(e["data"]["reason"] for e in skipped)
    assert all(len(e["data"]["line"]) <= 200 for e in skipped)
    valid = [e["type"] for e in events if e["data"].get("event")]
    assert valid[0] == "run_start" and valid[-1] == "artifacts_written"
    # The plain text line is a log line, kept in logs.txt.
    assert (run_dir(workspace, run_id) / "logs.txt").read_text().strip()


def test_a_runner_error_fails_the_run_with_the_runners_message(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(RF_TEST_MODE="fail")
    followed = daemon.ctl("train", "--workspace", str(workspace), timeout=120)
    assert followed.returncode == EXIT_RUN_FAILED, (followed.stdout, followed.stderr)
    run_id = followed.stdout.split()[0]
    assert "runner error: rf_test_trainer failed on purpose" in followed.stdout
    assert f"run {run_id}: failed" in followed.stdout

    result = read_json(run_dir(workspace, run_id) / "result.json")
    assert result["state"] == "failed"
    assert result["exit_code"] == 1
    assert result["reason"].startswith("rf_test_trainer failed on purpose (RF_TEST_MODE=fail)")
    assert not index_path(workspace).exists()

    [row] = daemon.ctl_json("runs", "--workspace", str(workspace))["runs"]
    assert (row["run_id"], row["state"]) == (run_id, "failed")
    assert row["reason"] == result["reason"]
    listed = daemon.ctl("runs", "--workspace", str(workspace), check=True).stdout
    assert "failed on purpose" in listed
    shown = daemon.ctl_json("show", run_id, "--workspace", str(workspace))
    assert shown["run"]["state"] == "failed" and shown["document"]["state"] == "failed"


def test_exit_zero_without_run_json_is_training_incomplete(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(RF_TEST_MODE="exit0_no_runjson")
    run_id = start_detached(daemon, workspace)
    result = wait_result(workspace, run_id)
    assert result["state"] == "failed"
    assert result["exit_code"] == 0
    assert "training incomplete" in result["reason"]
    assert not (run_dir(workspace, run_id) / "run.json").exists()
    assert not index_path(workspace).exists()
    terminal = events_on_disk(workspace, run_id)[-1]
    assert terminal["type"] == "run_terminal" and terminal["data"]["state"] == "failed"
    [row] = daemon.ctl_json("runs", "--workspace", str(workspace))["runs"]
    assert row["state"] == "failed" and "training incomplete" in row["reason"]
