"""The hostile modes: a trainer (trusted code, buggy or malicious) that attacks the daemon
through its own run folder. Described with the other modes in the package docstring."""

from __future__ import annotations

import json
import os
import signal
from types import FrameType
from typing import Any

from rf_test_trainer.run_folder import EXIT_CANCELLED, MARKER_NAME, RunFolder, utc_now


def _outside() -> str:
    return os.environ["RF_TEST_OUTSIDE"]


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def swap_folder(run: RunFolder) -> int:
    """Complete, then move the run folder aside and leave a symlink to the outside
    directory in its place; exit 0."""
    run.write_pid()
    run.announce()
    run.load()
    run.complete(3, 0.0)
    os.rename(run.path, run.path.with_name(run.path.name + ".moved"))
    os.symlink(_outside(), run.path)
    return 0


def hostile_run_json(run: RunFolder) -> int:
    """Complete, with ``RF_TEST_RUN_JSON_PATCH`` (a JSON object) merged into run.json."""
    run.write_pid()
    run.announce()
    run.load()
    run.train(3, 0.0)
    run.compute_metrics()
    original = run.run_json

    def patched() -> dict[str, Any]:
        document = original()
        _merge(document, json.loads(os.environ.get("RF_TEST_RUN_JSON_PATCH", "{}")))
        return document

    run.run_json = patched  # type: ignore[method-assign]
    run.write_artifacts()
    return 0


def metrics_symlink(run: RunFolder) -> int:
    """Complete, then replace metrics.json by a symlink to ``$RF_TEST_OUTSIDE/metrics.json``."""
    run.write_pid()
    run.announce()
    run.load()
    run.complete(3, 0.0)
    metrics = run.path / "metrics.json"
    metrics.unlink()
    metrics.symlink_to(os.path.join(_outside(), "metrics.json"))
    return 0


def hostile_marker(run: RunFolder) -> int:
    """Slow ``complete``; on SIGTERM writes a ``.cancelled`` marker whose partial artifacts
    and reason are hostile (``..``, absolute paths, NUL and escape characters) beside one
    honest entry, emits run_cancelled and exits 143."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.write_artifact("checkpoint.partial.json", b"{}\n")
        marker = {
            "schema_version": "cancelled.v1.0.0",
            "run_id": run.run_id,
            "run_dir": run.run_dir,
            "cancelled_at": utc_now(),
            "step": "training",
            "reason": "SIGTERM\x1b[2J\x00forged",
            "partial_artifacts": [
                f"{run.run_dir}/checkpoint.partial.json",
                "../../../etc/passwd",
                "/etc/shadow",
                f"{run.run_dir}/../../../../outside",
                f"{run.run_dir}/a\x00b",
            ],
        }
        (run.path / MARKER_NAME).write_text(json.dumps(marker))
        run.emit("run_cancelled", step="training", reason="SIGTERM", graceful=True)
        raise SystemExit(EXIT_CANCELLED)

    signal.signal(signal.SIGTERM, on_sigterm)
    run.write_pid()
    run.announce()
    run.load()
    run.complete(600, 0.1)
    return 0


HOSTILE_MODES = {
    "swap_folder": swap_folder,
    "hostile_run_json": hostile_run_json,
    "metrics_symlink": metrics_symlink,
    "hostile_marker": hostile_marker,
}
