"""The test trainer's command line and its modes (each described in the package docstring)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from rf_test_trainer.faults import codec_garbage, double_fork, flood_stdout
from rf_test_trainer.hostile import HOSTILE_MODES
from rf_test_trainer.run_folder import EXIT_CANCELLED, RunFolder, utc_now, write_stderr
from rf_test_trainer.workers import start_descendants, worker_main
from runforge_contract.atomicio import write_json_atomic

MODE_ENV = "RF_TEST_MODE"
EXIT_FAILED = 1
# The slow modes run about a minute unless told otherwise: long enough to be cancelled.
SLOW_STEPS = 600
SLOW_STEP_S = 0.1
MEBIBYTE = 1 << 20


class CancelRequested(Exception):
    """Raised by the SIGTERM handler, wherever the trainer is, to start the cancel path."""


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float_env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _length(slow: bool) -> tuple[int, float]:
    """(steps, seconds per step) from RF_TEST_STEPS / RF_TEST_STEP_S."""
    steps = _int_env("RF_TEST_STEPS", SLOW_STEPS if slow else 3)
    return max(1, steps), _float_env("RF_TEST_STEP_S", SLOW_STEP_S if slow else 0.0)


def _silence_stderr() -> None:
    """Point fd 2 at /dev/null: whoever reads our stderr sees EOF while we keep running."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _train_or_cancel(
    run: RunFolder,
    on_cancel: Callable[[RunFolder], int],
    *,
    on_signal: Callable[[], None] | None = None,
    silence_stderr: bool = False,
) -> int:
    """A slow complete run; a SIGTERM at any point hands over to ``on_cancel``."""

    def handle_sigterm(signum: int, frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal()
        raise CancelRequested

    time.sleep(_float_env("RF_TEST_HANDLER_DELAY_S", 0.0))  # start-up, handler not yet in
    signal.signal(signal.SIGTERM, handle_sigterm)
    try:
        # Inside: trainer.pid is visible (renamed) before write_pid returns (it still
        # fsyncs the folder), and a SIGTERM sent on seeing it must be a cancel.
        run.write_pid()
        run.announce()
        if silence_stderr:
            _silence_stderr()
        run.load()
        run.complete(*_length(slow=True))
        # Finished: from here on a SIGTERM changes nothing.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return 0
    except CancelRequested:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return on_cancel(run)


def _cancel_gracefully(run: RunFolder) -> int:
    return run.cancel_gracefully(_float_env("RF_TEST_FLUSH_S", 1.0))


def complete(run: RunFolder) -> int:
    run.write_pid()
    run.announce()
    run.load()
    run.complete(*_length(slow=False))
    return 0


def graceful(run: RunFolder) -> int:
    return _train_or_cancel(run, _cancel_gracefully)


def ignore_sigterm(run: RunFolder) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run.write_pid()
    run.announce()
    run.load()
    run.complete(*_length(slow=True))
    return 0


def grandchildren(run: RunFolder) -> int:
    if os.environ.get("RF_TEST_TRAINER_TERM") == "exit":
        signal.signal(signal.SIGTERM, _exit_cancelled)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run.write_pid()
    run.announce()
    run.load()
    # Our children's Popen objects stay referenced (unreaped) for the whole run.
    _children, descendants = start_descendants(_int_env("RF_TEST_GRANDCHILDREN", 3))
    write_json_atomic(run.path / "tree.json", {"trainer": os.getpid(), "descendants": descendants})
    run.complete(*_length(slow=True))
    return 0


def _exit_cancelled(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_CANCELLED)


def marker_no_stderr(run: RunFolder) -> int:
    return _train_or_cancel(run, _cancel_gracefully, silence_stderr=True)


def marker_fails_event(run: RunFolder) -> int:
    def cancel_without_marker(run: RunFolder) -> int:
        return run.cancel_gracefully(_float_env("RF_TEST_FLUSH_S", 1.0), marker_fails=True)

    return _train_or_cancel(run, cancel_without_marker)


def finish_on_cancel(run: RunFolder) -> int:
    def finish(run: RunFolder) -> int:
        if run.step in ("dataset_loading", "training", "metrics_computation"):
            run.compute_metrics()
        if run.step != "shutdown":
            run.write_artifacts()
        return _int_env("RF_TEST_FINISH_EXIT", 0)

    return _train_or_cancel(run, finish)


def fail(run: RunFolder) -> int:
    run.write_pid()
    run.announce()
    run.load()
    run.start_training()
    run.emit(
        "run_failed",
        error={
            "code": "TRAINING_FAILED",
            "message": f"rf_test_trainer failed on purpose ({MODE_ENV}=fail)",
        },
        step=run.step,
    )
    return EXIT_FAILED


def exit0_no_runjson(run: RunFolder) -> int:
    run.write_pid()
    run.announce()
    run.load()
    run.train(*_length(slow=False))
    run.compute_metrics()
    return 0


def flood(run: RunFolder) -> int:
    count = _int_env("RF_TEST_EVENTS", 1000)
    rate = _float_env("RF_TEST_RATE", 0.0)
    run.write_pid()
    run.announce()
    run.load()
    run.start_training()
    started = time.monotonic()
    for sequence in range(count):
        if rate > 0:
            delay = started + sequence / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        run.progress(sequence, count)
    run.compute_metrics()
    run.write_artifacts()
    return 0


def _garbage_lines(run: RunFolder) -> list[bytes]:
    """The seven lines the garbage mode interleaves, in the documented order."""
    stamp = {"timestamp": utc_now(), "run_id": run.run_id}
    documents: list[object] = [
        {**stamp, "message": "a JSON object without an event field"},
        {"event": "no_such_event", **stamp},
        {"event": "train_progress", **stamp, "epoch": "three", "total_epochs": None},
        [1, 2, 3],
        {"event": "train_progress", **stamp, "epoch": 0, "total_epochs": 1, "pad": "x" * MEBIBYTE},
    ]
    return [
        b"this line is plain text, not an event\n",
        b'{"event": "train_progress", "epoch": \n',
        *(json.dumps(document).encode() + b"\n" for document in documents),
    ]


def garbage(run: RunFolder) -> int:
    steps, step_s = _length(slow=False)
    lines = iter(_garbage_lines(run))

    def next_garbage() -> None:
        write_stderr(next(lines, b""))

    run.write_pid()
    run.announce()
    next_garbage()
    run.load()
    next_garbage()
    run.start_training()
    next_garbage()
    for epoch in range(steps):
        time.sleep(step_s)
        run.progress(epoch, steps)
        next_garbage()
    for line in lines:
        write_stderr(line)
    run.compute_metrics()
    run.write_artifacts()
    return 0


def crash_midwrite(run: RunFolder) -> int:
    run.write_pid()
    run.announce()
    run.load()
    run.train(*_length(slow=False))
    run.compute_metrics()
    run.step = "artifact_writing"
    text = json.dumps(run.run_json(), indent=2).encode()
    # Deliberately not atomic: this mode exists to leave a torn run.json behind.
    with open(run.path / "run.json", "wb") as stream:
        stream.write(text[: len(text) // 2])
        stream.flush()
        os.fsync(stream.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("still alive after SIGKILL to itself")


def sigterm_probe(run: RunFolder) -> int:
    def record_arrival() -> None:
        arrival = {"monotonic_ns": time.monotonic_ns(), "time_ns": time.time_ns()}
        write_json_atomic(run.path / "sigterm_received", arrival)

    return _train_or_cancel(run, _cancel_gracefully, on_signal=record_arrival)


MODES: dict[str, Callable[[RunFolder], int]] = {
    "complete": complete,
    "graceful": graceful,
    "ignore_sigterm": ignore_sigterm,
    "grandchildren": grandchildren,
    "marker_no_stderr": marker_no_stderr,
    "marker_fails_event": marker_fails_event,
    "finish_on_cancel": finish_on_cancel,
    "fail": fail,
    "exit0_no_runjson": exit0_no_runjson,
    "flood": flood,
    "codec_garbage": codec_garbage,
    "flood_stdout": flood_stdout,
    "double_fork": double_fork,
    "garbage": garbage,
    "crash_midwrite": crash_midwrite,
    "sigterm_probe": sigterm_probe,
    **HOSTILE_MODES,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rf_test_trainer", description="RunForge's purpose-built test trainers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help=f"train a run; behaviour from ${MODE_ENV}")
    train.add_argument("--out", required=True, help="the run folder")
    train.add_argument("--preset", default="std-train")
    train.add_argument("--model", default="logistic_regression")
    train.add_argument("--param", action="append", default=[])
    worker = commands.add_parser("worker", help="a descendant for the grandchildren mode")
    worker.add_argument("--spawn-grandchild", action="store_true")
    args, _ignored = parser.parse_known_args(argv)
    if args.command == "worker":
        return worker_main(args.spawn_grandchild)
    for param in args.param:  # --param RF_TEST_X=value: this run's own switch
        name, _, value = param.partition("=")
        if name.startswith("RF_TEST_"):
            os.environ[name] = value
    mode = os.environ.get(MODE_ENV, "complete")
    if mode not in MODES:
        parser.error(f"unknown {MODE_ENV}={mode!r}; one of: {', '.join(MODES)}")
    return MODES[mode](RunFolder(args.out, args.preset, args.model))
