"""Benchmark of Recover Index and of the index writer, at 10^3 to 10^5 runs.

Measures, each in a fresh child process (so peak RSS belongs to that measurement alone):

- recovery of N synthetic run folders into an empty index (every folder an orphan: the
  worst case), then a second recovery of the same folders (all already indexed);
- the latency of one durable index commit (one completion) with N entries in the index,
  and the time to load such an index;
- the number of index rewrites for a burst of 100 completions.

Run folders are what the daemon leaves after a completed run (``run.json`` per run
schema v0.3.6, ``request.json``, ``result.json``, ``logs.txt``, ``model.pkl``), created
fresh and written back to the disk before anything is measured (else the kernel's
writeback of ~1 GB of new files competes with the first measurement for the CPU). The
page cache is warm as far as the machine keeps 10^5 new folders in it. Each recovery
into an empty index is measured ``RECOVERIES`` times (the index removed in between) and
the median reported: the machine is shared and noisy.

    .venv/bin/python benchmarks/bench_recovery.py            # 1,000 / 10,000 / 100,000
    .venv/bin/python benchmarks/bench_recovery.py --quick    # 100 / 1,000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import structlog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runforge_protocol.records import ResultRecord, RunState  # noqa: E402 - after the path set-up
from runforged.disk_formats import (  # noqa: E402 - after the path set-up above
    IndexEntry,
    IndexFile,
    IndexSummary,
    RequestRecord,
)
from runforged.index_writer import IndexWriter  # noqa: E402

FULL_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (100, 1_000)
BURST = 100
COMMITS_MEASURED = 7
RECOVERIES = 3
FINGERPRINT = "0" * 63 + "1"
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _run_id(n: int) -> str:
    return f"{START + timedelta(seconds=n):%Y%m%d-%H%M%S}-{n:08x}"


def _write(path: str, data: bytes) -> None:
    # Plain writes: durability of the synthetic data is not what is measured.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_run_folders(workspace: Path, first: int, last: int) -> None:
    """Run folders ``first`` .. ``last - 1`` under ``workspace/.ml/runs``, written back
    to the disk (``os.sync``) before this returns."""
    runs = workspace / ".ml" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    encode = msgspec.json.encode
    for n in range(first, last):
        run_id = _run_id(n)
        created_at = _iso(START + timedelta(seconds=n))
        folder = runs / run_id
        folder.mkdir()
        run_json = {
            "run_id": run_id,
            "runforge_version": "0.1.0",
            "schema_version": "run.v0.3.6",
            "created_at": created_at,
            "dataset": {"path": "/data/iris.csv", "fingerprint_sha256": FINGERPRINT},
            "label_column": "label",
            "model_family": "random_forest",
            "num_samples": 150,
            "num_features": 4,
            "dropped_rows_missing_values": 0,
            "metrics": {"accuracy": 0.9, "num_samples": 150, "num_features": 4},
            "metrics_v1": {
                "schema_version": "metrics.v1",
                "metrics_profile": "classification.multiclass.v1",
                "artifact_path": "metrics.v1.json",
            },
            "artifacts": {"model_pkl": "model.pkl", "metrics_v1_json": "metrics.v1.json"},
        }
        request = RequestRecord(
            run_id=run_id,
            workspace=str(workspace),
            run_dir=f".ml/runs/{run_id}",
            created_at=created_at,
            name=f"bench {n}",
            preset="std-train",
            model="random_forest",
        )
        result = ResultRecord(
            run_id=run_id,
            run_dir=f".ml/runs/{run_id}",
            state=RunState.COMPLETED,
            exit_code=0,
            finished_at=created_at,
            duration_ms=1000 + n % 997,
        )
        _write(str(folder / "run.json"), encode(run_json))
        _write(str(folder / "request.json"), encode(request))
        _write(str(folder / "result.json"), encode(result))
        _write(str(folder / "logs.txt"), b"training\n")
        _write(str(folder / "model.pkl"), b"\x80\x04model")
    # Written back now, so that a measurement that follows is not charged for it.
    os.sync()


def make_index(workspace: Path, entries: int) -> None:
    """An index.json with ``entries`` synthetic entries."""
    runs = [
        IndexEntry(
            run_id=_run_id(n),
            created_at=_iso(START + timedelta(seconds=n)),
            name=f"bench {n}",
            preset_id="std-train",
            status="succeeded",
            summary=IndexSummary(duration_ms=1000, final_metrics={"accuracy": 0.9}, device="cpu"),
            run_dir=f".ml/runs/{_run_id(n)}",
            dataset_fingerprint_sha256=FINGERPRINT,
            label_column="label",
            model_pkl=f".ml/runs/{_run_id(n)}/model.pkl",
        )
        for n in range(entries)
    ]
    path = workspace / ".ml" / "outputs" / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(str(path), msgspec.json.encode(IndexFile(schema_version="1.0.0", runs=runs)))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- child measurements


async def _child_recover(workspace: Path) -> dict[str, Any]:
    writer = await IndexWriter.open(workspace)
    started = time.perf_counter()
    report = await writer.recover()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "scanned": report.scanned_run_dirs,
        "recovered": len(report.recovered),
        "already_indexed": report.already_indexed,
        "rss_mib": _peak_rss_mib(),
    }


async def _child_commit(workspace: Path, entries: int) -> dict[str, Any]:
    started = time.perf_counter()
    writer = await IndexWriter.open(workspace)
    load_s = time.perf_counter() - started
    latencies = []
    for k in range(COMMITS_MEASURED):
        run_id = _run_id(entries + k)
        entry = IndexEntry(
            run_id=run_id,
            created_at=_iso(START + timedelta(seconds=entries + k)),
            name=run_id,
            preset_id="std-train",
            status="succeeded",
            summary=IndexSummary(duration_ms=1000, final_metrics={"accuracy": 0.9}, device="cpu"),
            run_dir=f".ml/runs/{run_id}",
            dataset_fingerprint_sha256=FINGERPRINT,
            label_column="label",
            model_pkl=f".ml/runs/{run_id}/model.pkl",
        )
        t0 = time.perf_counter()
        await writer.add(entry)
        latencies.append(time.perf_counter() - t0)
    return {
        "load_s": load_s,
        "commit_median_s": statistics.median(latencies),
        "commit_max_s": max(latencies),
        "rss_mib": _peak_rss_mib(),
    }


async def _child_burst(workspace: Path, entries: int) -> dict[str, Any]:
    writer = await IndexWriter.open(workspace)
    burst = [
        IndexEntry(
            run_id=_run_id(entries + k),
            created_at=_iso(START + timedelta(seconds=entries + k)),
            run_dir=f".ml/runs/{_run_id(entries + k)}",
        )
        for k in range(BURST)
    ]
    t0 = time.perf_counter()
    await asyncio.gather(*(writer.add(e) for e in burst))
    return {"seconds": time.perf_counter() - t0, "writes": writer.writes}


def _child(argv: list[str]) -> None:
    # stdout carries the measurement; the daemon's info logs would only add noise.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    kind, workspace = argv[0], Path(argv[1])
    if kind == "recover":
        out = asyncio.run(_child_recover(workspace))
    elif kind == "commit":
        out = asyncio.run(_child_commit(workspace, int(argv[2])))
    else:
        out = asyncio.run(_child_burst(workspace, int(argv[2])))
    print(json.dumps(out))


def _median_recovery(workspace: Path) -> dict[str, Any]:
    """Recovery into an empty index, ``RECOVERIES`` times: the run with the median time."""
    runs = []
    for _ in range(RECOVERIES):
        shutil.rmtree(workspace / ".ml" / "outputs", ignore_errors=True)
        runs.append(_measure("recover", str(workspace)))
    runs.sort(key=lambda run: float(run["seconds"]))
    return runs[len(runs) // 2]


def _measure(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---------------------------------------------------------------- the table


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print(_row(header, widths))
    print(_row(["-" * w for w in widths], widths))
    for row in rows:
        print(_row(row, widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--dir", help="where to create the synthetic workspaces")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    root = Path(tempfile.mkdtemp(prefix="runforge-bench-recovery-", dir=args.dir))
    try:
        recovery_rows = []
        workspace = root / "recovery"
        made = 0
        for size in sizes:
            # One workspace grown to each size; the index is reset between sizes.
            t0 = time.perf_counter()
            make_run_folders(workspace, made, size)
            made = size
            print(f"created {size:,} run folders in {time.perf_counter() - t0:.1f} s", flush=True)
            first = _median_recovery(workspace)
            second = _measure("recover", str(workspace))
            assert first["recovered"] == size and second["already_indexed"] == size
            recovery_rows.append(
                [
                    f"{size:,}",
                    f"{first['seconds']:.2f}",
                    f"{first['seconds'] / size * 1e6:.1f}",
                    f"{first['rss_mib']:.0f}",
                    f"{second['seconds']:.2f}",
                    f"{second['seconds'] / size * 1e6:.1f}",
                    f"{second['rss_mib']:.0f}",
                ]
            )
        commit_rows = []
        for size in sizes:
            workspace = root / f"commit-{size}"
            make_index(workspace, size)
            commit = _measure("commit", str(workspace), str(size))
            commit_rows.append(
                [
                    f"{size:,}",
                    f"{commit['load_s'] * 1000:.0f}",
                    f"{commit['commit_median_s'] * 1000:.1f}",
                    f"{commit['commit_max_s'] * 1000:.1f}",
                    f"{commit['rss_mib']:.0f}",
                ]
            )
        burst_workspace = root / "burst"
        make_index(burst_workspace, 1_000)
        burst = _measure("burst", str(burst_workspace), "1000")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    _table(
        "Recover Index (all folders orphans, then all already indexed)",
        ["run folders", "recover s", "us/folder", "peak MiB", "again s", "us/folder", "peak MiB"],
        recovery_rows,
    )
    _table(
        "Index commit: one completion, durable on return (median of 7)",
        ["entries", "load ms", "commit ms", "max ms", "peak MiB"],
        commit_rows,
    )
    _table(
        f"Burst of {BURST} completions (index of 1,000 entries)",
        ["completions", "index rewrites", "all durable ms"],
        [[str(BURST), str(burst["writes"]), f"{burst['seconds'] * 1000:.1f}"]],
    )


if __name__ == "__main__":
    main()
