"""The Ray job's entrypoint on its own: ``python -m runforge_rayjob`` started as Ray starts
it, with a real test trainer and a real run folder, no cluster. What it guarantees on a
node with no daemon near: nothing starts without the run folder or after a cancel, the
whole tree dies (double-forked workers included), the exit status is on disk in the same
record as the local monitor's."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from runforge_contract import layout
from runforge_contract.trainer_parent import CUT_NOTE, MAX_OUTPUT_LINE
from tests.harness import (
    REPO_ROOT,
    SESSION_MARKER,
    SESSION_MARKER_ENV,
    TRAINERS_DIR,
    alive,
    remove_tree,
    short_tempdir,
    wait_for,
)

RUN_ID = "20260101-000000-0000beef"
# The record fields both trainer parents write (runforge_contract.trainer_parent).
EXIT_FIELDS = {"exit_code", "spawn_error", "finished_at", "cancel_requested", "killed"}


@dataclass
class Job:
    root: Path
    nonce: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def workspace(self) -> Path:
        return self.root / "ws"

    @property
    def run_dir(self) -> Path:
        return self.workspace / layout.RUNS_DIR / RUN_ID

    @property
    def exchange(self) -> Path:
        return self.run_dir / layout.EXECUTOR_DIR

    def prepare(
        self, mode: str, grace_s: float = 5.0, max_log_bytes: int = 64 << 20, **env: str
    ) -> None:
        """The run folder and ``spec.json`` as the daemon writes them before submitting."""
        self.exchange.mkdir(parents=True)
        self.nonce = secrets.token_hex(16)
        spec = {
            "run_id": RUN_ID,
            "nonce": self.nonce,
            "argv": [
                sys.executable,
                "-u",
                "-m",
                "rf_test_trainer",
                "train",
                f"--out={self.run_dir}",
            ],
            "cwd": str(self.workspace),
            "env": {"RF_TEST_MODE": mode, "RUNFORGE_RUN_ID": RUN_ID, **env},
            "python": True,
            "grace_s": grace_s,
            "max_log_bytes": max_log_bytes,
            "trainer_packages": ["rf_test_trainer", "runforge_contract"],
        }
        (self.exchange / layout.SPEC_FILE).write_text(json.dumps(spec))

    def control(self, document: dict[str, Any]) -> None:
        path = self.exchange / layout.CONTROL_FILE
        tmp = path.with_name(".control.tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, path)

    entrypoint = (sys.executable, "-u", "-m", "runforge_rayjob")

    def start(self, nonce: str | None = None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RF_TEST_", "PYTHONPATH"))}
        # What Ray's py_modules give the job: our packages on its path.
        env["PYTHONPATH"] = f"{TRAINERS_DIR}{os.pathsep}{REPO_ROOT}"
        env[SESSION_MARKER_ENV] = SESSION_MARKER
        self.proc = subprocess.Popen(
            [*self.entrypoint, "--run-dir", str(self.run_dir), "--nonce", nonce or self.nonce],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        return self.proc

    def finish(self, timeout: float = 120) -> tuple[int, bytes]:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=timeout)
        assert not err.strip() or b"Traceback" not in err, err.decode()
        return self.proc.returncode, out

    def records(self) -> list[dict[str, Any]]:
        lines = (self.exchange / layout.OUTPUT_FILE).read_bytes().splitlines()
        tag = layout.TAG_RECORD
        return [json.loads(line[1:]) for line in lines if line[:1] == tag]

    def exit_record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.exchange / layout.EXIT_FILE).read_text())
        return data

    def tree(self) -> dict[str, Any]:
        path = self.run_dir / "tree.json"
        wait_for(path.exists, timeout=60)
        data: dict[str, Any] = json.loads(path.read_text())
        return data


@pytest.fixture
def job() -> Iterator[Job]:
    made = Job(short_tempdir())
    try:
        yield made
    finally:
        if made.proc is not None and made.proc.poll() is None:
            made.proc.kill()
            made.proc.wait()
        remove_tree(made.root)


def test_an_escaped_double_forked_worker_dies_when_the_trainer_ends(job: Job) -> None:
    job.prepare("double_fork", RF_TEST_STEPS="10", RF_TEST_STEP_S="0.1")
    proc = job.start()
    escaped = job.tree()["descendants"][0]["pid"]
    # Its parent exited: it was re-parented to the entrypoint (a subreaper), not to init.
    assert psutil.Process(escaped).ppid() == proc.pid
    assert os.getsid(escaped) == escaped
    code, _ = job.finish()
    assert code == 0
    assert not alive(escaped)
    record = job.exit_record()
    assert set(record) >= EXIT_FIELDS, record
    assert record["exit_code"] == 0 and record["killed"] is False
    kinds = [r["record"] for r in job.records()]
    assert kinds[0] == "spawned" and kinds[-1] == "exited"
    assert job.records()[-1]["leftovers_killed"] >= 1


def test_a_kill_request_kills_the_whole_tree_and_says_so(job: Job) -> None:
    job.prepare("grandchildren", RF_TEST_GRANDCHILDREN="2")
    job.start()
    tree = job.tree()
    workers = [d["pid"] for d in tree["descendants"]]
    job.control({"cancel": {"requested_at": time.time()}})
    wait_for(lambda: "sigterm" in [r["record"] for r in job.records()], timeout=30)
    assert alive(tree["trainer"])  # it ignores SIGTERM; its workers never got one
    assert all(alive(pid) for pid in workers)
    job.control({"cancel": {"requested_at": time.time()}, "kill": True})
    code, _ = job.finish()
    assert code == 128 + 9
    assert not alive(tree["trainer"]) and not any(alive(pid) for pid in workers)
    record = job.exit_record()
    assert record["exit_code"] == -9
    assert record["killed"] is True and record["cancel_requested"] is True
    killed = [r for r in job.records() if r["record"] == "killed"]
    assert killed and killed[0]["reason"] == "kill_request" and killed[0]["processes"] >= 3


def test_a_cancel_found_before_the_start_starts_nothing(job: Job) -> None:
    job.prepare("complete")
    job.control({"cancel": {"requested_at": time.time()}})
    job.start()
    code, _ = job.finish()
    assert code == 0
    assert not (job.run_dir / "trainer.pid").exists()
    assert not (job.exchange / layout.OUTPUT_FILE).exists()
    assert not (job.exchange / layout.EXIT_FILE).exists()


def test_another_runs_spec_or_none_is_refused_as_not_shared(job: Job) -> None:
    job.prepare("complete")
    job.start(nonce="0" * 32)
    code, out = job.finish()
    assert code == layout.EXIT_NOT_SHARED
    said = json.loads(out.decode().strip().splitlines()[-1])
    assert said[layout.NOT_SHARED_KEY] is True
    assert said["run_dir"] == str(job.run_dir) and said["found"] == "another run's file"
    assert sorted(p.name for p in job.exchange.iterdir()) == [layout.SPEC_FILE]
    assert not (job.run_dir / "trainer.pid").exists()


def test_an_over_long_line_is_cut_as_locally_and_its_rest_dropped(job: Job) -> None:
    job.prepare("flood_stdout", RF_TEST_FLOOD_BYTES="1000000")
    job.start()
    code, _ = job.finish()
    assert code == 0
    lines = (job.exchange / layout.OUTPUT_FILE).read_bytes().splitlines()
    cut = [line for line in lines if line.endswith(CUT_NOTE)]
    assert len(cut) == 1 and cut[0][:1] == layout.TAG_STDOUT
    assert len(cut[0]) == 1 + MAX_OUTPUT_LINE + len(CUT_NOTE)
    # The 3 MiB line's rest is not turned into more lines: every other line is short.
    assert max(len(line) for line in lines if line not in cut) < 64 * 1024
    flood = [line for line in lines if line.startswith(layout.TAG_STDOUT + b"flood ")]
    assert len(flood) >= 9000


def test_a_flood_stops_at_the_log_cap_but_events_go_on(job: Job) -> None:
    cap = 1_000_000
    job.prepare("flood_stdout", max_log_bytes=cap, RF_TEST_FLOOD_BYTES="20000000")
    job.start()
    code, _ = job.finish()
    assert code == 0
    output = job.exchange / layout.OUTPUT_FILE
    lines = output.read_bytes().splitlines()
    plain = [line for line in lines if line[:1] == layout.TAG_STDOUT]
    # Up to the cap, and the line that reached it (the daemon's own cap notes it there).
    assert cap <= sum(len(line) for line in plain) <= cap + MAX_OUTPUT_LINE + 1000
    assert output.stat().st_size < cap + MAX_OUTPUT_LINE + 100_000
    events = [line for line in lines if line[:1] == layout.TAG_STDERR]
    assert any(b'"artifacts_written"' in line for line in events)  # after the flood
    exited = job.records()[-1]
    assert exited["record"] == "exited"
    assert exited["log_bytes_not_copied"] > 15_000_000
