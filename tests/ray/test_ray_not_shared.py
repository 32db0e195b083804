"""A cluster that cannot see the workspace at the daemon's path is refused, end to end.

The session's Ray head runs in a private mount namespace in which ``head.unshared`` is an
empty tmpfs (``tests/ray/conftest.py``): a workspace created there by the test is on this
machine's disk for the daemon, and absent for every process of the cluster, the job's
entrypoint included, as on a node that does not mount the shared filesystem.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runforged.ray_jobs import JobStatus
from tests.harness import (
    SESSION_MARKER_ENV,
    DaemonProcess,
    events_on_disk,
    index_ids,
    remove_tree,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_result,
)
from tests.ray.conftest import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]


def tree(folder: Path) -> set[str]:
    """Every path below ``folder``, relative, symlinks not followed."""
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.add(str(Path(root, name).relative_to(folder)))
    return found


@pytest.fixture
def hidden_workspace_parent(ray_head: RayHead) -> Iterator[Path]:
    if ray_head.unshared is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no private mount namespace here: cannot give Ray a different view")
        pytest.skip("this machine allows no private mount namespace (unshare --mount)")
    parent = ray_head.unshared / uuid.uuid4().hex[:8]
    parent.mkdir()
    try:
        yield parent
    finally:
        remove_tree(parent)


def test_a_cluster_that_cannot_see_the_workspace_is_refused_and_nothing_runs(
    daemon_factory: Callable[..., DaemonProcess],
    ray_head: RayHead,
    hidden_workspace_parent: Path,
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="complete").start()
    settings = {
        "runforge.executor": "ray",
        "runforge.rayAddress": ray_head.address,
        "runforge.rayEnvVars": ["RF_TEST_*", SESSION_MARKER_ENV],
    }
    ws = trainer_workspace(daemon, "ws", settings=settings, parent=hidden_workspace_parent)
    # The set-up is real: the daemon sees the workspace, the cluster's processes do not.
    assert (ws / "data.csv").is_file()
    assert not ray_head.cluster_view(ws).exists()
    assert ray_head.cluster_view(ray_head.temp_dir).is_dir()
    before_ws = tree(ws)

    run_id = start_detached(daemon, ws)
    outcome = wait_result(ws, run_id, timeout=180)

    assert outcome["state"] == "failed", outcome
    reason = outcome["reason"]
    assert "WORKSPACE_NOT_SHARED" in reason, reason
    assert str(run_dir(ws, run_id)) in reason, reason
    # Ray ran the entrypoint, which found no run folder and refused: the job failed.
    info = ray_head.client().info(run_id)
    assert info is not None and info.status is JobStatus.FAILED
    # Nothing trained: no trainer started, no runner event, no artifact, no index entry.
    events = events_on_disk(ws, run_id)
    kinds = [e["type"] for e in events]
    assert kinds == ["run_queued", "run_spawned", "run_terminal"], kinds
    # run_spawned of a Ray run is the job's submission: no trainer pid on this machine.
    assert events[1]["data"]["pid"] is None
    folder = run_dir(ws, run_id)
    assert not (folder / "trainer.pid").exists()
    assert not (folder / "run.json").exists() and not (folder / "model.pkl").exists()
    assert not (folder / ".executor" / "output").exists()
    assert not (folder / ".executor" / "exit.json").exists()
    assert index_ids(ws) == []
    # Nothing written outside the workspace: beside it nothing new, and on the cluster's
    # side of the path (its own, empty, view) nothing at all.
    assert tree(hidden_workspace_parent) == {"ws"} | {f"ws/{p}" for p in tree(ws)}
    assert tree(ray_head.cluster_view(ray_head.unshared)) == set()
    new_in_ws = tree(ws) - before_ws
    assert all(p.startswith(".ml/") or p == ".ml" for p in new_in_ws), new_in_ws
    # The daemon serves on, and says the same through its API.
    assert daemon.ctl("ping").returncode == 0
    shown = daemon.ctl_json("show", run_id, "--workspace", str(ws))
    assert shown["run"]["state"] == "failed"
    assert daemon.ctl_json("active")["runs"] == []
