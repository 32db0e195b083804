"""Figure 1: whole-process client commands, ``runforgectl ping`` and ``status`` against the
import floor (``python -c "import zmq, msgspec"``), ``supervisorctl status`` and
``circusctl status``, each against its own running daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.peers import Circus, Supervisor
from benchmarks.results import Figure, Row
from benchmarks.runforged_process import RunforgedProcess
from benchmarks.stats import alternating, paired_ratio, summary

LIMITS = (
    'Interpreter start-up and imports. The floor is `python -c "import zmq, msgspec"`: '
    "a Python process that loads the two libraries every client needs; the round trip "
    "to the daemon itself is tens of microseconds (figure 2). Run `python -X importtime "
    "-m runforgectl ping` to see what the client imports beyond the floor."
)
FLOOR = "import floor"
INTERPRETER = "interpreter start"


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    seconds = time.perf_counter() - started
    # supervisorctl status exits 3 when a program is stopped: its answer is still complete.
    if done.returncode not in (0, 3):
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()}")
    return seconds


def run(quick: bool) -> list[Figure]:
    warmup, rounds = (2, 5) if quick else (3, 30)
    with RunforgedProcess() as ours, Supervisor() as supervisor, Circus() as circus:
        ours.start()
        supervisor.start()
        circus.start()
        plain = {k: v for k, v in os.environ.items() if not k.startswith("RUNFORGE_")}
        commands = {
            INTERPRETER: ([sys.executable, "-c", "pass"], plain),
            FLOOR: ([sys.executable, "-c", "import zmq, msgspec"], plain),
            "runforgectl ping": (ours.ctl("ping"), ours.env),
            "runforgectl status": (ours.ctl("status"), ours.env),
            "supervisorctl status": (supervisor.ctl("status"), plain),
            "circusctl status": (circus.ctl("status"), plain),
        }
        for _ in range(warmup):
            for argv, env in commands.values():
                _time(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _, order in alternating(rounds, list(commands)):
            for name in order:
                argv, env = commands[name]
                times[name].append(_time(argv, env))

    def ms(name: str) -> float:
        return summary(times[name])["median"] * 1000

    goals = {FLOOR: 1.3, "supervisorctl status": 0.6, "circusctl status": 0.5}
    rows = []
    for ours_name in ("runforgectl ping", "runforgectl status"):
        for theirs, goal in goals.items():
            ratio = paired_ratio(times[ours_name], times[theirs])
            rows.append(
                Row(
                    measure=f"`{ours_name}` / {theirs.split()[0] if theirs != FLOOR else FLOOR}",
                    ours=ms(ours_name),
                    unit="ms",
                    peers={theirs: ms(theirs)},
                    ratio=ratio,
                    ratio_of=theirs,
                    goal=f"≤ {goal}×",
                    met=ratio <= goal,
                )
            )
    return [
        Figure(
            number=1,
            title="Whole-process client commands (fork to exit, median)",
            rows=rows,
            details={name: summary(samples) for name, samples in times.items()},
            limits=LIMITS,
            notes=[
                f"Interpreter start alone (`python -c pass`): {ms(INTERPRETER):.1f} ms; the "
                f"import floor: {ms(FLOOR):.1f} ms. The floor is "
                f"{paired_ratio(times[FLOOR], times['supervisorctl status']):.2f}× "
                "`supervisorctl status` and "
                f"{paired_ratio(times[FLOOR], times['circusctl status']):.2f}× "
                "`circusctl status`: the bound on any client that imports pyzmq and msgspec.",
            ],
        )
    ]
