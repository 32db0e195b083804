"""Figures 12 to 15: runs on a Ray cluster (a local head on 127.0.0.1), beside what Ray's
own Job API gives for the same trainer: submit → first event, event latency (our run
folder follower against Ray's log tail), cancel request → SIGTERM in the trainer, and
grace precision (against ``stop_job`` with ``RAY_JOB_STOP_WAIT_TIME_S``).

Skipped, with a note, when Ray is not installed (``pip install 'runforge[ray]'``). The
peers use Ray's SDK (``ray.job_submission``), imported here only.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import runforge_contract
import runforge_runner
from benchmarks.processes import DeathWatch, wait_until
from benchmarks.ray_head import LocalRayHead, ray_command
from benchmarks.results import Figure, Row
from benchmarks.runforged_process import TEST_TRAINER, RunforgedProcess, short_tempdir
from benchmarks.stats import percentile, summary
from runforge_protocol import messages as m

SIGTERM_FILE = "sigterm_received"
GRACE_S = 1.5  # a fraction of a second in it: Ray's own stop wait takes whole seconds
GRACE_GOAL_MS = 100.0
# The trainer's interpreter and path on the cluster: the same installation (one machine).
PYTHON = sys.executable

FIRST_EVENT_LIMITS = (
    "Ray's submit_job itself (about 1.5 s here: the dashboard creates the job's "
    "supervisor actor before it answers), the runtime environment (our entrypoint and "
    "the runner, shipped once as content-addressed py_modules), a worker process and "
    "the entrypoint's interpreter start, then the trainer's; the run folder is read "
    "every 20 ms."
)
LATENCY_LIMITS = (
    "Ours: the trainer's write, the entrypoint's copy into the run folder's output "
    "stream, the daemon's 20 ms poll of that file, parsing and the ZeroMQ hop. Ray's "
    "log tail: the dashboard reads the job's log file once a second and sends what it "
    "found over a websocket, from the start of the log on every connection."
)
SIGTERM_LIMITS = (
    "Ours: the cancel request, the control file written atomically in the run folder "
    "(fsync), the entrypoint's 10 ms poll of it, then SIGTERM to the trainer alone. "
    "stop_job: an HTTP request to the dashboard, which asks the job's supervisor actor "
    "to signal the entrypoint's whole process group."
)
GRACE_LIMITS = (
    "Ours: the daemon's deadline timer (sub-millisecond), the kill request written to "
    "the control file, and the entrypoint's 10 ms poll. stop_job: the grace "
    "(RAY_JOB_STOP_WAIT_TIME_S) is whole seconds only, counted by the job supervisor, "
    "and its SIGTERM went to every process of the job at once (workers included); the "
    "job ends STOPPED whether the trainer flushed or was killed, with no exit code."
)


def _parse_utc(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _sigterm_ns(folder: Path, timeout_s: float = 120) -> int:
    path = folder / SIGTERM_FILE

    def arrival() -> int | None:
        try:
            return int(json.loads(path.read_bytes())["monotonic_ns"])
        except (FileNotFoundError, ValueError):
            return None

    return wait_until(arrival, timeout_s, f"{path}", interval_s=0.002)


def _pid(folder: Path, timeout_s: float = 120) -> int:
    path = folder / "trainer.pid"

    def read() -> int | None:
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    return wait_until(read, timeout_s, f"{path}", interval_s=0.002)


class _Ours:
    """A daemon whose workspace runs on the head, and a subscriber to its events."""

    def __init__(self, head: LocalRayHead, trainer_env: dict[str, str]) -> None:
        self.daemon = RunforgedProcess(trainer_env)
        self.daemon.start()
        self.workspace = self.daemon.trainer_workspace(
            "ws",
            {
                "runforge.executor": "ray",
                "runforge.rayAddress": head.address,
                "runforge.rayEnvVars": ["RF_TEST_*"],
            },
        )
        self.client = self.daemon.client
        self.client.subscribe(b"run/")

    def train(self, grace_s: float | None = None) -> tuple[str, float]:
        sent = time.time()
        result = self.client.result(
            m.Train(
                workspace=str(self.workspace),
                dataset=str(self.workspace / "data.csv"),
                grace_s=grace_s,
            )
        )
        assert isinstance(result, m.TrainResult)
        return result.run.run_id, sent

    def events_until(
        self, run_id: str, kind: str, timeout_s: float = 120
    ) -> list[tuple[float, m.Event]]:
        """(arrival time, event) of the run's events up to the first of type ``kind``."""
        seen: list[tuple[float, m.Event]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.client.next_events(0.5):
                if event.run_id != run_id:
                    continue
                seen.append((time.time(), event))
                if event.type == kind:
                    return seen
        raise TimeoutError(f"no {kind} event for {run_id}")

    def folder(self, run_id: str) -> Path:
        return self.workspace / ".ml" / "runs" / run_id

    def close(self) -> None:
        self.daemon.close()


class _RayPeer:
    """The same trainer submitted straight to Ray's Job API with the SDK."""

    def __init__(self, head: LocalRayHead, root: Path) -> None:
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(head.address)
        self.workspace = root / "peer-ws"
        self.workspace.mkdir()
        (self.workspace / "rf_test_trainer").symlink_to(TEST_TRAINER)
        runner_path = root / "peer-path"
        runner_path.mkdir()
        for module in (runforge_runner, runforge_contract):
            package = Path(module.__file__ or "").parent
            (runner_path / module.__name__).symlink_to(package)
        self.pythonpath = str(runner_path)
        self.count = 0

    def submit(self, env: dict[str, str]) -> tuple[str, Path, float]:
        self.count += 1
        job = f"peer-{time.time_ns()}"
        out = self.workspace / ".ml" / "runs" / job
        out.mkdir(parents=True)
        argv = [PYTHON, "-u", "-m", "rf_test_trainer", "train", "--out", str(out)]
        entrypoint = f"cd {shlex.quote(str(self.workspace))} && {shlex.join(argv)}"
        env_vars = {"PYTHONPATH": self.pythonpath, **env}
        sent = time.time()
        self.client.submit_job(
            entrypoint=entrypoint, submission_id=job, runtime_env={"env_vars": env_vars}
        )
        return job, out, sent

    def tail(self, job: str, on_line: Any, stop: threading.Event) -> threading.Thread:
        """Follow the job's log with Ray's own tail (a websocket), in a thread."""

        async def follow() -> None:
            pending = ""
            async for chunk in self.client.tail_job_logs(job):
                now = time.time()
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    on_line(now, line)
                if stop.is_set():
                    return

        thread = threading.Thread(target=lambda: asyncio.run(follow()), daemon=True)
        thread.start()
        return thread

    def wait_end(self, job: str, timeout_s: float = 120) -> str:
        from ray.job_submission import JobStatus

        def ended() -> str | None:
            status = self.client.get_job_status(job)
            return (
                str(status.value)
                if status
                in (
                    JobStatus.STOPPED,
                    JobStatus.SUCCEEDED,
                    JobStatus.FAILED,
                )
                else None
            )

        return wait_until(ended, timeout_s, f"job {job} to end", interval_s=0.05)


def _progress_latency(lines: list[tuple[float, str]]) -> list[float]:
    latencies = []
    for held_at, line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            event = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "train_progress":
            latencies.append(held_at - _parse_utc(event["timestamp"]))
    return latencies


def run(quick: bool) -> list[Figure]:
    if ray_command() is None:
        print("(Ray is not installed: figures 12-15 skipped; pip install 'runforge[ray]')")
        return []
    rounds = 2 if quick else 8
    flood_events = 40 if quick else 200
    root = short_tempdir("rf-bench-ray-")
    head = LocalRayHead(root / "ray")
    (root / "ray").mkdir()
    try:
        head_start_s = head.start()
        figures = _measure(head, root, rounds, flood_events)
        figures[0].details["head_start_s"] = head_start_s
        figures[0].details["head_listens_on"] = sorted(head.listening_hosts())
    finally:
        head_stop_s = head.stop()
        shutil.rmtree(root, ignore_errors=True)
    figures[0].details["head_stop_s"] = head_stop_s
    return figures


def _measure(head: LocalRayHead, root: Path, rounds: int, flood_events: int) -> list[Figure]:
    peer = _RayPeer(head, root)

    # Figure 12 and 13: a flood at a steady rate, followed by both means at once.
    rate = "20"
    flood = {"RF_TEST_MODE": "flood", "RF_TEST_EVENTS": str(flood_events), "RF_TEST_RATE": rate}
    ours = _Ours(head, flood)
    first_ours: list[float] = []
    first_ray: list[float] = []
    ours_latency: list[float] = []
    tail_latency: list[float] = []
    try:
        for _ in range(rounds):
            run_id, sent = ours.train()
            seen = ours.events_until(run_id, "run_terminal", timeout_s=300)
            first = next(at for at, e in seen if e.type == "run_start")
            first_ours.append(first - sent)
            ours_latency += [
                at - _parse_utc(e.data["timestamp"]) for at, e in seen if e.type == "train_progress"
            ]
            # Ray's own log tail of the same run (the entrypoint copies the trainer's lines
            # into the job's log): the run is over, so only the first connection's replay
            # is measured below, on a fresh job.
            job, _out, sent = peer.submit(flood)
            lines: list[tuple[float, str]] = []
            stop = threading.Event()
            thread = peer.tail(job, lambda at, line, acc=lines: acc.append((at, line)), stop)
            peer.wait_end(job, timeout_s=300)
            time.sleep(2.5)  # the tail's last poll
            stop.set()
            thread.join(5)
            starts = [at for at, line in lines if '"run_start"' in line]
            if starts:
                first_ray.append(starts[0] - sent)
            tail_latency += _progress_latency(lines)
    finally:
        ours.close()

    # Figures 14 and 15: SIGTERM latency and grace precision with a trainer that flushes
    # for 30 s (so only the deadline ends it).
    probe = {"RF_TEST_MODE": "sigterm_probe", "RF_TEST_FLUSH_S": "30"}
    ours = _Ours(head, probe)
    sigterm_ours: list[float] = []
    sigterm_ray: list[float] = []
    grace_ours: list[float] = []
    grace_ray: list[float] = []
    ray_states: list[str] = []
    try:
        for _ in range(rounds):
            run_id, _sent = ours.train(grace_s=GRACE_S)
            folder = ours.folder(run_id)
            pid = _pid(folder)
            time.sleep(0.2)
            watch = DeathWatch([pid])
            sent_ns = time.monotonic_ns()
            ours.client.result(
                m.Cancel(workspace=str(ours.workspace), run_id=run_id, grace_s=GRACE_S)
            )
            handled = _sigterm_ns(folder)
            died = watch.wait(60)[pid]
            sigterm_ours.append((handled - sent_ns) / 1e6)
            grace_ours.append((died - handled) / 1e9 - GRACE_S)
            ours.events_until(run_id, "run_terminal")

            job, out, _sent = peer.submit({**probe, "RAY_JOB_STOP_WAIT_TIME_S": str(int(GRACE_S))})
            pid = _pid(out)
            time.sleep(0.2)
            watch = DeathWatch([pid])
            sent_ns = time.monotonic_ns()
            peer.client.stop_job(job)
            handled = _sigterm_ns(out)
            died = watch.wait(60)[pid]
            sigterm_ray.append((handled - sent_ns) / 1e6)
            grace_ray.append((died - handled) / 1e9 - GRACE_S)
            ray_states.append(peer.wait_end(job))
    finally:
        ours.close()

    def p(samples: list[float], q: float) -> float:
        return percentile(samples, q) if samples else float("nan")

    lat_p50, lat_p99 = p(ours_latency, 50) * 1000, p(ours_latency, 99) * 1000
    grace_worst = max(abs(x) for x in grace_ours) * 1000
    return [
        Figure(
            number=12,
            title="Ray: train request → first trainer event at a subscriber",
            rows=[
                Row(
                    measure="submit → run_start event, median",
                    ours=p(first_ours, 50),
                    unit="s",
                    peers={"Ray submit_job → log tail": p(first_ray, 50)},
                    goal="reported",
                    met=None,
                )
            ],
            details={"ours_s": summary(first_ours), "ray_s": summary(first_ray or [0.0])},
            limits=FIRST_EVENT_LIMITS,
        ),
        Figure(
            number=13,
            title=f"Ray: event latency, trainer write → subscriber ({rate} events/s)",
            rows=[
                Row(
                    measure="trainer write → subscriber, p50",
                    ours=lat_p50,
                    unit="ms",
                    peers={"Ray log tail p50": p(tail_latency, 50) * 1000},
                    goal="p50 ≤ 300 ms",
                    met=lat_p50 <= 300,
                ),
                Row(
                    measure="trainer write → subscriber, p99",
                    ours=lat_p99,
                    unit="ms",
                    peers={"Ray log tail p99": p(tail_latency, 99) * 1000},
                    goal="p99 ≤ 1 s",
                    met=lat_p99 <= 1000,
                ),
            ],
            details={
                "ours_ms": summary([x * 1000 for x in ours_latency]),
                "ray_tail_ms": summary([x * 1000 for x in tail_latency] or [0.0]),
            },
            limits=LATENCY_LIMITS,
        ),
        Figure(
            number=14,
            title="Ray: cancel request → SIGTERM handled in the trainer",
            rows=[
                Row(
                    measure="cancel → SIGTERM in trainer, median",
                    ours=p(sigterm_ours, 50),
                    unit="ms",
                    peers={"Ray stop_job → SIGTERM": p(sigterm_ray, 50)},
                    goal="reported",
                    met=None,
                )
            ],
            details={"ours_ms": summary(sigterm_ours), "ray_stop_job_ms": summary(sigterm_ray)},
            limits=SIGTERM_LIMITS,
        ),
        Figure(
            number=15,
            title=f"Ray: grace precision, grace {GRACE_S:g} s, trainer still flushing",
            rows=[
                Row(
                    measure=f"SIGTERM → death − {GRACE_S:g} s, median",
                    ours=p(grace_ours, 50) * 1000,
                    unit="ms",
                    peers={"Ray stop_job (RAY_JOB_STOP_WAIT_TIME_S)": p(grace_ray, 50) * 1000},
                    goal=f"|Δ| ≤ {GRACE_GOAL_MS:g} ms, worst",
                    met=grace_worst <= GRACE_GOAL_MS,
                )
            ],
            details={
                "ours_s": summary(grace_ours),
                "ray_stop_job_s": summary(grace_ray),
                "ray_job_states_after_stop": sorted(set(ray_states)),
            },
            limits=GRACE_LIMITS,
            notes=[
                "Ray's job state after stop_job is STOPPED for a trainer that flushed and "
                "for one killed at the deadline alike; RunForge decides graceful or forced "
                "from the run folder and the events, as for local runs.",
                f"RAY_JOB_STOP_WAIT_TIME_S takes whole seconds only: asked for "
                f"{GRACE_S:g} s, stop_job was given {int(GRACE_S)} s, so its error is "
                f"mostly the {GRACE_S - int(GRACE_S):g} s it cannot express.",
            ],
        ),
    ]
