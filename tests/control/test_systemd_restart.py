"""Under systemd, SIGTERM means stop or restart: the daemon tells them apart from the job
systemd is running for its unit (a restart keeps runs, a stop cancels them)."""

from __future__ import annotations

from pathlib import Path

from runforged.sdnotify import own_unit, restart_job_pending, stopped_for_restart


def test_a_restart_job_of_our_unit_keeps_runs_and_anything_else_does_not() -> None:
    jobs = "1201 runforged.service restart running\n1202 default.target start waiting\n"
    assert restart_job_pending("runforged.service", jobs)
    assert not restart_job_pending("other.service", jobs)
    assert not restart_job_pending("runforged.service", "1201 runforged.service stop running\n")
    assert not restart_job_pending("runforged.service", "")


def test_the_unit_is_read_from_the_cgroup_path(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/runforged.service\n"
    )
    assert own_unit(cgroup) == "runforged.service"
    cgroup.write_text("0::/\n")
    assert own_unit(cgroup) is None


def test_outside_systemd_a_sigterm_is_never_taken_for_a_restart() -> None:
    assert stopped_for_restart({}) is False
