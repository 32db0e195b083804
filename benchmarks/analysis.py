"""The prose of BENCHMARKS.md that numbers cannot say: the method, and for each figure
whose goal was missed, why (with the profile that shows it) and the plan to fix it."""

from __future__ import annotations

RERUN = """\
```sh
.venv/bin/pip install -e '.[bench]'        # the peers: circus, supervisor
.venv/bin/python -m benchmarks             # the whole suite; rewrites BENCHMARKS.md
.venv/bin/python -m benchmarks --quick     # smoke run: few rounds, small sizes
.venv/bin/python -m benchmarks --only 2,6  # some figures (BENCHMARKS.md left alone)
```

Run it from the repository root, on an otherwise idle machine if you can: the whole
suite takes under 10 minutes on 2 cores. Every run also writes its numbers, with the
sample summaries behind the table, as JSON to `benchmarks/results/` (git-ignored).
"""

METHOD = """\
- **Side by side.** Every peer runs on this machine in the same suite run: circusd and
  supervisord each in a temp dir, on ipc/unix sockets there, supervising the same
  stand-in program (`benchmarks/peer_program.py`); runforged in a private runtime dir
  running the project's purpose-built trainers (`tests/trainers/rf_test_trainer`), or
  `benchmarks/flood_trainer` where the trainer must never be the bottleneck. Everything
  is stopped and removed afterwards.
- **Warm-up, then rounds in alternating order.** Each comparison starts with warm-up
  runs (bytecode and page caches, first connections), then several rounds; in each round
  every contender runs once, the order rotated by one each round so that nobody always
  goes first or last.
- **Medians and p99, ratios pair by pair.** Times are medians (p99 where latency
  matters, nearest-rank). A ratio "ours / theirs" is the median of the per-round ratios,
  so that the drift of a shared, noisy machine cancels within each pair.
- **Clocks.** Cross-process instants use CLOCK_MONOTONIC (system-wide): the trainers
  record when their SIGTERM handler ran, and deaths are seen through pidfds (readable the
  moment a process exits, whoever its parent is). Event latency compares the trainer's
  write timestamp (wall clock, µs) with the subscriber's wall clock on the same machine.
- **Bytecode caches** are written as after any install (the suite drops
  `PYTHONDONTWRITEBYTECODE`, which this machine sets, for everything it starts); without
  them every `runforgectl` would recompile the project's modules on each start.
- **Timing goals live here**, never in the test suite; `tests/benchmarks` only checks
  that the quick mode still runs.
"""

# Figure number -> why its goal is missed and the plan, rendered only while it is missed.
MISSED: dict[int, str] = {}
