"""Figures 2 and 11: the control plane. A ping round trip from the in-process client
(``runforgectl.client.Client``) against a bare pyzmq REQ/REP echo in its own process; and
the daemon's start (until it answers a ping) and stop (SIGTERM, no runs, until exit)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import zmq

from benchmarks.processes import terminate, wait_until
from benchmarks.results import Figure, Row
from benchmarks.runforged_process import RunforgedProcess
from benchmarks.stats import alternating, paired_ratio, percentile, summary
from runforge_protocol import messages as m

ECHO_SERVER = Path(__file__).resolve().with_name("echo_server.py")

ROUND_TRIP_LIMITS = (
    "The floor is the bare REQ/REP echo: two Python processes exchanging one small "
    "message over an ipc socket, i.e. ZeroMQ's I/O threads plus two wake-ups of each "
    "process. Our round trip adds the request's MessagePack encode/decode on both sides, "
    "the dispatch on the daemon's asyncio loop and the reply's encode/decode. p99 is "
    "dominated by scheduling on the two shared cores."
)
LIFECYCLE_LIMITS = (
    "Start is interpreter start-up plus importing the daemon (asyncio, pyzmq, msgspec, "
    "structlog, psutil) plus binding, plus the reconciliation of runs a crashed daemon left "
    "in flight (none here), which now finishes before the first request is read; "
    "`python -X importtime -m runforged --help` shows the import part. Stop is the asyncio "
    "loop noticing SIGTERM, closing both sockets and removing the runtime files."
)


def _round_trips(call: object, count: int) -> list[float]:
    assert callable(call)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def round_trip(quick: bool) -> Figure:
    warmup, rounds, per_round = (200, 4, 250) if quick else (1000, 20, 500)
    with RunforgedProcess() as ours:
        ours.start()
        echo_endpoint = f"ipc://{ours.root}/echo.sock"
        echo = subprocess.Popen([sys.executable, str(ECHO_SERVER), echo_endpoint])
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        req = ctx.socket(zmq.REQ)
        try:
            req.connect(echo_endpoint)
            payload = m.encode(m.Ping(id="1-1"))
            client = ours.client

            def bare() -> None:
                req.send(payload)
                req.recv()

            def ping() -> None:
                client.call(m.Ping())

            contenders = {"echo": bare, "ping": ping}
            for call in contenders.values():
                _round_trips(call, warmup)
            samples: dict[str, list[float]] = {name: [] for name in contenders}
            for _, order in alternating(rounds, list(contenders)):
                for name in order:
                    samples[name] += _round_trips(contenders[name], per_round)
        finally:
            req.close(0)
            ctx.term()
            terminate(echo)
    ours_s, echo_s = samples["ping"], samples["echo"]
    rows = []
    for label, q, goal_us in (("p50", 50, 150), ("p99", 99, 400)):
        value = percentile(ours_s, q) * 1e6
        floor = percentile(echo_s, q) * 1e6
        rows.append(
            Row(
                measure=f"control round trip (ping), {label}",
                ours=value,
                unit="µs",
                peers={f"bare REQ/REP echo {label}": floor},
                ratio=value / floor,
                ratio_of=f"bare REQ/REP echo {label}",
                goal=f"≤ {goal_us} µs",
                met=value <= goal_us,
            )
        )
    return Figure(
        number=2,
        title="Control round trip from an in-process client",
        rows=rows,
        details={
            "ping_s": summary(ours_s),
            "echo_s": summary(echo_s),
            "paired_median_ratio": paired_ratio(ours_s, echo_s),
        },
        limits=ROUND_TRIP_LIMITS,
    )


def lifecycle(quick: bool) -> Figure:
    rounds = 3 if quick else 10
    starts, stops = [], []
    with RunforgedProcess() as ours:
        ours.start()  # warm-up: bytecode and page caches
        ours.stop()
        for _ in range(rounds):
            starts.append(ours.start())
            # Let start-up work scheduled after readiness finish: we time a stop at rest.
            time.sleep(0.2)
            stops.append(ours.stop())
            wait_until(lambda: not ours.endpoints.control_path.exists(), 10, "socket removal")
    start_ms = summary(starts)["median"] * 1000
    stop_ms = summary(stops)["median"] * 1000
    return Figure(
        number=11,
        title="Daemon start until it answers ping; stop with no runs",
        rows=[
            Row(
                measure="daemon start → first ping answered",
                ours=start_ms,
                unit="ms",
                goal="≤ 300 ms",
                met=start_ms <= 300,
            ),
            Row(
                measure="daemon stop (SIGTERM, no runs) → exit",
                ours=stop_ms,
                unit="ms",
                goal="≤ 100 ms",
                met=stop_ms <= 100,
            ),
        ],
        details={"start_s": summary(starts), "stop_s": summary(stops)},
        limits=LIFECYCLE_LIMITS,
    )


def run(quick: bool) -> list[Figure]:
    return [round_trip(quick), lifecycle(quick)]
