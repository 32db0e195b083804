"""The daemon under attack: a real runforged in a private temporary directory, with an
untrusted workspace whose interpreter does not exist, and what it costs as it goes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.runforged_process import RunforgedProcess
from runforge_protocol import messages as m


@dataclass
class ResourceSample:
    """The daemon's memory and open descriptors after ``after_frames`` messages."""

    after_frames: int
    rss_bytes: int
    fds: int


class FuzzDaemon:
    def __init__(self) -> None:
        self.process = RunforgedProcess()
        self.root = self.process.root
        self.endpoints = self.process.endpoints
        self.workspace = self.root / "ws"
        self.elsewhere = self.root / "elsewhere"

    def __enter__(self) -> FuzzDaemon:
        for folder in (self.workspace / ".vscode", self.elsewhere):
            folder.mkdir(parents=True)
        # Even a workspace trusted by accident could not start anything.
        settings = {"runforge.pythonPath": str(self.root / "no-such-python")}
        (self.workspace / ".vscode" / "settings.json").write_text(json.dumps(settings))
        (self.workspace / "data.csv").write_text("a,label\n1,0\n2,1\n")
        try:
            self.process.start()
        except BaseException:
            self.process.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.close()

    def alive(self) -> bool:
        proc = self.process.proc
        return proc is not None and proc.poll() is None

    def counters(self) -> m.Counters:
        result = self.process.client.result(m.Status())
        assert isinstance(result, m.StatusResult)
        return result.counters

    def sample(self, after_frames: int) -> ResourceSample:
        proc = psutil.Process(self.process.pid)
        return ResourceSample(after_frames, proc.memory_info().rss, proc.num_fds())

    def logged_exceptions(self) -> int:
        """Error records in the daemon's JSON log (a handler or callback that raised)."""
        path: Path = self.root / "runforged.log"
        count = 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                count += 1
        return count
