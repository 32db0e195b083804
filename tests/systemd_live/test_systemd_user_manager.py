"""RunForge under a real systemd user manager: ``systemctl --user restart runforged``
keeps a training run going (the upgrade path: ``KillMode=process`` leaves the monitors
alone, and the new daemon re-attaches), and ``systemctl --user stop runforged`` cancels it
gracefully.

No user manager runs on a CI machine or in this sandbox (PID 1 is not systemd), so the
test starts one: ``user_manager.sh`` gives ``systemd --user`` private mount and PID
namespaces with their own cgroup2 hierarchy and ``/run``, and the real ``runforgectl``
drives everything from ``driver.py`` inside them (the unit comes from
``runforgectl daemon install-service``; the run is a real random forest on the bundled
data). It is skipped, with the reason, where the machine cannot host a user manager:
not root, no ``unshare``, no systemd, or mounts refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import SESSION_MARKER, SESSION_MARKER_ENV, remove_tree, short_tempdir

HERE = Path(__file__).resolve().parent
CANNOT_HOST = 3  # user_manager.sh: this machine cannot host a user manager


@pytest.mark.timeout(600)
def test_a_service_restart_keeps_the_run_and_a_stop_cancels_it_gracefully() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give systemd --user its own namespaces")
    if not Path("/lib/systemd/systemd").exists():
        pytest.skip("systemd is not installed (apt-get install systemd)")
    home = short_tempdir()
    try:
        env = {**os.environ, SESSION_MARKER_ENV: SESSION_MARKER}
        done = subprocess.run(
            [
                "unshare", "--mount", "--pid", "--fork", "--mount-proc",
                str(HERE / "user_manager.sh"), str(home),
                sys.executable, str(HERE / "driver.py"), str(home / "ws"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )  # fmt: skip
        if done.returncode == CANNOT_HOST:
            pytest.skip(done.stderr.strip())
        assert done.returncode == 0, done.stderr[-4000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["active_after_start"] == "active"
        # restart mid-training: a new daemon, the same trainer, the run completes once
        assert report["trainer_alive_before_restart"]
        assert report["second_daemon"] not in (0, report["first_daemon"])
        assert report["trainer_alive_after_restart"]
        assert [state for _run, state in report["active_after_restart"]] == ["running"]
        assert report["first_run_state"] == "completed"
        assert report["first_run_seq_contiguous"]
        assert report["first_run_terminal_events"] == 1
        assert report["first_run_index_entries"] == 1
        # stop mid-training: the run is cancelled gracefully and nothing is left
        assert report["active_after_stop"] == "inactive"
        assert report["second_run_state"] == "cancelled_graceful"
        assert report["second_run_cancelled_marker"]
        assert report["leftover_processes"] == []
    finally:
        remove_tree(home)
