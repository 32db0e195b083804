"""``python -m benchmarks``: run the suite, print the table, write the JSON results and
regenerate BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import (
    bench_cancel,
    bench_cli,
    bench_control,
    bench_events,
    bench_monitor,
    bench_ray,
    bench_runner,
    bench_scale,
)
from benchmarks.machine import describe
from benchmarks.report import console_table, markdown, read_json, write_json
from benchmarks.results import Figure

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
MARKDOWN = REPO / "BENCHMARKS.md"

# Measures that share set-up run together: (figure numbers, the function producing them).
GROUPS: list[tuple[set[int], Callable[[bool], list[Figure]]]] = [
    ({2}, lambda quick: [bench_control.round_trip(quick)]),
    ({11}, lambda quick: [bench_control.lifecycle(quick)]),
    ({1}, bench_cli.run),
    ({3}, lambda quick: [bench_cancel.request_to_sigterm(quick)]),
    ({4}, lambda quick: [bench_cancel.forced_cancel(quick)]),
    ({5}, lambda quick: [bench_cancel.cli_cancel(quick)]),
    ({10}, lambda quick: [bench_cancel.many_stubborn(quick)]),
    ({6}, bench_events.run),
    ({7, 8, 9}, bench_scale.run),
    ({12, 13, 14, 15}, bench_ray.run),
    ({16}, lambda quick: [bench_runner.training(quick)]),
    ({17}, lambda quick: [bench_runner.csv_load(quick)]),
    ({18}, bench_monitor.run),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds, small sizes")
    parser.add_argument(
        "--only", help="comma-separated figure numbers (default: all, 1 to 18)", default=""
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where to write the JSON"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="where to write BENCHMARKS.md (default: the repository's, on full runs of "
        "every figure only)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the report from a results file (after editing the "
        "analysis in benchmarks/analysis.py)",
    )
    return parser.parse_args(argv)


def _commit() -> str:
    """The checked-out commit, and whether the working tree differs from it (others'
    work in progress is measured too)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        target = args.markdown or MARKDOWN
        target.write_text(markdown(*read_json(args.render)))
        print(f"report: {target}")
        return 0
    wanted = {int(n) for n in args.only.split(",") if n.strip()} if args.only else set()
    # Bytecode caches as after an install: without them every client start recompiles.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = describe()
    load_start = os.getloadavg()
    started = time.perf_counter()
    figures: list[Figure] = []
    for numbers, produce in GROUPS:
        if wanted and not numbers & wanted:
            continue
        group_started = time.perf_counter()
        print(f"figure(s) {', '.join(map(str, sorted(numbers)))} ...", end=" ", flush=True)
        produced = produce(args.quick)
        figures += [f for f in produced if not wanted or f.number in wanted]
        print(f"{time.perf_counter() - group_started:.0f} s", flush=True)
    mode = "quick" if args.quick else "full"
    run = {
        "started": started_at,
        "mode": mode,
        "commit": _commit(),
        "figures": sorted(wanted) or "all",
        "wall_s": time.perf_counter() - started,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "conditions": (
            "The machine is shared with other engineers running test suites, so absolute "
            "times are noisy; ratios are paired to absorb that."
        ),
    }
    print()
    print(console_table(figures))
    stamp = started_at.replace(":", "").replace("-", "")
    json_path = args.results_dir / f"{mode}-{stamp}.json"
    write_json(json_path, machine, run, figures)
    print(f"\nresults: {json_path}")
    markdown_path = args.markdown
    if markdown_path is None and not args.quick and not wanted:
        markdown_path = MARKDOWN
    if markdown_path is not None:
        markdown_path.write_text(markdown(machine, run, figures))
        print(f"report: {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
