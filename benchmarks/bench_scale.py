"""Figures 7, 8 and 9: scale. Recovery of 10^3..10^5 synthetic run folders and the index
writer (through ``bench_recovery``, which measures each in a fresh child process), then
the daemon's memory idle and with the 100,000-run workspace loaded, beside idle circusd
and supervisord."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_recovery
from benchmarks.peers import Circus, Supervisor
from benchmarks.processes import peak_rss_mib, rss_mib
from benchmarks.results import Figure, Row
from benchmarks.runforged_process import RunforgedProcess
from runforge_protocol import messages as m

FULL_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (100, 1_000)
DISK_CHECK_SIZE = 1_000
# Creating a file costs ~4 ms on this machine's disk (6 minutes for 100,000 folders of
# five files): the synthetic workspaces live on tmpfs when there is one.
TMPFS = Path("/dev/shm")
SETTLE_S = 1.0

RECOVERY_LIMITS = (
    "Reading and decoding each folder's run.json, request.json and result.json (one "
    "open/read/close each, relative to the open runs folder, no listing of a complete "
    "run's folder; warm page cache), then one durable index write. The run "
    "folders are on tmpfs (creating files on this machine's disk costs ~4 ms each, which "
    "only the set-up would pay); `details.disk_check` recovers the same 1,000 folders from "
    "the disk for comparison. Each size is the median of three recoveries into an empty "
    "index. Per-folder time should not grow with the number of folders."
)
INDEX_LIMITS = (
    "One commit rewrites the whole index (encode, write a temp file, fsync, rename, fsync "
    "the directory), so its cost grows with the index size: the encode and the write of "
    "~40 MB at 100,000 entries, plus the disk's fsync latency. A burst of completions is "
    "coalesced into few rewrites."
)
MEMORY_LIMITS = (
    "Idle: the interpreter plus the daemon's imports (asyncio, pyzmq, msgspec, structlog, "
    "psutil) and two ZeroMQ sockets. Loaded: the workspace's index held in memory (one "
    "struct per run) plus what scanning 100,000 folders leaves in the allocator."
)


def _scratch_root(prefix: str) -> Path:
    base = TMPFS if TMPFS.is_dir() else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _recover(workspace: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recovery into an empty index (every folder an orphan; the median of
    ``bench_recovery.RECOVERIES``), then again (all indexed)."""
    first = bench_recovery._median_recovery(workspace)
    second = bench_recovery._measure("recover", str(workspace))
    return first, second


def recovery(sizes: tuple[int, ...], workspace: Path, disk_check: bool) -> Figure:
    results: dict[int, dict[str, Any]] = {}
    made = 0
    for size in sizes:
        started = time.perf_counter()
        bench_recovery.make_run_folders(workspace, made, size)
        made = size
        first, second = _recover(workspace)
        assert first["recovered"] == size and second["already_indexed"] == size
        results[size] = {
            "created_s": time.perf_counter() - started,
            "orphans": first,
            "indexed": second,
            "us_per_folder": first["seconds"] / size * 1e6,
        }
    details: dict[str, Any] = {"sizes": results, "folders_on": str(workspace.parent)}
    if disk_check:
        disk_root = Path(tempfile.mkdtemp(prefix="rf-bench-disk-"))
        try:
            bench_recovery.make_run_folders(disk_root / "ws", 0, DISK_CHECK_SIZE)
            first, second = _recover(disk_root / "ws")
            details["disk_check"] = {"size": DISK_CHECK_SIZE, "orphans": first, "indexed": second}
        finally:
            shutil.rmtree(disk_root, ignore_errors=True)
    largest, smallest = results[sizes[-1]], results[sizes[0]]
    flatness = largest["us_per_folder"] / smallest["us_per_folder"]
    seconds = largest["orphans"]["seconds"]
    return Figure(
        number=7,
        title="Recover Index of synthetic run folders (all orphans)",
        rows=[
            Row(
                measure=f"recover {sizes[-1]:,} folders",
                ours=seconds,
                unit="s",
                goal="≤ 5 s" if sizes[-1] == 100_000 else "(quick: 100,000 not run)",
                met=seconds <= 5 if sizes[-1] == 100_000 else None,
            ),
            Row(
                measure=f"recovery time per folder at {sizes[-1]:,}",
                ours=largest["us_per_folder"],
                unit="µs",
                peers={f"at {size:,}": results[size]["us_per_folder"] for size in sizes[:-1]},
                ratio=flatness,
                ratio_of=f"at {sizes[0]:,}",
                goal="flat (≤ 1.5×)",
                met=flatness <= 1.5,
            ),
            Row(
                measure=f"recovery peak RSS at {sizes[-1]:,}",
                ours=largest["orphans"]["rss_mib"],
                unit="MiB",
                goal="(context)",
                met=None,
            ),
        ],
        details=details,
        limits=RECOVERY_LIMITS,
    )


