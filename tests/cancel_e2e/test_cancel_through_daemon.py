"""Cancel Active Training end to end: the real daemon, the real runforgectl, real trainer
processes (tests/trainers/rf_test_trainer), and the files they leave."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.contracts import validate
from tests.harness import (
    DaemonProcess,
    alive,
    events_on_disk,
    index_ids,
    json_lines,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)

EXIT_FORCED = 10
EXIT_COMPLETED_DESPITE_CANCEL = 11
EXIT_CANCELLED_GRACEFUL_TRAIN = 13


def wait_trainer_ready(workspace: Path, run_id: str) -> int:
    pid_file = run_dir(workspace, run_id) / "trainer.pid"
    wait_for(pid_file.exists, timeout=60)
    return int(pid_file.read_text().strip())


@pytest.fixture
def make_daemon(daemon_factory: Callable[..., DaemonProcess]) -> Callable[..., DaemonProcess]:
    def make(**env: str) -> DaemonProcess:
        return daemon_factory(**env).start()

    return make


def test_graceful_trainer_leaves_marker_and_is_cancelled_gracefully(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="2")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5")
    assert result.returncode == 0, result.stderr
    assert "cancelled_graceful" in result.stdout
    assert "Cancelling" in result.stdout
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_graceful"
    assert outcome["cancel_requested"] is True
    assert outcome["partial_artifacts"], outcome
    marker = json.loads((run_dir(ws, run_id) / ".cancelled").read_text())
    validate("cancelled.v1.0.0", marker)
    assert marker["run_id"] == run_id
    assert run_id not in index_ids(ws)  # a cancelled run is never indexed
    kinds = [e["type"] for e in events_on_disk(ws, run_id)]
    assert kinds.index("cancel_requested") < kinds.index("cancelling")
    assert kinds.index("cancelling") < kinds.index("run_cancelled") < kinds.index("run_terminal")
    terminal = events_on_disk(ws, run_id)[-1]
    assert terminal["type"] == "run_terminal"
    assert terminal["data"]["partial_artifacts"] == outcome["partial_artifacts"]
    shown = daemon.ctl_json("show", run_id, "--workspace", str(ws))
    assert shown["run"]["state"] == "cancelled_graceful"
    assert shown["run"]["partial_artifacts"] == outcome["partial_artifacts"]


def test_marker_with_stderr_closed_is_graceful(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(RF_TEST_MODE="marker_no_stderr")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_graceful"
    assert ".cancelled marker" in outcome["reason"]


def test_failed_marker_write_but_run_cancelled_event_is_graceful(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="marker_fails_event")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_graceful"
    assert "run_cancelled" in outcome["reason"]


def test_trainer_ignoring_sigterm_is_killed_at_the_deadline_with_countdown(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="ignore_sigterm")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    pid = wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "3", "--json")
    assert result.returncode == EXIT_FORCED, result.stdout + result.stderr
    streamed = [e["type"] for e in json_lines(result.stdout)]
    assert "cancel_escalated" in streamed and streamed[-1] == "run_terminal"
    assert not alive(pid)
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_forced"
    events = events_on_disk(ws, run_id)
    countdown = [e["data"]["seconds_remaining"] for e in events if e["type"] == "cancel_countdown"]
    assert countdown == [3, 2, 1]
    kinds = [e["type"] for e in events]
    assert kinds.index("cancel_requested") < kinds.index("cancel_countdown")
    assert max(i for i, k in enumerate(kinds) if k == "cancel_countdown") < kinds.index(
        "cancel_escalated"
    )
    assert kinds.index("cancel_escalated") < kinds.index("run_terminal")
    assert run_id not in index_ids(ws)


def test_grace_zero_kills_at_once(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(RF_TEST_MODE="ignore_sigterm")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    pid = wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "0")
    assert result.returncode == EXIT_FORCED, result.stdout + result.stderr
    assert not alive(pid)
    assert wait_result(ws, run_id)["state"] == "cancelled_forced"


def test_no_process_of_the_tree_survives(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(RF_TEST_MODE="grandchildren", RF_TEST_GRANDCHILDREN="4")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    tree_file = run_dir(ws, run_id) / "tree.json"
    wait_for(tree_file.exists, timeout=60)
    tree = json.loads(tree_file.read_text())
    pids = [tree["trainer"]] + [d["pid"] for d in tree["descendants"]]
    assert {d["role"] for d in tree["descendants"]} >= {"own_session", "grandchild"}
    assert all(alive(p) for p in pids)
    time.sleep(0.6)  # let the supervisor's periodic refresh record the tree
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "1")
    assert result.returncode == EXIT_FORCED, result.stdout + result.stderr
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
    assert wait_result(ws, run_id)["state"] == "cancelled_forced"


def test_workers_that_outlive_a_graceful_trainer_are_killed_with_it(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(
        RF_TEST_MODE="grandchildren", RF_TEST_GRANDCHILDREN="3", RF_TEST_TRAINER_TERM="exit"
    )
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    tree_file = run_dir(ws, run_id) / "tree.json"
    wait_for(tree_file.exists, timeout=60)
    tree = json.loads(tree_file.read_text())
    workers = [d["pid"] for d in tree["descendants"]]
    time.sleep(0.6)
    daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "10")
    wait_for(lambda: not any(alive(p) for p in workers), timeout=15)
    assert wait_result(ws, run_id)["state"] in ("cancelled_forced", "cancelled_graceful")


def test_training_that_wins_the_race_is_completed_and_indexed(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="finish_on_cancel")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5")
    assert result.returncode == EXIT_COMPLETED_DESPITE_CANCEL, result.stdout + result.stderr
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "completed" and outcome["cancel_requested"] is True
    wait_for(lambda: run_id in index_ids(ws), timeout=30)
    assert index_ids(ws).count(run_id) == 1


def test_cancel_of_a_queued_run_never_spawns_it(make_daemon: Callable[..., DaemonProcess]) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful")
    ws = trainer_workspace(daemon)
    first = start_detached(daemon, ws)
    second = start_detached(daemon, ws)
    active = daemon.ctl_json("active", "--workspace", str(ws))["runs"]
    states = {r["run_id"]: r["state"] for r in active}
    assert states[second] == "queued"
    result = daemon.ctl("cancel", second, "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    outcome = wait_result(ws, second)
    assert outcome["state"] == "cancelled_graceful"
    assert "never started" in outcome["reason"]
    assert not (run_dir(ws, second) / "trainer.pid").exists()
    kinds = [e["type"] for e in events_on_disk(ws, second)]
    assert "run_spawned" not in kinds and kinds[-1] == "run_terminal"
    wait_trainer_ready(ws, first)
    daemon.ctl("cancel", first, "--workspace", str(ws), "--grace", "5", check=True)
    time.sleep(0.5)
    assert not (run_dir(ws, second) / "trainer.pid").exists()  # still never spawned


def test_double_cancel_reports_the_cancel_in_progress_without_rearming(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="ignore_sigterm")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_trainer_ready(ws, run_id)
    # A grace long enough that the later clients' start-up on a busy machine cannot outlast it.
    first = daemon.ctl_json("cancel", run_id, "--workspace", str(ws), "--grace", "30", "--no-wait")
    assert first["already_cancelling"] is False
    second = daemon.ctl_json("cancel", run_id, "--workspace", str(ws), "--no-wait")
    assert second["already_cancelling"] is True
    assert second["deadline_in_s"] <= first["deadline_in_s"]
    longer = daemon.ctl_json("cancel", run_id, "--workspace", str(ws), "--grace", "60", "--no-wait")
    assert longer["deadline_in_s"] <= first["deadline_in_s"]  # never extended
    shorter = daemon.ctl_json(
        "cancel", run_id, "--workspace", str(ws), "--grace", "0.5", "--no-wait"
    )
    assert shorter["deadline_in_s"] <= 0.5
    assert wait_result(ws, run_id)["state"] == "cancelled_forced"
    kinds = [e["type"] for e in events_on_disk(ws, run_id)]
    assert kinds.count("cancel_requested") == 1


def test_cancel_of_a_finished_run_names_its_state(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="complete", RF_TEST_STEPS="1", RF_TEST_STEP_S="0")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    assert wait_result(ws, run_id)["state"] == "completed"
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["code"] == "RUN_NOT_ACTIVE" and "completed" in error["message"]


def test_cancel_errors_unknown_none_active_and_ambiguous(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful")
    ws = trainer_workspace(daemon, settings={"runforge.maxConcurrentRuns": 2})
    unknown = daemon.ctl("cancel", "20990101-000000-deadbeef", "--workspace", str(ws), "--json")
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["code"] == "RUN_NOT_FOUND"
    hostile = daemon.ctl("cancel", "../../etc", "--workspace", str(ws), "--json")
    assert hostile.returncode == 1 and json.loads(hostile.stdout)["code"] == "INVALID_RUN_ID"
    none = daemon.ctl("cancel", "--workspace", str(ws), "--json")
    assert none.returncode == 1 and json.loads(none.stdout)["code"] == "NO_ACTIVE_RUN"
    a, b = start_detached(daemon, ws), start_detached(daemon, ws)
    wait_trainer_ready(ws, a)
    wait_trainer_ready(ws, b)
    many = daemon.ctl("cancel", "--workspace", str(ws), "--json")
    error = json.loads(many.stdout)
    assert many.returncode == 1 and error["code"] == "AMBIGUOUS_ACTIVE_RUN"
    assert set(error["details"]["active"]) == {a, b}
    for run_id in (a, b):
        daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5", "--no-wait")
    for run_id in (a, b):
        assert wait_result(ws, run_id)["state"] == "cancelled_graceful"
    assert daemon.ctl("ping").returncode == 0


def test_cancel_without_run_id_cancels_the_active_run(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_trainer_ready(ws, run_id)
    result = daemon.ctl("cancel", "--grace", "5", cwd=ws)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_id in result.stdout
    assert wait_result(ws, run_id)["state"] == "cancelled_graceful"


def test_ctrl_c_while_following_train_cancels_gracefully(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful")
    ws = trainer_workspace(daemon)
    follower = subprocess.Popen(
        [sys.executable, "-m", "runforgectl", "train", "--workspace", str(ws)],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        runs = ws / ".ml" / "runs"
        wait_for(lambda: runs.is_dir() and any(runs.glob("*/trainer.pid")), timeout=60)
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == EXIT_CANCELLED_GRACEFUL_TRAIN, out + err
    assert "cancelling the run gracefully" in out
    run_id = next(runs.iterdir()).name
    assert wait_result(ws, run_id)["state"] == "cancelled_graceful"


def test_stopping_the_daemon_cancels_every_run_in_flight(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="1")
    ws = trainer_workspace(daemon, settings={"runforge.maxConcurrentRuns": 3})
    ids = [start_detached(daemon, ws) for _ in range(3)]
    pids = [wait_trainer_ready(ws, run_id) for run_id in ids]
    assert daemon.stop() == 0
    for run_id in ids:
        assert wait_result(ws, run_id)["state"] == "cancelled_graceful"
    assert not any(alive(p) for p in pids)
    daemon.assert_clean_runtime_dir()


def test_many_stubborn_trainers_are_cancelled_in_parallel(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    count = 6
    daemon = make_daemon(RF_TEST_MODE="ignore_sigterm")
    ws = trainer_workspace(
        daemon,
        settings={"runforge.maxConcurrentRuns": count, "runforge.cancelGraceSeconds": 2},
    )
    (daemon.config_dir).mkdir(parents=True, exist_ok=True)
    (daemon.config_dir / "config.json").write_text(json.dumps({"maxConcurrentRunsGlobal": count}))
    ids = [start_detached(daemon, ws) for _ in range(count)]
    pids = [wait_trainer_ready(ws, run_id) for run_id in ids]
    for run_id in ids:
        daemon.ctl("cancel", run_id, "--workspace", str(ws), "--no-wait", check=True)
    for run_id in ids:
        assert wait_result(ws, run_id)["state"] == "cancelled_forced"
    assert not any(alive(p) for p in pids)
    for run_id in ids:
        kinds = [e["type"] for e in events_on_disk(ws, run_id)]
        assert kinds.index("cancel_requested") < kinds.index("cancel_escalated")


def test_the_project_runner_cancelled_while_training_is_graceful(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    """The real runner on the large bundled dataset, cancelled mid-fit through the daemon:
    its own countdown, a valid marker naming the training step, partial artifacts."""
    daemon = make_daemon()
    ws = daemon.root / "real"
    ws.mkdir()
    daemon.ctl("trust", str(ws), check=True)
    daemon.ctl("sample-data", str(ws), check=True)
    # A forest: logistic regression converges on this data in well under a second.
    result = daemon.ctl_json(
        "train", "--workspace", str(ws), "--dataset", str(ws / "demo_large.csv"),
        "--model", "random_forest", "--detach",
    )  # fmt: skip
    run_id = result["run"]["run_id"]
    events_file = run_dir(ws, run_id) / "events.jsonl"
    wait_for(
        lambda: events_file.exists() and '"type":"train_progress"' in events_file.read_text(),
        timeout=120,
    )
    cancel = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "10")
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_graceful", outcome
    marker = json.loads((run_dir(ws, run_id) / ".cancelled").read_text())
    validate("cancelled.v1.0.0", marker)
    assert marker["step"] == "training" and marker["run_id"] == run_id
    assert outcome["partial_artifacts"] == marker.get("partial_artifacts", [])
    for path in marker.get("partial_artifacts", []):
        assert (ws / path).exists(), path
    events = events_on_disk(ws, run_id)
    kinds = [e["type"] for e in events]
    assert kinds.index("cancelling") < kinds.index("run_cancelled") < kinds.index("run_terminal")
    remaining = [e["data"]["seconds_remaining"] for e in events if e["type"] == "cancelling"]
    assert remaining and remaining == sorted(remaining, reverse=True)
    assert run_id not in index_ids(ws)


def test_a_cancel_before_the_trainer_announced_run_start_waits_for_it_and_is_graceful(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    # The trainer takes 5 s to start (a slow interpreter) before its handler is in place
    # and it announces run_start; a SIGTERM earlier would kill it by the default action.
    daemon = make_daemon(RF_TEST_MODE="graceful", RF_TEST_HANDLER_DELAY_S="5")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_graceful", outcome
    kinds = [e["type"] for e in events_on_disk(ws, run_id)]
    assert kinds.index("cancel_requested") < kinds.index("run_start")
    assert kinds.index("run_start") < kinds.index("cancelling") < kinds.index("run_cancelled")
    assert (run_dir(ws, run_id) / ".cancelled").is_file()


def test_a_trainer_that_never_announces_run_start_is_killed_at_the_deadline(
    make_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = make_daemon(RF_TEST_MODE="graceful", RF_TEST_HANDLER_DELAY_S="60")
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "1")
    assert result.returncode == EXIT_FORCED, result.stdout + result.stderr
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_forced"
    assert "grace deadline" in outcome["reason"]
