"""A Ray run's logs.txt is kept as a local run's: capped at ``maxLogBytes`` with the same
note and one ``logs_truncated`` event, over-long lines cut the same way."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness import (
    SESSION_MARKER_ENV,
    DaemonProcess,
    events_on_disk,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_result,
)
from tests.ray.conftest import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

CAP = 2_000_000


def test_a_ray_runs_logs_are_capped_and_cut_as_a_local_runs(
    daemon_factory: Callable[..., DaemonProcess], ray_head: RayHead
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="flood_stdout", RF_TEST_FLOOD_BYTES="8000000").start()
    settings = {
        "runforge.executor": "ray",
        "runforge.rayAddress": ray_head.address,
        "runforge.rayEnvVars": ["RF_TEST_*", SESSION_MARKER_ENV],
        "runforge.maxLogBytes": CAP,
    }
    ws = trainer_workspace(daemon, "ws", settings=settings)
    run_id = start_detached(daemon, ws)
    outcome = wait_result(ws, run_id, timeout=240)
    assert outcome["state"] == "completed", outcome["reason"]
    logs = (run_dir(ws, run_id) / "logs.txt").read_bytes()
    assert len(logs) <= CAP + 1000
    assert f"reached its cap of {CAP} bytes".encode() in logs
    assert logs.splitlines()[-1].endswith(b"were not written to logs.txt]")
    events = events_on_disk(ws, run_id)
    assert [e["run_seq"] for e in events] == list(range(1, len(events) + 1))
    truncated = [e for e in events if e["type"] == "logs_truncated"]
    assert len(truncated) == 1 and truncated[0]["data"]["max_log_bytes"] == CAP
    kinds = [e["type"] for e in events]
    assert kinds.index("logs_truncated") < kinds.index("run_terminal")
    assert "artifacts_written" in kinds  # the trainer's events pass the cap


def test_an_over_long_line_of_a_ray_run_is_cut_with_the_local_note(
    daemon_factory: Callable[..., DaemonProcess], ray_head: RayHead
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="flood_stdout", RF_TEST_FLOOD_BYTES="1000000").start()
    settings = {
        "runforge.executor": "ray",
        "runforge.rayAddress": ray_head.address,
        "runforge.rayEnvVars": ["RF_TEST_*", SESSION_MARKER_ENV],
    }
    ws = trainer_workspace(daemon, "ws", settings=settings)
    run_id = start_detached(daemon, ws)
    outcome = wait_result(ws, run_id, timeout=240)
    assert outcome["state"] == "completed", outcome["reason"]
    lines = (run_dir(ws, run_id) / "logs.txt").read_bytes().splitlines()
    cut = [line for line in lines if line.endswith(b"[runforge: line cut at 1048576 bytes]")]
    assert len(cut) == 1
    assert max(len(line) for line in lines) <= (1 << 20) + 100
    # The 3 MiB line's rest did not become lines of its own.
    assert all(len(line) < 1000 for line in lines if line not in cut)
    assert "invalid_event_line" not in [e["type"] for e in events_on_disk(ws, run_id)]
