"""Figures 16 and 17: the trainer side.

16. A whole training run (process start to exit, import and CSV load included) of
    ``python -m runforge_runner train --preset std-train`` for each model family, on the
    bundled iris-sized CSV (150 rows) and on demo_large.csv (40,000 x 20), beside the floor
    (``benchmarks/plain_fit.py``: the same estimator and parameters, a plain ``fit()``)
    and, when ``RUNFORGE_ORIGINAL_RUNNER_DIR`` points at the ``python/`` folder of
    RunForge's own extension, its ``ml_runner`` on the same CSV.
17. Loading a 400,000-row CSV (20 features, about 61 MB) with the runner's reader against
    ``numpy.loadtxt``: time, and peak memory (tracemalloc, which sees numpy's buffers), each
    in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import Figure, Row
from benchmarks.stats import alternating, paired_ratio, summary
from runforge_contract.sample_data import BUNDLED_DIR, SMALL_NAME, demo_large_csv
from runforge_runner.train_run import PROGRESS_MAX_INTERVAL_S

ORIGINAL_ENV = "RUNFORGE_ORIGINAL_RUNNER_DIR"
FAMILIES = ("logistic_regression", "linear_svc", "random_forest")
PLAIN_FIT = Path(__file__).with_name("plain_fit.py")
OURS, FLOOR, ORIGINAL = "runforge_runner", "plain fit()", "original ml_runner"
FLOOR_GOAL, ORIGINAL_GOAL, DEMO_GOAL_S = 1.3, 1.0, 15.0
LOAD_ROWS = 400_000
LOAD_TIME_GOAL, LOAD_MEMORY_GOAL = 1.5, 2.0

LIMITS_TRAINING = (
    "The fit itself: each family trains with scikit-learn's own solver and stops by its "
    "own `tol`, so a run costs what a plain `fit()` costs plus what the contract adds: "
    "interpreter and scikit-learn import (about a second), the CSV read, progress events "
    "(their numbers are logged with their CPU cost in the run's log), the metrics and "
    "atomic, fsynced files. The forest grows in timed batches of trees (`warm_start`), "
    "one `fit()` call per batch."
)
LIMITS_LOAD = (
    "numpy's C parser: the runner hands it blocks of lines. On top come SHA-256 of the file "
    "(the dataset fingerprint), UTF-8 decoding, a second streaming pass (the first one "
    "hashes and bounds the line count, so the arrays are allocated once) and the label "
    "column's conversion through a Python callable."
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFORGE_")}
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(variable, "1")
    return env


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stderr


def _commands(
    workspace: Path, dataset: Path, family: str, original: Path | None, counter: list[int]
) -> dict[str, tuple[list[str], dict[str, str]]]:
    counter[0] += 1
    run = f".ml/runs/bench-{counter[0]}"
    train = ["train", "--preset", "std-train", "--out", run, "--model", family]
    env = {**_env(), "RUNFORGE_DATASET": str(dataset)}
    commands = {
        OURS: ([sys.executable, "-u", "-m", "runforge_runner", *train], env),
        FLOOR: ([sys.executable, str(PLAIN_FIT), str(dataset), family], _env()),
    }
    if original is not None:
        original_train = [
            "train", "--preset", "std-train", "--out", f"{run}-original", "--device", "cpu",
            "--model", family,
        ]  # fmt: skip
        commands[ORIGINAL] = (
            [sys.executable, "-u", "-m", "ml_runner", *original_train],
            {**env, "PYTHONPATH": str(original)},
        )
    return commands


def _progress_summary(stderr: str) -> tuple[int, int, float]:
    """(train_progress events, distinct (epoch, val_accuracy, loss) values among them,
    the fit's duration in seconds as train_finished reports it)."""
    seen = []
    fit_s = 0.0
    for line in stderr.splitlines():
        if '"train_progress"' in line:
            event = json.loads(line)
            seen.append((event["epoch"], event.get("val_accuracy"), event.get("loss")))
        elif '"train_finished"' in line:
            fit_s = float(json.loads(line).get("duration_seconds") or 0.0)
    return len(seen), len(set(seen)), fit_s


def _visible_states_due(fit_s: float) -> int:
    """How many distinct progress states a fit of ``fit_s`` seconds must show for its
    progress to change visibly: the runner reports at least once a second while fitting
    and once more with the final numbers, so a fit longer than a second shows at least
    two; a shorter one is over before a display could change, and shows its final state."""
    return 2 if fit_s > PROGRESS_MAX_INTERVAL_S else 1


def training(quick: bool) -> Figure:
    warmup, rounds = (0, 1) if quick else (1, 3)
    original_dir = os.environ.get(ORIGINAL_ENV)
    original = Path(original_dir) if original_dir else None
    rows: list[Row] = []
    details: dict[str, object] = {}
    notes: list[str] = []
    demo_progress = (0, 0, 0.0)
    counter = [0]
    with tempfile.TemporaryDirectory(prefix="rf-bench-runner-") as tmp:
        workspace = Path(tmp)
        large = workspace / "demo_large.csv"
        large.write_bytes(demo_large_csv())
        datasets = {"iris-sized (150 rows)": BUNDLED_DIR / SMALL_NAME, "40,000 rows": large}
        for data_name, dataset in datasets.items():
            for family in FAMILIES:
                contenders = list(_commands(workspace, dataset, family, original, counter))
                for _ in range(warmup):
                    for argv, env in _commands(
                        workspace, dataset, family, original, counter
                    ).values():
                        _timed(argv, workspace, env)
                times: dict[str, list[float]] = {name: [] for name in contenders}
                for _, order in alternating(rounds, contenders):
                    commands = _commands(workspace, dataset, family, original, counter)
                    for name in order:
                        argv, env = commands[name]
                        seconds, stderr = _timed(argv, workspace, env)
                        times[name].append(seconds)
                        if name == OURS and family == FAMILIES[0] and dataset == large:
                            demo_progress = _progress_summary(stderr)
                details[f"{family} / {data_name}"] = {n: summary(t) for n, t in times.items()}
                label = f"{family}, {data_name}: whole run"
                ours_median = summary(times[OURS])["median"]
                peers = {n: summary(t)["median"] for n, t in times.items() if n != OURS}
                ratio = paired_ratio(times[OURS], times[FLOOR])
                rows.append(
                    Row(
                        measure=f"{label} / {FLOOR}",
                        ours=ours_median,
                        unit="s",
                        peers=peers,
                        ratio=ratio,
                        ratio_of=FLOOR,
                        goal=f"≤ {FLOOR_GOAL}×",
                        met=ratio <= FLOOR_GOAL,
                    )
                )
                if ORIGINAL in times:
                    ratio = paired_ratio(times[OURS], times[ORIGINAL])
                    rows.append(
                        Row(
                            measure=f"{label} / {ORIGINAL}",
                            ours=ours_median,
                            unit="s",
                            peers=peers,
                            ratio=ratio,
                            ratio_of=ORIGINAL,
                            goal=f"≤ {ORIGINAL_GOAL}×",
                            met=ratio <= ORIGINAL_GOAL,
                        )
                    )
        demo = details[f"{FAMILIES[0]} / 40,000 rows"]
        assert isinstance(demo, dict)
        demo_s = demo[OURS]["median"]
        rows.append(
            Row(
                measure="README demo (logistic_regression, demo_large.csv): whole run",
                ours=demo_s,
                unit="s",
                goal=f"≤ {DEMO_GOAL_S:.0f} s, progress that changes",
                met=demo_s <= DEMO_GOAL_S
                and demo_progress[1] >= _visible_states_due(demo_progress[2]),
            )
        )
    notes.append(
        f"README demo: the fit took {demo_progress[2]:.3f} s and showed {demo_progress[0]} "
        f"train_progress events, {demo_progress[1]} distinct (epoch, val_accuracy, loss) "
        f"values; {_visible_states_due(demo_progress[2])} due (at least two for a fit longer "
        "than a second, whose display must move while it runs; a shorter fit is over before "
        "a display could change, and shows its final numbers and how it converged)."
    )
    if original is None:
        notes.append(
            f"RunForge's original runner was not measured: set {ORIGINAL_ENV} to the "
            "`python/` folder of its extension (the one holding `ml_runner/`) to add it."
        )
    return Figure(
        number=16,
        title="A training run, whole process (std-train), beside a plain fit()",
        rows=rows,
        details=details,
        limits=LIMITS_TRAINING,
        notes=notes,
    )


_LOAD_SCRIPT = """
import sys, time, tracemalloc
from pathlib import Path
import numpy as np
path, reader, memory = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "memory"
if reader == "numpy":
    def load():
        return np.loadtxt(path, delimiter=",", skiprows=1)
else:
    from runforge_runner.dataset import load_dataset
    def load():
        return load_dataset(path)
if memory:
    tracemalloc.start()
    load()
    print(tracemalloc.get_traced_memory()[1])
else:
    started = time.perf_counter()
    load()
    print(time.perf_counter() - started)
"""


def _large_csv(path: Path, rows: int) -> None:
    """demo_large.csv's rows repeated to ``rows`` (same shape and number format)."""
    lines = demo_large_csv().split(b"\n")
    header, body = lines[0], [line for line in lines[1:] if line]
    with path.open("wb") as handle:
        handle.write(header + b"\n")
        for index in range(rows):
            handle.write(body[index % len(body)] + b"\n")


def csv_load(quick: bool) -> Figure:
    rounds = 1 if quick else 5
    rows_wanted = 40_000 if quick else LOAD_ROWS
    readers = {"runforge_runner": "ours", "numpy.loadtxt": "numpy"}
    with tempfile.TemporaryDirectory(prefix="rf-bench-load-") as tmp:
        path = Path(tmp) / "load.csv"
        _large_csv(path, rows_wanted)
        size_mb = path.stat().st_size / 1e6

        def measure(reader: str, what: str) -> float:
            done = subprocess.run(
                [sys.executable, "-c", _LOAD_SCRIPT, str(path), reader, what],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            return float(done.stdout.strip())

        times: dict[str, list[float]] = {name: [] for name in readers}
        for _, order in alternating(rounds, list(readers)):
            for name in order:
                times[name].append(measure(readers[name], "time"))
        memory = {name: measure(code, "memory") / 2**20 for name, code in readers.items()}
    time_ratio = paired_ratio(times["runforge_runner"], times["numpy.loadtxt"])
    memory_ratio = memory["runforge_runner"] / memory["numpy.loadtxt"]
    label = f"CSV load, {rows_wanted:,} rows ({size_mb:.0f} MB)"
    return Figure(
        number=17,
        title="Loading a large CSV: the runner's reader against numpy.loadtxt",
        rows=[
            Row(
                measure=f"{label}: time",
                ours=summary(times["runforge_runner"])["median"],
                unit="s",
                peers={"numpy.loadtxt": summary(times["numpy.loadtxt"])["median"]},
                ratio=time_ratio,
                ratio_of="numpy.loadtxt",
                goal=f"≤ {LOAD_TIME_GOAL}×",
                met=time_ratio <= LOAD_TIME_GOAL,
            ),
            Row(
                measure=f"{label}: peak memory",
                ours=memory["runforge_runner"],
                unit="MiB",
                peers={"numpy.loadtxt": memory["numpy.loadtxt"]},
                ratio=memory_ratio,
                ratio_of="numpy.loadtxt",
                goal=f"≤ {LOAD_MEMORY_GOAL}×",
                met=memory_ratio <= LOAD_MEMORY_GOAL,
            ),
        ],
        details={name: summary(samples) for name, samples in times.items()}
        | {"peak_memory_mib": memory},
        limits=LIMITS_LOAD,
        notes=[
            "Both readers run in a fresh process each time; memory is tracemalloc's peak "
            "during the load (numpy registers its buffers with it), in a run of its own."
        ],
    )
