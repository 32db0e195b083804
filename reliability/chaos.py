"""``python -m reliability.chaos``: SIGKILL the daemon at random moments while runs start,
complete and are cancelled, and check after every restart that nothing was lost.

Bounded: it makes ``--kills`` daemon kills (default 1,000) and stops by itself. Between
kills it submits runs of the test trainer (fast and slow completions, graceful and
stubborn cancels, trainers with workers), cancels some with random graces, and kills the
daemon after a random pause; then it starts a new daemon and times how long it takes to
answer a ``ping`` with the runs still in flight. Every ``--settle-every`` kills, and at
the end, it lets every run finish (cancelling the slow ones) and checks each run it was
told was accepted:

- lost: a run whose trainer had started ended ``lost`` (its monitor should have kept it);
- stuck: no terminal ``result.json`` once the daemon has settled;
- verdict changed: a terminal state seen once was later different;
- duplicated: a run id more than once in an index, or two ``run_terminal`` events;
- torn: a JSON file (index, result, request, run, state records) that does not parse,
  or an events.jsonl line that does not;
- sequence: ``run_seq`` in events.jsonl not exactly 1, 2, 3...;
- temp files: ``.*.tmp.*`` left in ``.ml`` or the state directory;
- leftover processes: any process of the chaos session alive once all runs ended
  (beside the daemon).

It prints the figures and, with ``--write``, puts them into RELIABILITY.md between the
``<!-- chaos:begin -->`` and ``<!-- chaos:end -->`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforgectl.client import Client, DaemonError, DaemonUnavailable

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "tests" / "trainers"
RELIABILITY_MD = REPO / "RELIABILITY.md"
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
MARKER_ENV = "RUNFORGE_CHAOS_SESSION"
TERMINAL = {"completed", "failed", "cancelled_graceful", "cancelled_forced", "lost"}
WORKSPACES = 3

# (weight, --param switches) of the runs the chaos submits.
RUN_KINDS: list[tuple[int, dict[str, str]]] = [
    (40, {"RF_TEST_MODE": "complete", "RF_TEST_STEPS": "3"}),
    (20, {"RF_TEST_MODE": "complete", "RF_TEST_STEPS": "20", "RF_TEST_STEP_S": "0.05"}),
    (15, {"RF_TEST_MODE": "graceful", "RF_TEST_STEPS": "40", "RF_TEST_STEP_S": "0.05"}),
    (10, {"RF_TEST_MODE": "ignore_sigterm", "RF_TEST_STEPS": "40", "RF_TEST_STEP_S": "0.05"}),
    (10, {"RF_TEST_MODE": "grandchildren", "RF_TEST_GRANDCHILDREN": "2", "RF_TEST_STEPS": "30"}),
    (5, {"RF_TEST_MODE": "fail"}),
]


@dataclass
class Figures:
    kills: int = 0
    runs_accepted: int = 0
    runs_completed: int = 0
    runs_cancelled: int = 0
    runs_failed: int = 0
    cancels_sent: int = 0
    submits_unanswered: int = 0
    lost_with_trainer: int = 0
    lost_other: int = 0
    stuck: int = 0
    verdict_changed: int = 0
    duplicated_index: int = 0
    duplicated_terminal: int = 0
    torn_files: int = 0
    seq_errors: int = 0
    temp_files: int = 0
    leftover_processes: int = 0
    restart_ms: list[float] = field(default_factory=list)
    import_ms: list[float] = field(default_factory=list)  # spawn to daemon_ready
    in_flight_at_restart: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


class Chaos:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.session = f"{os.getpid()}-{time.time_ns()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFORGE_")}
        self.env.update(
            RUNFORGE_RUNTIME_DIR=str(root / "run"),
            RUNFORGE_CONFIG_DIR=str(root / "config"),
            RUNFORGE_STATE_DIR=str(root / "state"),
            PYTHONUNBUFFERED="1",
            **{MARKER_ENV: self.session},
        )
        self.endpoints = Endpoints.resolve(str(root / "run"))
        self.daemon: subprocess.Popen[bytes] | None = None
        self.workspaces: list[Path] = []
        self.accepted: dict[str, Path] = {}  # run id -> workspace
        self.verdicts: dict[str, str] = {}
        self.figures = Figures()

    # ------------------------------------------------------------------ daemon

    def start_daemon(self) -> float:
        """Start runforged; milliseconds until it answers a ping (one request, queued by
        ZeroMQ until the new daemon serves, so the figure is not rounded to a retry)."""
        log = open(self.root / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        started, started_wall = time.monotonic(), time.time()
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "runforged", "--log-format", "json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.root,
        )
        log.close()
        while True:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"runforged exited {self.daemon.returncode}; see daemon.log")
            try:
                with Client(self.endpoints, timeout_s=60) as client:
                    client.result(m.Ping())
                answered = (time.monotonic() - started) * 1000
                self.figures.import_ms.append(self.ready_after_ms(started_wall))
                return answered
            except (DaemonUnavailable, DaemonError):
                time.sleep(0.005)

    def ready_after_ms(self, started_wall: float) -> float:
        """From the spawn to the daemon's own ``daemon_ready`` log line (its imports and
        start-up; what remains of the restart time is the client's side)."""
        ready = 0.0
        with open(self.root / "daemon.log", "rb") as handle:
            for line in handle:
                if b'"daemon_ready"' in line:
                    with contextlib.suppress(ValueError, KeyError):
                        stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
                        ready = datetime.fromisoformat(stamp).timestamp()
        return max(0.0, (ready - started_wall) * 1000)

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait()

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.figures.note("the daemon did not stop within 120 s of SIGTERM")
                self.daemon.kill()
                self.daemon.wait()

    # ------------------------------------------------------------------ set-up

    def make_workspaces(self) -> None:
        for index in range(WORKSPACES):
            workspace = self.root / f"ws{index}"
            workspace.mkdir()
            (workspace / "rf_test_trainer").symlink_to(TRAINERS / "rf_test_trainer")
            (workspace / "data.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
            (workspace / ".vscode").mkdir()
            settings = {
                "runforge.mlRunnerModule": "rf_test_trainer",
                "runforge.datasetPath": "data.csv",
                "runforge.cancelGraceSeconds": 1,
                "runforge.maxConcurrentRuns": 4,
            }
            (workspace / ".vscode" / "settings.json").write_text(json.dumps(settings))
            with Client(self.endpoints) as client:
                client.result(m.TrustPath(path=str(workspace)))
            self.workspaces.append(workspace)

    # ------------------------------------------------------------------ actions

    def submit(self) -> None:
        workspace = self.rng.choice(self.workspaces)
        params = self.rng.choices([k for _, k in RUN_KINDS], [w for w, _ in RUN_KINDS])[0]
        try:
            with Client(self.endpoints, timeout_s=5) as client:
                result = client.result(m.Train(workspace=str(workspace), params=dict(params)))
        except (DaemonUnavailable, DaemonError) as exc:
            self.figures.submits_unanswered += 1
            self.figures.note(f"train not answered: {exc}")
            return
        run_id = result.run.run_id  # type: ignore[attr-defined]
        self.accepted[run_id] = workspace
        self.figures.runs_accepted += 1

    def cancel_some(self) -> None:
        """Cancel one of the runs in flight (queued, running or cancelling already)."""
        grace = self.rng.choice([None, 0.0, 0.3, 1.0])
        try:
            with Client(self.endpoints, timeout_s=5) as client:
                active = client.result(m.Active()).runs  # type: ignore[attr-defined]
                if not active:
                    return
                run = self.rng.choice(active)
                client.result(m.Cancel(workspace=run.workspace, run_id=run.run_id, grace_s=grace))
            self.figures.cancels_sent += 1
        except (DaemonUnavailable, DaemonError):
            pass  # it finished meanwhile, or the daemon is restarting: both fine

    def round(self) -> None:
        for _ in range(self.rng.randint(0, 4)):
            if self.rng.random() < 0.7:
                self.submit()
            else:
                self.cancel_some()
            time.sleep(self.rng.uniform(0, 0.15))
        time.sleep(self.rng.uniform(0, 0.5))

    # ------------------------------------------------------------------ checks

    def in_flight_records(self) -> int:
        runs = self.root / "state" / "runs"
        return len(list(runs.iterdir())) if runs.is_dir() else 0

    def settle(self, timeout_s: float = 180.0) -> None:
        """Let every run end: cancel what is still going after a while, wait for none."""
        give_up = time.monotonic() + timeout_s
        cancelled_all = False
        while time.monotonic() < give_up:
            with Client(self.endpoints, timeout_s=10) as client:
                active = client.result(m.Active()).runs  # type: ignore[attr-defined]
                if not active:
                    return
                if not cancelled_all and time.monotonic() > give_up - timeout_s + 5:
                    for run in active:
                        with contextlib.suppress(DaemonError):
                            client.result(
                                m.Cancel(workspace=run.workspace, run_id=run.run_id, grace_s=0.5)
                            )
                    cancelled_all = True
            time.sleep(0.2)
        self.figures.note(f"runs still active {timeout_s} s into settling")

    def check(self, final: bool) -> None:
        f = self.figures
        for workspace in self.workspaces:
            index = workspace / ".ml" / "outputs" / "index.json"
            if index.exists():
                try:
                    ids = [e["run_id"] for e in json.loads(index.read_text())["runs"]]
                except (ValueError, KeyError, TypeError):
                    f.torn_files += 1
                    f.note(f"torn index {index}")
                    ids = []
                dups = {i for i in ids if ids.count(i) > 1}
                f.duplicated_index += len(dups)
                for run_id in dups:
                    f.note(f"{run_id} more than once in {index}")
        for run_id, workspace in self.accepted.items():
            self.check_run(run_id, workspace, final)
        for base in [*(w / ".ml" for w in self.workspaces), self.root / "state"]:
            if base.exists():
                temps = [p for p in base.rglob(".*.tmp.*")]
                f.temp_files += len(temps)
                for temp in temps[:3]:
                    f.note(f"temp file left: {temp}")
        leftovers = self.session_processes()
        f.leftover_processes += len(leftovers)
        for proc in leftovers[:5]:
            f.note(f"leftover process {proc}")

    def check_run(self, run_id: str, workspace: Path, final: bool) -> None:
        f = self.figures
        folder = workspace / ".ml" / "runs" / run_id
        result_path = folder / "result.json"
        for name in ("result.json", "request.json", "run.json"):
            path = folder / name
            if path.exists():
                try:
                    json.loads(path.read_text())
                except ValueError:
                    if name != "run.json":  # the runner's own file; the test trainer's is atomic
                        f.torn_files += 1
                        f.note(f"torn {path}")
        state = ""
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
                state = result.get("state", "")
            except ValueError:
                pass
        if state not in TERMINAL:
            f.stuck += 1
            f.note(f"{run_id}: no terminal result.json after settling")
            return
        previous = self.verdicts.setdefault(run_id, state)
        if previous != state:
            f.verdict_changed += 1
            f.note(f"{run_id}: verdict {previous} became {state}")
        if state == "lost":
            if (folder / "trainer.pid").exists():
                f.lost_with_trainer += 1
                f.note(f"{run_id}: lost although its trainer had started")
            else:
                f.lost_other += 1
        seqs: list[int] = []
        terminals = 0
        events = folder / "events.jsonl"
        if events.exists():
            for line in events.read_bytes().splitlines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    f.torn_files += 1
                    f.note(f"{run_id}: torn events.jsonl line")
                    continue
                seqs.append(event["run_seq"])
                terminals += event["type"] == "run_terminal"
        if seqs != list(range(1, len(seqs) + 1)):
            f.seq_errors += 1
            f.note(f"{run_id}: run_seq not 1..n: {seqs[:5]}...{seqs[-5:]}")
        if terminals != 1:
            f.duplicated_terminal += terminals > 1
            f.note(f"{run_id}: {terminals} run_terminal events")

    def session_processes(self) -> list[str]:
        found = []
        daemon_pid = self.daemon.pid if self.daemon is not None else -1
        for proc in psutil.process_iter(["pid"]):
            if proc.pid in (os.getpid(), daemon_pid):
                continue
            try:
                if (
                    proc.environ().get(MARKER_ENV) == self.session
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def tally(self) -> None:
        f = self.figures
        f.runs_completed = sum(1 for s in self.verdicts.values() if s == "completed")
        f.runs_cancelled = sum(1 for s in self.verdicts.values() if s.startswith("cancelled"))
        f.runs_failed = sum(1 for s in self.verdicts.values() if s == "failed")

    def kill_session_processes(self) -> None:
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get(MARKER_ENV) == self.session:
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def busy_restarts(self, runs: int, rounds: int) -> None:
        """Restarts with ``runs`` slow runs in flight: the < 1 s goal's measure."""
        for _ in range(rounds):
            started = []
            for index in range(runs):
                workspace = self.workspaces[index % len(self.workspaces)]
                params = {"RF_TEST_MODE": "complete", "RF_TEST_STEPS": "100"}
                params["RF_TEST_STEP_S"] = "0.1"
                with Client(self.endpoints, timeout_s=10) as client:
                    reply = client.result(m.Train(workspace=str(workspace), params=params))
                run_id = reply.run.run_id  # type: ignore[attr-defined]
                self.accepted[run_id] = workspace
                started.append(run_id)
            for run_id in started:
                pid_file = self.accepted[run_id] / ".ml" / "runs" / run_id / "trainer.pid"
                give_up = time.monotonic() + 60
                while not pid_file.exists() and time.monotonic() < give_up:
                    time.sleep(0.02)
            self.figures.runs_accepted += len(started)
            in_flight = self.in_flight_records()
            self.kill_daemon()
            self.figures.kills += 1
            self.figures.restart_ms.append(self.start_daemon())
            self.figures.in_flight_at_restart.append(in_flight)
            self.settle()


def run_chaos(kills: int, settle_every: int, seed: int) -> Figures:
    root = Path(tempfile.mkdtemp(prefix="rf-chaos-", dir="/tmp"))
    chaos = Chaos(root, seed)
    try:
        (root / "config").mkdir()
        # Ten runs at once for the busy restarts (settings are read at each train).
        (root / "config" / "config.json").write_text(json.dumps({"maxConcurrentRunsGlobal": 12}))
        chaos.start_daemon()
        chaos.make_workspaces()
        chaos.busy_restarts(runs=10, rounds=3)
        for number in range(1, kills + 1):
            chaos.round()
            in_flight = chaos.in_flight_records()
            chaos.kill_daemon()
            chaos.figures.kills += 1
            chaos.figures.restart_ms.append(chaos.start_daemon())
            chaos.figures.in_flight_at_restart.append(in_flight)
            if number % settle_every == 0 or number == kills:
                chaos.settle()
                chaos.check(final=number == kills)
            if number % 50 == 0:
                print(f"chaos: {number}/{kills} kills", file=sys.stderr, flush=True)
        chaos.stop_daemon()
        time.sleep(0.5)
        leftovers = chaos.session_processes()
        chaos.figures.leftover_processes += len(leftovers)
        chaos.tally()
        return chaos.figures
    finally:
        chaos.stop_daemon()
        chaos.kill_session_processes()
        shutil.rmtree(root, ignore_errors=True)


def render(figures: Figures, seed: int) -> str:
    f = figures
    busy = [ms for ms, n in zip(f.restart_ms, f.in_flight_at_restart, strict=True) if n >= 10]
    median = statistics.median(f.restart_ms) if f.restart_ms else 0.0
    worst = max(f.restart_ms, default=0.0)
    rows = [
        ("daemon SIGKILLs", f.kills, ""),
        ("runs accepted", f.runs_accepted, "`train` answered"),
        (
            "completed / cancelled / failed",
            f"{f.runs_completed} / {f.runs_cancelled} / {f.runs_failed}",
            "",
        ),
        ("cancels sent", f.cancels_sent, "random grace: default, 0, 0.3 s, 1 s"),
        ("runs lost that had a live trainer", f.lost_with_trainer, "goal 0"),
        ("runs stuck non-terminal", f.stuck, "goal 0"),
        ("verdicts changed after being written", f.verdict_changed, "goal 0"),
        ("duplicated index entries", f.duplicated_index, "goal 0"),
        ("runs with two run_terminal events", f.duplicated_terminal, "goal 0"),
        ("runs with run_seq not 1, 2, 3...", f.seq_errors, "goal 0"),
        ("torn files", f.torn_files, "goal 0"),
        ("temp files left", f.temp_files, "goal 0"),
        ("leftover processes", f.leftover_processes, "goal 0"),
        ("restart to first answer, median / worst", f"{median:.0f} / {worst:.0f} ms", ""),
        (
            "of which spawn to `daemon_ready` (imports, start-up), median",
            f"{statistics.median(f.import_ms):.0f} ms" if f.import_ms else "n/a",
            "",
        ),
        (
            "restart with >= 10 runs in flight, worst",
            f"{max(busy):.0f} ms ({len(busy)} restarts)" if busy else "no such restart",
            "goal < 1,000 ms",
        ),
    ]
    lines = [
        f"`python -m reliability.chaos --kills {f.kills} --seed {seed}`",
        "",
        "| measure | value | note |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    if f.problems:
        lines += ["", "Problems seen (first 50):", ""]
        lines += [f"- {p}" for p in f.problems]
    return "\n".join(lines) + "\n"


def write_markdown(text: str, path: Path = RELIABILITY_MD) -> None:
    current = path.read_text() if path.exists() else "# Reliability\n"
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        current = head + block + tail
    else:
        current = current.rstrip("\n") + "\n\n## Daemon kills (chaos)\n\n" + block + "\n"
    path.write_text(current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.chaos", description=__doc__)
    parser.add_argument("--kills", type=int, default=1000, help="daemon SIGKILLs (default 1000)")
    parser.add_argument("--settle-every", type=int, default=25, help="check every N kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update RELIABILITY.md")
    args = parser.parse_args(argv)
    figures = run_chaos(args.kills, args.settle_every, args.seed)
    text = render(figures, args.seed)
    print(text)
    if args.write:
        write_markdown(text)
    failures = (
        figures.lost_with_trainer
        + figures.stuck
        + figures.verdict_changed
        + figures.duplicated_index
        + figures.duplicated_terminal
        + figures.seq_errors
        + figures.torn_files
        + figures.temp_files
        + figures.leftover_processes
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
