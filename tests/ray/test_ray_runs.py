"""Runs on a real Ray cluster (a local head on 127.0.0.1) look exactly like local runs:
the same run folder, events and replay, cancel semantics, terminal states and index.

The trainer is the purpose-built ``rf_test_trainer``; its ``RF_TEST_*`` switches reach it
on the cluster through the workspace's ``rayEnvVars`` (as would ``WANDB_*`` for a user),
and so does the session marker, so the no-leak check covers trainers Ray started too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runforged.ray_jobs import JobStatus, RayJobsClient
from tests.harness import (
    SESSION_MARKER_ENV,
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
from tests.ray.conftest import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

EXIT_FORCED = 10
# A resource no node of the test head has: a job asking for it stays PENDING.
MISSING_RESOURCE = "runforge_test_missing_resource"


def ray_workspace(daemon: DaemonProcess, head: RayHead, name: str = "ws", **settings: Any) -> Path:
    document = {
        "runforge.executor": "ray",
        "runforge.rayAddress": head.address,
        "runforge.rayEnvVars": ["RF_TEST_*", SESSION_MARKER_ENV],
    }
    document.update({f"runforge.{k}": v for k, v in settings.items()})
    return trainer_workspace(daemon, name, settings=document)


def trainer_pid(workspace: Path, run_id: str, timeout: float = 120) -> int:
    pid_file = run_dir(workspace, run_id) / "trainer.pid"
    wait_for(pid_file.exists, timeout=timeout)
    return int(pid_file.read_text().strip())


def job_status(head: RayHead, run_id: str) -> JobStatus | None:
    info = head.client().info(run_id)
    return info.status if info else None


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    seqs = [e["run_seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


@pytest.fixture
def make_daemon(daemon_factory: Callable[..., DaemonProcess]) -> Callable[..., DaemonProcess]:
    def make(**env: str) -> DaemonProcess:
        return daemon_factory(**env).start()

    return make


RayRun = Callable[..., tuple[DaemonProcess, Path, str]]


@pytest.fixture
def ray_run(make_daemon: Callable[..., DaemonProcess], ray_head: RayHead) -> RayRun:
    """A started daemon whose trainers run in ``env``'s mode, a workspace whose runs go
    to the Ray head, and one run started there."""

    def start(**env: str) -> tuple[DaemonProcess, Path, str]:
        daemon = make_daemon(**env)
        ws = ray_workspace(daemon, ray_head)
        return daemon, ws, start_detached(daemon, ws)

    return start


def test_a_ray_run_completes_and_is_indexed_like_a_local_one(
    ray_run: RayRun, ray_head: RayHead
) -> None:
    daemon, ws, run_id = ray_run(RF_TEST_MODE="complete", RF_TEST_STEPS="5")
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "completed", outcome["reason"]
    assert outcome["exit_code"] == 0
    assert index_ids(ws) == [run_id]
    events = events_on_disk(ws, run_id)
    assert_contiguous(events)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["run_queued", "run_spawned", "run_start"]
    assert kinds.count("train_progress") == 5
    assert kinds[-3:] == ["artifacts_written", "index_updated", "run_terminal"]
    assert all(e["run_id"] == run_id and e["workspace"] == str(ws) for e in events)
    # The same replay as a local run's, through the daemon.
    replay = daemon.ctl("events", "--workspace", str(ws), "--run", run_id, "--json")
    assert [e["run_seq"] for e in json_lines(replay.stdout)] == [e["run_seq"] for e in events]
    assert (run_dir(ws, run_id) / "run.json").exists()
    # The job is Ray's own, under the run id, with the run id in its metadata.
    info = ray_head.client().info(run_id)
    assert info is not None and info.status is JobStatus.SUCCEEDED
    assert info.metadata["runforge_run_id"] == run_id
    shown = daemon.ctl_json("show", run_id, "--workspace", str(ws))
    assert shown["run"]["state"] == "completed"


def test_graceful_cancel_on_ray_signals_the_trainer_only_and_keeps_its_marker(
    ray_run: RayRun,
) -> None:
    daemon, ws, run_id = ray_run(RF_TEST_MODE="graceful", RF_TEST_FLUSH_S="1")
    trainer_pid(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cancelled_graceful" in result.stdout
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_graceful", outcome
    assert outcome["partial_artifacts"], outcome
    assert (run_dir(ws, run_id) / ".cancelled").exists()
    assert run_id not in index_ids(ws)
    events = events_on_disk(ws, run_id)
    assert_contiguous(events)
    kinds = [e["type"] for e in events]
    assert kinds.index("cancel_requested") < kinds.index("cancelling")
    assert kinds.index("cancelling") < kinds.index("run_cancelled") < kinds.index("run_terminal")
    assert "cancel_escalated" not in kinds


def test_forced_cancel_on_ray_kills_the_tree_at_the_deadline(
    ray_run: RayRun,
) -> None:
    daemon, ws, run_id = ray_run(RF_TEST_MODE="ignore_sigterm")
    pid = trainer_pid(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "2", "--json")
    assert result.returncode == EXIT_FORCED, result.stdout + result.stderr
    streamed = [e["type"] for e in json_lines(result.stdout)]
    assert "cancel_escalated" in streamed and streamed[-1] == "run_terminal"
    assert not alive(pid)
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "cancelled_forced", outcome
    events = events_on_disk(ws, run_id)
    countdown = [e["data"]["seconds_remaining"] for e in events if e["type"] == "cancel_countdown"]
    assert countdown == [2, 1]
    assert run_id not in index_ids(ws)


def test_cancel_of_a_run_pending_on_the_cluster_ends_it_and_it_never_trains(
    make_daemon: Callable[..., DaemonProcess], ray_head: RayHead
) -> None:
    daemon = make_daemon(RF_TEST_MODE="complete")
    ws = ray_workspace(daemon, ray_head, rayResources={MISSING_RESOURCE: 1})
    run_id = start_detached(daemon, ws)
    wait_for(lambda: job_status(ray_head, run_id) is JobStatus.PENDING, timeout=60)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = wait_result(ws, run_id, timeout=30)
    assert outcome["state"] == "cancelled_graceful", outcome
    assert "pending" in outcome["reason"]
    assert not (run_dir(ws, run_id) / "trainer.pid").exists()
    assert daemon.ctl_json("active")["runs"] == []


def test_a_failing_trainer_on_ray_is_failed_with_its_reason(
    ray_run: RayRun,
) -> None:
    _, ws, run_id = ray_run(RF_TEST_MODE="fail")
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "failed", outcome
    assert outcome["exit_code"] == 1
    assert "run_failed" in [e["type"] for e in events_on_disk(ws, run_id)]
    assert index_ids(ws) == []


def test_a_sigkilled_daemon_reattaches_to_the_ray_job_and_loses_no_event(
    ray_run: RayRun,
) -> None:
    daemon, ws, run_id = ray_run(RF_TEST_MODE="complete", RF_TEST_STEPS="40", RF_TEST_STEP_S="0.1")

    def progress_seen() -> bool:
        path = run_dir(ws, run_id) / "events.jsonl"
        return path.exists() and b"train_progress" in path.read_bytes()

    wait_for(progress_seen, timeout=120)
    daemon.kill_hard()
    time.sleep(1.0)  # the trainer goes on without any daemon
    daemon.start()
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "completed", outcome["reason"]
    assert index_ids(ws) == [run_id]
    events = events_on_disk(ws, run_id)
    assert_contiguous(events)  # no gap, no duplicate across the restart
    progress = [e["data"]["epoch"] for e in events if e["type"] == "train_progress"]
    assert progress == sorted(set(progress)) and len(progress) == 40
    assert [e["type"] for e in events].count("run_terminal") == 1
    # A follower resuming after the restart sees the end.
    follow = daemon.ctl("events", "--workspace", str(ws), "--run", run_id, "--since", "3")
    assert follow.returncode == 0, follow.stderr


def test_a_ray_run_that_ended_while_no_daemon_ran_is_classified_at_the_next_start(
    ray_run: RayRun, ray_head: RayHead
) -> None:
    daemon, ws, run_id = ray_run(RF_TEST_MODE="complete", RF_TEST_STEPS="20", RF_TEST_STEP_S="0.1")
    trainer_pid(ws, run_id)
    daemon.kill_hard()
    wait_for(lambda: job_status(ray_head, run_id) is JobStatus.SUCCEEDED, timeout=120)
    assert not (run_dir(ws, run_id) / "result.json").exists()
    daemon.start()
    outcome = wait_result(ws, run_id)
    assert outcome["state"] == "completed", outcome["reason"]
    assert index_ids(ws) == [run_id]
    events = events_on_disk(ws, run_id)
    assert_contiguous(events)
    kinds = [e["type"] for e in events]
    assert kinds.count("train_progress") == 20 and kinds.count("run_terminal") == 1


def test_a_cancel_asked_before_a_daemon_crash_is_carried_out_after_it(
    ray_run: RayRun,
) -> None:
    daemon, ws, run_id = ray_run(RF_TEST_MODE="ignore_sigterm")
    pid = trainer_pid(ws, run_id)
    result = daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "30", "--no-wait")
    assert result.returncode == 0, result.stdout + result.stderr
    daemon.kill_hard()
    daemon.start()
    outcome = wait_result(ws, run_id, timeout=180)
    assert outcome["state"] == "cancelled_forced", outcome["reason"]
    assert outcome["cancel_requested"] is True
    assert not alive(pid)
    assert_contiguous(events_on_disk(ws, run_id))


def test_an_untrusted_workspace_submits_nothing_to_the_cluster(
    daemon: DaemonProcess, ray_head: RayHead
) -> None:
    ws = ray_workspace(daemon, ray_head)
    daemon.ctl("untrust", str(ws), check=True)
    before = {job["submission_id"] for job in _jobs(ray_head.client())}
    result = daemon.ctl("train", "--workspace", str(ws), "--detach", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["code"] == "WORKSPACE_NOT_TRUSTED"
    assert not (ws / ".ml" / "runs").exists() or not any((ws / ".ml" / "runs").iterdir())
    after = [job for job in _jobs(ray_head.client()) if job["submission_id"] not in before]
    assert after == []


def test_an_unreachable_cluster_is_a_clear_error_and_loses_nothing(
    make_daemon: Callable[..., DaemonProcess], ray_head: RayHead
) -> None:
    daemon = make_daemon(RF_TEST_MODE="complete")
    ws = ray_workspace(daemon, ray_head)
    done = start_detached(daemon, ws)
    assert wait_result(ws, done)["state"] == "completed"
    settings = json.loads((ws / ".vscode" / "settings.json").read_text())
    settings["runforge.rayAddress"] = "http://127.0.0.1:9"  # nothing listens there
    (ws / ".vscode" / "settings.json").write_text(json.dumps(settings))
    result = daemon.ctl("train", "--workspace", str(ws), "--detach", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    error = json.loads(result.stdout)
    assert error["code"] == "CLUSTER_UNREACHABLE"
    assert error["details"]["address"] == "http://127.0.0.1:9"
    assert error["remediation"]
    # Nothing lost: the earlier run and the index are as they were, no new run folder.
    assert index_ids(ws) == [done]
    assert sorted(p.name for p in (ws / ".ml" / "runs").iterdir()) == [done]
    assert daemon.ctl("ping").returncode == 0


def _jobs(client: RayJobsClient) -> list[dict[str, Any]]:
    return client.list_jobs()
