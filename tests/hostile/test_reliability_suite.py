"""A short run of the reliability suite: the fuzzers attack a real daemon and a real
bridge, and everything they send is answered with a reply or a structured error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reliability import bridge_fuzz, protocol_fuzz
from reliability.report import SKELETON, replace_section
from tests.harness import REPO_ROOT


def test_a_short_protocol_fuzz_gets_every_frame_answered_without_a_crash() -> None:
    report = protocol_fuzz.run(3_000, seed=12)
    assert report.frames_sent == 3_000
    assert report.replies == 3_000 and report.hangs == 0
    assert report.crashes == 0 and report.internal_errors == 0 and report.unstructured == 0
    assert report.counted_requests == 3_000  # the daemon counted every frame
    # Every attack class was sent and each got a structured answer to every frame.
    assert {c.name for c in report.classes} >= {
        "deep nesting (200 to 200,000 levels)",
        "numbers at and beyond the edges",
        "NUL and control characters",
    }
    assert all(c.passed for c in report.classes)


def test_a_short_bridge_fuzz_gets_every_line_answered_without_a_traceback() -> None:
    report = bridge_fuzz.run(400, seed=12)
    assert report.lines_sent == 400 and report.replies == 400
    assert report.hangs == 0 and report.crashes == 0 and report.unstructured == 0
    assert [mb for mb, _ in report.long_lines] == list(bridge_fuzz.TIMED_LINE_MB)


def test_the_command_writes_its_section_and_keeps_the_others(tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    report.write_text(SKELETON.replace("<!-- chaos:end -->", "chaos results\n<!-- chaos:end -->"))
    command = ["-m", "reliability", "--frames", "300", "--bridge-lines", "60"]
    done = subprocess.run(
        [sys.executable, *command, "--markdown", str(report)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    fuzz = text.split("<!-- fuzz:begin -->")[1].split("<!-- fuzz:end -->")[0]
    assert "| messages sent | 300 frames | 60 lines |" in fuzz
    assert "| crashes | 0 | 0 |" in fuzz and "| hangs (unanswered messages) | 0 | 0 |" in fuzz
    assert "chaos results" in text  # another suite's section is left alone
    replace_section(report, "fuzz", "again")
    assert text.count("<!-- fuzz:begin -->") == report.read_text().count("<!-- fuzz:begin -->")
