"""One rule for a persisted event line's run_seq, read alike by the monitor (catch-up) and
the daemon (continuing the numbering after the monitor)."""

from __future__ import annotations

from pathlib import Path

from runforge_contract.event_log import run_seq_of
from runforge_contract.layout import EVENTS_FILE
from runforged import monitor, run_folder


def test_the_monitor_and_the_daemon_share_the_run_folder_names_and_the_line_rule() -> None:
    assert monitor.EVENTS_FILE == EVENTS_FILE
    assert monitor.run_seq_of is run_seq_of
    assert run_seq_of(b'{"seq":0,"run_seq":12,"ts":1.0,"type":"x"}\n') == 12
    assert run_seq_of(b'{"seq":0,"run_seq":,"ts":1.0}\n') is None
    assert run_seq_of(b"not an event\n") is None


def test_the_daemon_continues_after_the_highest_whole_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / EVENTS_FILE).write_bytes(
        b'{"seq":0,"run_seq":1,"ts":1.0,"type":"run_queued","data":{}}\n'
        b'{"seq":0,"run_seq":2,"ts":1.0,"type":"run_spawned","data":{}}\n'
        b"{corrupt but whole}\n"
        b'{"seq":0,"run_seq":3,"ts":1.0,"type":"run_start","data":{"run_seq":9}}\n'
        b'{"seq":0,"run_seq":4,"ts":1.0,"type":"torn'
    )
    assert run_folder.last_run_seq(run_dir) == 3
