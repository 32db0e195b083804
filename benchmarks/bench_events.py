"""Figure 6: the event relay. One trainer writes ``train_progress`` events to stderr as
fast as it can (``benchmarks/flood_trainer``, many lines per write), then at a fixed
10,000 events/s (``rf_test_trainer``'s ``flood`` mode, one write per event); the run's
monitor parses, numbers and persists them, the daemon publishes them to four subscribers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from benchmarks.processes import wait_until
from benchmarks.results import Figure, Row
from benchmarks.runforged_process import RunforgedProcess
from runforge_protocol import events as ev
from runforge_protocol import messages as m

REPO = Path(__file__).resolve().parents[1]
FLOOD_TRAINER = Path(__file__).resolve().with_name("flood_trainer")
SUBSCRIBERS = 4
FIXED_RATE = 10_000

LIMITS = (
    "Two hops per event. The run's monitor (standard-library Python) reads the pipe, "
    "splits lines, JSON-decodes and checks each event, numbers it, appends it to "
    "events.jsonl and writes it to the daemon's Unix socket (a daemon that falls behind "
    "catches up from the file). The daemon's one event loop decodes a read's event lines "
    "in one msgspec call, stamps each with its daemon-wide seq, MessagePack-encodes it and "
    "hands it to ZeroMQ (which copies it to each subscriber in its I/O thread); the "
    "subscribers read topic and payload with two plain recv calls. The trainer, the "
    "monitor, the daemon and the four subscribers (one Python process here) share two "
    "cores, so the delivered rate is bounded by the CPU each of them gets and set by the "
    "slowest."
)


def _flood(events: int, rate: int | None) -> dict[str, Any]:
    """One flood run through a fresh daemon (rate None: as fast as the trainer can write);
    what the trainer wrote and what each subscriber saw."""
    trainer_env = {"RF_TEST_MODE": "flood", "RF_TEST_EVENTS": str(events)}
    if rate is None:
        trainer_env["RF_BENCH_EVENTS"] = str(events)
    else:
        trainer_env["RF_TEST_RATE"] = str(rate)
    with RunforgedProcess(trainer_env) as ours:
        ours.start()
        if rate is None:
            workspace = ours.trainer_workspace("ws", {"runforge.mlRunnerModule": "rf_bench_flood"})
            (workspace / "rf_bench_flood").symlink_to(FLOOD_TRAINER)
        else:
            workspace = ours.trainer_workspace("ws")
        prefix = ev.run_topic_prefix(str(workspace.resolve()))
        subscribers = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.event_subscribers",
                ours.endpoints.events,
                prefix.decode(),
                str(SUBSCRIBERS),
            ],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        try:

            def all_subscribed() -> bool:
                status = ours.client.result(m.Status())
                assert isinstance(status, m.StatusResult)
                return status.subscriptions >= SUBSCRIBERS + 1

            wait_until(all_subscribed, 60, "the subscribers", interval_s=0.01)
            daemon = psutil.Process(ours.pid)
            cpu_before = sum(daemon.cpu_times()[:2])
            run_id = ours.train(workspace)
            out, _ = subscribers.communicate(timeout=600)
            daemon_cpu_s = sum(daemon.cpu_times()[:2]) - cpu_before
        finally:
            if subscribers.poll() is None:
                subscribers.kill()
                subscribers.wait()
        seen: list[dict[str, Any]] = json.loads(out)
        written = _write_span(workspace / ".ml" / "runs" / run_id / "events.jsonl")
    return {
        "events": events,
        "rate": rate,
        "written": written,
        "subscribers": seen,
        "daemon_cpu_us_per_event": daemon_cpu_s / events * 1e6,
    }


def _write_span(events_file: Path) -> dict[str, float]:
    """First and last trainer write times of the progress events (from the persisted
    events, which carry the trainer's own timestamps)."""
    from benchmarks.event_subscribers import _parse_utc

    stamps = []
    with open(events_file, "rb") as handle:
        for line in handle:
            if b'"train_progress"' in line:
                stamps.append(json.loads(line)["data"]["timestamp"])
    return {"first": _parse_utc(stamps[0]), "last": _parse_utc(stamps[-1]), "count": len(stamps)}


def _delivered_rate(run: dict[str, Any]) -> float:
    """Progress events per second from the trainer's first write to the last delivery,
    for the slowest subscriber."""
    first_written = run["written"]["first"]
    return min(
        s["progress_events"] / (s["last_progress"] - first_written) for s in run["subscribers"]
    )


def run(quick: bool) -> list[Figure]:
    flood_events, fixed_events = (20_000, 10_000) if quick else (200_000, 50_000)
    fastest = _flood(flood_events, None)
    fixed = _flood(fixed_events, FIXED_RATE)
    fastest_gaps = sum(s["gaps"] for s in fastest["subscribers"])
    fixed_gaps = sum(s["gaps"] for s in fixed["subscribers"])
    best_rate = _delivered_rate(fastest) if fastest_gaps == 0 else 0.0
    if fixed_gaps == 0:
        best_rate = max(best_rate, _delivered_rate(fixed))
    cpu_us = fastest["daemon_cpu_us_per_event"]
    p50_ms = max(s["latency_p50_s"] for s in fixed["subscribers"]) * 1000
    p99_ms = max(s["latency_p99_s"] for s in fixed["subscribers"]) * 1000
    return [
        Figure(
            number=6,
            title=f"Event relay: one trainer → {SUBSCRIBERS} subscribers",
            rows=[
                Row(
                    measure=f"highest rate with zero gaps ({SUBSCRIBERS} subscribers)",
                    ours=best_rate,
                    unit="events/s",
                    goal="≥ 50,000 events/s",
                    met=best_rate >= 50_000,
                ),
                Row(
                    measure="daemon CPU per relayed event (as fast as possible)",
                    ours=cpu_us,
                    unit="µs",
                    goal="(context)",
                    met=None,
                ),
                Row(
                    measure=f"trainer write → subscriber, p50 at {FIXED_RATE:,}/s",
                    ours=p50_ms,
                    unit="ms",
                    goal="(context)",
                    met=None,
                ),
                Row(
                    measure=f"trainer write → subscriber, p99 at {FIXED_RATE:,}/s",
                    ours=p99_ms,
                    unit="ms",
                    goal="≤ 10 ms",
                    met=p99_ms <= 10,
                ),
            ],
            details={
                "as_fast_as_possible": fastest,
                f"fixed_{FIXED_RATE}": fixed,
                "gaps": {"as_fast_as_possible": fastest_gaps, "fixed": fixed_gaps},
            },
            limits=LIMITS,
            notes=[
                f"The daemon spent {cpu_us:.1f} µs of CPU per relayed event, all threads "
                f"included: {1e6 / cpu_us:,.0f} events/s if it had one core to itself.",
                f"Gaps: {fastest_gaps} as fast as possible, {fixed_gaps} at "
                f"{FIXED_RATE:,}/s, over {SUBSCRIBERS} subscribers.",
            ],
        )
    ]