def index_commits(sizes: tuple[int, ...]) -> Figure:
    root = Path(tempfile.mkdtemp(prefix="rf-bench-index-"))  # on disk: fsync is measured
    try:
        commits: dict[int, dict[str, Any]] = {}
        for size in sizes:
            workspace = root / f"commit-{size}"
            bench_recovery.make_index(workspace, size)
            commits[size] = bench_recovery._measure("commit", str(workspace), str(size))
            shutil.rmtree(workspace)
        bench_recovery.make_index(root / "burst", 1_000)
        burst = bench_recovery._measure("burst", str(root / "burst"), "1000")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    largest = sizes[-1]
    commit_ms = commits[largest]["commit_median_s"] * 1000
    return Figure(
        number=8,
        title="Index commit latency; index rewrites for a burst of completions",
        rows=[
            Row(
                measure=f"one durable index commit, {largest:,} entries (median)",
                ours=commit_ms,
                unit="ms",
                peers={
                    f"at {size:,}": commits[size]["commit_median_s"] * 1000 for size in sizes[:-1]
                },
                goal="≤ 250 ms at 100,000" if largest == 100_000 else "(quick)",
                met=commit_ms <= 250 if largest == 100_000 else None,
            ),
            Row(
                measure=f"index rewrites for a burst of {bench_recovery.BURST} completions",
                ours=burst["writes"],
                unit="",
                goal="≤ 5",
                met=burst["writes"] <= 5,
            ),
        ],
        details={"commits": commits, "burst": burst},
        limits=INDEX_LIMITS,
    )


def memory(workspace: Path, size: int) -> Figure:
    with RunforgedProcess() as ours, Circus() as circus, Supervisor() as supervisor:
        ours.start()
        circus.start()
        supervisor.start()
        time.sleep(SETTLE_S)
        idle = {
            "runforged": rss_mib(ours.pid),
            "circusd": rss_mib(circus.pid),
            "supervisord": rss_mib(supervisor.pid),
        }
        ours.trust(workspace)
        ours.client.result(m.ListRuns(workspace=str(workspace)))
        ours.client.result(m.Recover(workspace=str(workspace)), timeout_s=600)
        ours.client.result(m.ListRuns(workspace=str(workspace)))
        time.sleep(SETTLE_S)
        loaded = rss_mib(ours.pid)
        loaded_peak = peak_rss_mib(ours.pid)
    return Figure(
        number=9,
        title="Daemon memory (RSS), idle and with a large workspace loaded",
        rows=[
            Row(
                measure="RSS idle",
                ours=idle["runforged"],
                unit="MiB",
                peers={"circusd idle": idle["circusd"], "supervisord idle": idle["supervisord"]},
                ratio=idle["runforged"] / idle["circusd"],
                ratio_of="circusd idle",
                goal="≤ 35 MiB",
                met=idle["runforged"] <= 35,
            ),
            Row(
                measure=f"RSS with a {size:,}-run workspace loaded",
                ours=loaded,
                unit="MiB",
                peers={"peak (VmHWM)": loaded_peak},
                goal="≤ 200 MiB" if size == 100_000 else "(quick)",
                met=loaded <= 200 if size == 100_000 else None,
            ),
        ],
        details={"idle_mib": idle, "loaded_mib": loaded, "loaded_peak_mib": loaded_peak},
        limits=MEMORY_LIMITS,
    )


def run(quick: bool) -> list[Figure]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    root = _scratch_root("rf-bench-scale-")
    try:
        workspace = root / "ws"
        figures = [recovery(sizes, workspace, disk_check=not quick)]
        figures.append(memory(workspace, sizes[-1]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures.append(index_commits(sizes))
    return figures
