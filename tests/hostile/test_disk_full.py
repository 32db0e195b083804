"""A workspace on a full disk (a real, small tmpfs filled with a file): ``train`` answers a
structured error that names the cause, leaves no empty run folder behind, and works again
once space is freed."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import error_of
from tests.harness import DaemonProcess, start_detached, trainer_workspace, wait_result


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its filesystem has no space left."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        chunk = b"\0" * (64 << 10)
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.fixture
def small_disk(daemon: DaemonProcess) -> Iterator[Path]:
    mount_point = daemon.root / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_train_on_a_full_disk_is_a_structured_error_and_leaves_no_run_folder(
    daemon: DaemonProcess, small_disk: Path
) -> None:
    workspace = trainer_workspace(daemon, "small/ws")
    filler = fill(small_disk)

    result = daemon.ctl("train", "--workspace", str(workspace), "--detach", "--json")
    error = error_of(result)
    assert error["code"] == "WORKSPACE_UNWRITABLE", error
    assert "No space left on device" in error["message"]
    assert error["details"]["errno"] == "ENOSPC"
    runs = workspace / ".ml" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert daemon.ctl_json("active")["runs"] == []

    # Space freed: the same workspace trains again.
    filler.unlink()
    run_id = start_detached(daemon, workspace)
    result = wait_result(workspace, run_id)
    logs = runs / run_id / "logs.txt"
    assert result["state"] == "completed", (result, logs.read_text() if logs.exists() else "")
    assert [p.name for p in runs.iterdir()] == [run_id]
