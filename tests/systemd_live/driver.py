"""Run inside ``user_manager.sh``: RunForge under a real systemd user manager, driven
with the real ``runforgectl``; prints one JSON report on stdout for the test to check.

1. ``runforgectl daemon install-service`` and ``daemon start`` (through systemd);
2. a real training run (random forest on the bundled demo_large.csv), and while it
   trains, ``systemctl --user restart runforged``: the daemon is replaced, the run goes
   on under its monitor to ``completed``;
3. a second run, and while it trains, ``systemctl --user stop runforged``: the run is
   cancelled gracefully, and nothing of RunForge is left running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

CTL = str(Path(sys.executable).with_name("runforgectl"))


def ctl(*args: str, cwd: Path | None = None) -> Any:
    done = subprocess.run(
        [CTL, "--json", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"runforgectl {' '.join(args)}: {done.returncode} {done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def systemctl(*args: str) -> str:
    done = subprocess.run(
        ["systemctl", "--user", *args], capture_output=True, text=True, timeout=120
    )
    return done.stdout.strip()


def main_pid() -> int:
    return int(systemctl("show", "-p", "MainPID", "--value", "runforged") or 0)


def wait_for(predicate: Any, what: str, timeout: float = 180) -> Any:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def result(run_dir: Path) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return value if value.get("state") not in (None, "queued", "running", "cancelling") else None


def start_training(workspace: Path) -> tuple[str, Path, int]:
    """A detached forest run; once it reports progress: its id, folder, trainer pid."""
    answer = ctl(
        "train", "--model", "random_forest", "--dataset", "data/demo_large.csv", "--detach",
        cwd=workspace,
    )  # fmt: skip
    run_id = answer.get("run_id") or answer["run"]["run_id"]
    run_dir = workspace / ".ml" / "runs" / run_id
    wait_for(
        lambda: any(e["type"] == "train_progress" for e in events(run_dir)), "training started"
    )
    spawned = next(e for e in events(run_dir) if e["type"] == "run_spawned")
    return run_id, run_dir, int(spawned["data"]["pid"])


def leftovers(run_ids: list[str]) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            environ = proc.environ()
        except psutil.Error:
            continue
        if environ.get("RUNFORGE_RUN_ID") in run_ids:
            found.append(proc.pid)
    return found


def main(workspace: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    subprocess.run([CTL, "daemon", "install-service"], capture_output=True, timeout=60)
    systemctl("daemon-reload")
    subprocess.run([CTL, "daemon", "start"], check=True, capture_output=True, timeout=120)
    report["first_daemon"] = main_pid()
    report["active_after_start"] = systemctl("is-active", "runforged")
    workspace.mkdir()
    ctl("sample-data", "data", cwd=workspace)
    ctl("trust", str(workspace))

    run_id, run_dir, trainer = start_training(workspace)
    report["trainer_alive_before_restart"] = psutil.pid_exists(trainer)
    systemctl("restart", "runforged")
    wait_for(lambda: ctl("ping") is not None, "the restarted daemon answers")
    report["second_daemon"] = main_pid()
    report["trainer_alive_after_restart"] = psutil.pid_exists(trainer)
    active = ctl("active", cwd=workspace)
    report["active_after_restart"] = [(r["run_id"], r["state"]) for r in active.get("runs", [])]
    first = wait_for(lambda: result(run_dir), "the first run's verdict")
    report["first_run_state"] = first["state"]
    seqs = [e["run_seq"] for e in events(run_dir)]
    report["first_run_seq_contiguous"] = seqs == list(range(1, len(seqs) + 1))
    report["first_run_terminal_events"] = sum(e["type"] == "run_terminal" for e in events(run_dir))
    index = json.loads((workspace / ".ml" / "outputs" / "index.json").read_text())
    report["first_run_index_entries"] = sum(
        1 for entry in index["runs"] if entry.get("run_id") == run_id
    )

    second_id, second_dir, _ = start_training(workspace)
    systemctl("stop", "runforged")
    report["active_after_stop"] = systemctl("is-active", "runforged")
    second = wait_for(lambda: result(second_dir), "the second run's verdict", timeout=60)
    report["second_run_state"] = second["state"]
    report["second_run_cancelled_marker"] = (second_dir / ".cancelled").exists()
    time.sleep(0.5)
    report["leftover_processes"] = leftovers([run_id, second_id])
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
