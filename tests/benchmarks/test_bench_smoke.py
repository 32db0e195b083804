"""The benchmark suite keeps working: its quick mode runs a few figures end to end and
writes its table, JSON results and report. No timing is asserted here (timing goals live
in the benchmarks themselves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO_ROOT, SESSION_MARKER, SESSION_MARKER_ENV


def test_quick_mode_runs_the_control_figures_and_writes_results_and_report(
    tmp_path: Path,
) -> None:
    report = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "2,11"),
            *("--results-dir", str(tmp_path), "--markdown", str(report)),
        ],
        cwd=REPO_ROOT,
        # The session marker lets the suite's leak check see every process it starts.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("RUNFORGE_")},
            SESSION_MARKER_ENV: SESSION_MARKER,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr

    assert "control round trip (ping), p50" in done.stdout
    assert "daemon start → first ping answered" in done.stdout
    [results_file] = tmp_path.glob("quick-*.json")
    results = json.loads(results_file.read_text())
    assert [f["number"] for f in results["figures"]] == [2, 11]
    for figure in results["figures"]:
        for row in figure["rows"]:
            assert row["ours"] > 0
            assert isinstance(row["met"], bool)
    text = report.read_text()
    assert "## Results" in text and "| 2 | control round trip (ping), p50 |" in text


def test_quick_mode_runs_the_csv_load_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--only", "17"),
            *("--results-dir", str(tmp_path)),
        ],
        cwd=REPO_ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("RUNFORGE_")},
            SESSION_MARKER_ENV: SESSION_MARKER,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    [results_file] = tmp_path.glob("quick-*.json")
    [figure] = json.loads(results_file.read_text())["figures"]
    assert figure["number"] == 17
    assert [row["measure"].rsplit(": ", 1)[1] for row in figure["rows"]] == ["time", "peak memory"]
    assert all(row["ours"] > 0 and row["peers"]["numpy.loadtxt"] > 0 for row in figure["rows"])
