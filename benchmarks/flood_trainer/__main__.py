"""Entry point: ``train --out RUN_DIR``; see the package docstring."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

BATCH = 128
TEMPLATE = (
    '{"event": "train_progress", "timestamp": "%s", "run_id": "%s", '
    '"epoch": %d, "total_epochs": %d, "loss": %.6f}\n'
)


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(2, view) :]


def _event(event: str, run_id: str, **fields: object) -> bytes:
    line = {"event": event, "timestamp": _utc_now(), "run_id": run_id, **fields}
    return json.dumps(line).encode() + b"\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flood_trainer")
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--out", required=True)
    args, _ignored = parser.parse_known_args(argv)
    run_id = Path(args.out).name
    total = int(os.environ.get("RF_BENCH_EVENTS", "100000"))
    _write(_event("run_start", run_id, preset_id="std-train", model_family="flood"))
    _write(_event("train_started", run_id, model_family="flood"))
    for first in range(0, total, BATCH):
        stamp = _utc_now()
        lines = [
            TEMPLATE % (stamp, run_id, epoch, total, 1.0 / (epoch + 1))
            for epoch in range(first, min(first + BATCH, total))
        ]
        _write("".join(lines).encode())
    _write(_event("train_finished", run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
