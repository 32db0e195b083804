"""Figure 18: runs outlive the daemon. Ten runs in flight, each under its per-run monitor;
the daemon is SIGKILLed and a new one started, a few times over: how long until it
answers again, and what one monitor costs in memory and start-up."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.processes import rss_mib, wait_until
from benchmarks.results import Figure, Row
from benchmarks.runforged_process import RunforgedProcess
from benchmarks.stats import summary
from runforge_protocol import messages as m
from runforged.monitor import MONITOR_RECORD, read_monitor_record

RUNS = 10
RESTART_GOAL_MS = 1000.0
RSS_GOAL_MIB = 15.0

LIMITS = (
    "A restart is a new Python process: interpreter start and the daemon's imports "
    "(pyzmq, msgspec, asyncio, structlog, psutil: about 0.35 s of CPU on an idle core), "
    "then binding the sockets; the runs in flight are taken over in tasks after the "
    "daemon answers, so their number adds little. The monitor is the standard-library "
    "interpreter started with -I -S and one module: its resident set is mostly the "
    "interpreter itself."
)


def _monitor(root: Path, run_id: str) -> dict[str, Any]:
    """The run's monitor record, once the monitor has written it."""
    record_dir = root / "state" / "runs" / run_id

    def ready() -> dict[str, Any] | None:
        if not (record_dir / MONITOR_RECORD).exists():
            return None
        return read_monitor_record(str(record_dir))

    return wait_until(ready, 60, f"the monitor of {run_id}", interval_s=0.005)


def _created(start_ticks: int) -> float:
    """A process's start as UNIX time, to the clock tick (psutil's create_time() adds
    the boot time in whole seconds, up to a second off)."""
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def _in_flight(ours: RunforgedProcess, workspace: Path) -> int:
    result = ours.client.result(m.Active(workspace=str(workspace)))
    assert isinstance(result, m.ActiveResult)
    return len(result.runs)


def run(quick: bool) -> list[Figure]:
    restarts = 3 if quick else 10
    # Slow graceful trainers (they run until cancelled), more than ten allowed at once.
    trainer_env = {"RF_TEST_MODE": "graceful", "RF_TEST_STEPS": "100000", "RF_TEST_STEP_S": "1"}
    with RunforgedProcess(trainer_env, {"maxConcurrentRunsGlobal": RUNS + 2}) as ours:
        ours.start()
        workspace = ours.trainer_workspace("ws", {"runforge.maxConcurrentRuns": RUNS})
        run_ids = []
        monitors = []
        startup_ms = []
        for _ in range(RUNS):
            run_id = ours.train(workspace)
            run_ids.append(run_id)
            record = _monitor(ours.root, run_id)
            ours.trainer_pid(workspace, run_id)
            monitors.append(int(record["pid"]))
            # Process creation to its record written: the monitor's own start-up (the
            # trainer is spawned before the record is written, so this includes the fork).
            written = os.stat(ours.root / "state" / "runs" / run_id / MONITOR_RECORD).st_mtime
            startup_ms.append((written - _created(int(record["start_ticks"]))) * 1000)
        time.sleep(1.0)  # a few events each, so each monitor has relayed and persisted some
        rss = [rss_mib(pid) for pid in monitors]
        uss = [float(psutil.Process(pid).memory_full_info().uss) / (1 << 20) for pid in monitors]
        daemon_rss = rss_mib(ours.pid)
        restart_ms = []
        for _ in range(restarts):
            assert ours.proc is not None
            ours.proc.send_signal(signal.SIGKILL)
            ours.proc.wait(30)
            restart_ms.append(ours.start() * 1000)
            wait_until(
                lambda: _in_flight(ours, workspace) == RUNS or None,
                60,
                "the runs to be taken over",
                interval_s=0.01,
            )
        alive = sum(1 for pid in monitors if psutil.pid_exists(pid))
        for run_id in run_ids:
            ours.client.result(m.Cancel(run_id=run_id, grace_s=0.0))
        ours.wait_terminal(workspace, set(run_ids))
    restart = summary(restart_ms)
    worst_rss = max(rss)
    return [
        Figure(
            number=18,
            title=f"Runs outlive the daemon: restart with {RUNS} runs in flight, per-run monitor",
            rows=[
                Row(
                    measure=f"daemon SIGKILL → new daemon answers, {RUNS} runs in flight, median",
                    ours=restart["median"],
                    unit="ms",
                    goal=f"< {RESTART_GOAL_MS:,.0f} ms",
                    met=restart["median"] < RESTART_GOAL_MS,
                ),
                Row(
                    measure=f"the same, worst of {restarts}",
                    ours=max(restart_ms),
                    unit="ms",
                    goal=f"< {RESTART_GOAL_MS:,.0f} ms",
                    met=max(restart_ms) < RESTART_GOAL_MS,
                ),
                Row(
                    measure="per-run monitor RSS, worst of ten",
                    ours=worst_rss,
                    unit="MiB",
                    goal=f"≤ {RSS_GOAL_MIB:g} MiB",
                    met=worst_rss <= RSS_GOAL_MIB,
                ),
                Row(
                    measure="per-run monitor USS (memory only it uses), median",
                    ours=sorted(uss)[len(uss) // 2],
                    unit="MiB",
                    goal="(context)",
                    met=None,
                ),
                Row(
                    measure="monitor start → its record written (trainer spawned), median",
                    ours=sorted(startup_ms)[len(startup_ms) // 2],
                    unit="ms",
                    goal="(context)",
                    met=None,
                ),
            ],
            details={
                "restart_ms": restart_ms,
                "monitor_rss_mib": rss,
                "monitor_uss_mib": uss,
                "monitor_startup_ms": startup_ms,
                "daemon_rss_mib": daemon_rss,
                "monitors_alive_after_restarts": alive,
            },
            limits=LIMITS,
            notes=[
                f"All {alive} of {RUNS} monitors were alive after {restarts} daemon "
                f"SIGKILLs; every run was then cancelled through the last daemon. The "
                f"daemon itself held {daemon_rss:.1f} MiB with the ten runs attached.",
            ],
        )
    ]
