"""Recover Index and the orphan banner as a user meets them: runforgectl against the real
daemon, on workspaces whose runs were orphaned for real."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.contracts import validate
from tests.harness import (
    DaemonProcess,
    index_ids,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)


def orphaned_workspace(daemon: DaemonProcess) -> tuple[Path, str, str]:
    """A workspace with one indexed run and one orphan made by a real failed index write
    (``.ml/outputs`` replaced by a file, which even root cannot write into)."""
    ws = trainer_workspace(daemon)
    first = start_detached(daemon, ws)
    assert wait_result(ws, first)["state"] == "completed"
    outputs = ws / ".ml" / "outputs"
    saved = ws / "outputs.saved"
    shutil.move(outputs, saved)
    outputs.write_text("not a directory")
    second = start_detached(daemon, ws)
    outcome = wait_result(ws, second)
    assert outcome["state"] == "completed" and outcome["index_status"] == "orphaned"
    outputs.unlink()
    shutil.move(saved, outputs)
    return ws, first, second


def test_failed_index_write_leaves_a_marked_orphan_shown_by_every_command(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="complete", RF_TEST_STEPS="2", RF_TEST_STEP_S="0").start()
    ws, first, second = orphaned_workspace(daemon)
    marker = json.loads((ws / ".ml" / "runs" / second / ".index-orphan").read_text())
    validate("index-orphan.v1.0.0", marker)
    events = [
        json.loads(line)["type"]
        for line in (ws / ".ml" / "runs" / second / "events.jsonl").read_text().splitlines()
    ]
    assert "index_orphaned" in events
    listing = daemon.ctl_json("runs", "--workspace", str(ws))
    assert [o["run_id"] for o in listing["orphans"]] == [second]
    for command in (
        ["runs"],
        ["show", first],
        ["metrics", first],
        ["interpretability", first],
        ["export-md", first],
        ["status"],
    ):
        result = daemon.ctl(*command, "--workspace", str(ws))
        if command[0] == "interpretability" and result.returncode == 1:
            assert "runforgectl recover" in result.stdout or "ARTIFACT" in result.stderr
            continue
        assert "runforgectl recover" in result.stdout, (command, result.stdout, result.stderr)
        assert "1 run is on disk but missing from the index" in result.stdout
    human_runs = daemon.ctl("runs", "--workspace", str(ws)).stdout
    assert human_runs.index(second) < human_runs.index(first)  # orphans first


def test_recover_puts_orphans_back_idempotently_and_reports_it(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="complete", RF_TEST_STEPS="2", RF_TEST_STEP_S="0").start()
    ws, first, second = orphaned_workspace(daemon)
    report = daemon.ctl_json("recover", "--workspace", str(ws))
    assert [r["run_id"] for r in report["recovered"]] == [second]
    assert report["recovered"][0]["reason"] == "index_orphan_marker"
    assert report["already_indexed"] == 1 and report["scanned_run_dirs"] == 2
    assert report["skipped"] == [] and report["cancelled_excluded"] == []
    assert sorted(index_ids(ws)) == sorted([first, second])
    validate("index.v1.0.0", json.loads((ws / ".ml/outputs/index.json").read_text()))
    assert not (ws / ".ml" / "runs" / second / ".index-orphan").exists()
    assert daemon.ctl_json("runs", "--workspace", str(ws))["orphans"] == []

    again = daemon.ctl_json("recover", "--workspace", str(ws))
    assert again["recovered"] == [] and again["already_indexed"] == 2
    assert sorted(index_ids(ws)) == sorted([first, second])

    human = daemon.ctl("recover", "--workspace", str(ws))
    assert human.returncode == 0
    assert "No runs needed recovery." in human.stdout
    assert "run folders scanned" in human.stdout
    markdown = daemon.ctl("recover", "--workspace", str(ws), "--markdown").stdout
    assert markdown.startswith("# Recovery report")
    assert "## Recovered" in markdown and "## Skipped" in markdown


def test_runs_recover_recovers_then_lists(daemon_factory: Callable[..., DaemonProcess]) -> None:
    daemon = daemon_factory(RF_TEST_MODE="complete", RF_TEST_STEPS="2", RF_TEST_STEP_S="0").start()
    ws, _first, second = orphaned_workspace(daemon)
    result = daemon.ctl("runs", "--recover", "--workspace", str(ws))
    assert result.returncode == 0
    assert "recovered 1 run(s)" in result.stdout
    assert "missing from the index" not in result.stdout
    assert second in result.stdout


def test_cancelled_runs_stay_out_and_daemon_answers_during_recovery(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="graceful").start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    wait_for((ws / ".ml" / "runs" / run_id / "trainer.pid").exists, timeout=60)
    daemon.ctl("cancel", run_id, "--workspace", str(ws), "--grace", "5", check=True)
    assert wait_result(ws, run_id)["state"] == "cancelled_graceful"
    report = daemon.ctl_json("recover", "--workspace", str(ws))
    assert [c["run_id"] for c in report["cancelled_excluded"]] == [run_id]
    assert report["recovered"] == []
    listing = daemon.ctl_json("runs", "--workspace", str(ws))
    assert [r["state"] for r in listing["runs"] if r["run_id"] == run_id] == ["cancelled_graceful"]


def test_corrupt_index_is_kept_aside_and_rebuilt(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="complete", RF_TEST_STEPS="2", RF_TEST_STEP_S="0").start()
    ws = trainer_workspace(daemon)
    run_id = start_detached(daemon, ws)
    assert wait_result(ws, run_id)["state"] == "completed"
    index = ws / ".ml" / "outputs" / "index.json"
    index.write_text('{"schema_version": "1.0.0", "runs": [')
    report = daemon.ctl_json("recover", "--workspace", str(ws))
    assert report["corrupt_index_kept_as"], report
    kept = ws / report["corrupt_index_kept_as"][0]
    assert kept.read_text() == '{"schema_version": "1.0.0", "runs": ['
    assert index_ids(ws) == [run_id]
