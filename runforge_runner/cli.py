"""The runner's command line: train, inspect, inspect-artifact, sample-data.

Every failure is one line and an exit code (see ``contract.EXIT_*``), never a traceback:
``train`` reports it as a ``run_failed`` event on stderr; the other commands print
``runforge_runner: error: ...`` on stderr. The JSON answers go to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from runforge_runner.contract import (
    ERROR_INVALID_ARGUMENTS,
    EXIT_CANCELLED,
    EXIT_OK,
    EXIT_USAGE,
    RUN_ID_PATTERN,
    CancelSignal,
    TrainerError,
    TrainerSession,
    emit_run_failed,
)
from runforge_runner.dataset import DEFAULT_LABEL_COLUMN
from runforge_runner.params import (
    DEFAULT_MODEL_FAMILY,
    MODEL_FAMILIES,
    PRESETS,
    PROFILES,
    plan_training,
)

DATASET_ENV = "RUNFORGE_DATASET"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors take the one-line path."""

    def error(self, message: str) -> NoReturn:
        raise TrainerError(ERROR_INVALID_ARGUMENTS, f"{self.prog}: {message}", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runforge_runner", description="RunForge's scikit-learn runner.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help=f"train a model on the CSV named by ${DATASET_ENV}")
    train.add_argument("--preset", required=True, choices=PRESETS)
    train.add_argument("--out", required=True, help="the run folder; its name is the run id")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    train.add_argument(
        "--name", default="", help="display name; the daemon records it (request.json)"
    )
    train.add_argument("--seed", type=int, help="random seed (default 42)")
    train.add_argument("--model", choices=MODEL_FAMILIES, default=DEFAULT_MODEL_FAMILY)
    train.add_argument("--profile", choices=PROFILES)
    train.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="override a hyperparameter; repeatable",
    )  # fmt: skip
    train.add_argument("--label", default=DEFAULT_LABEL_COLUMN, help="the label column")

    inspect = commands.add_parser("inspect", help="describe a dataset as JSON")
    inspect.add_argument("--dataset", required=True)
    inspect.add_argument("--label", default=DEFAULT_LABEL_COLUMN)

    artifact = commands.add_parser("inspect-artifact", help="describe a model artifact as JSON")
    artifact.add_argument("--artifact", required=True)

    samples = commands.add_parser("sample-data", help="write the bundled sample CSVs")
    samples.add_argument("--out", required=True, help="directory to write them into")
    return parser


def main(argv: Sequence[str], cancel_signal: CancelSignal | None = None) -> int:
    """Run one command; returns the process exit code."""
    is_train = bool(argv) and argv[0] == "train"
    try:
        args = build_parser().parse_args(argv)
    except TrainerError as error:
        return _report(error, is_train, _run_id_from_argv(argv))
    if args.command == "train":
        return _train(args, cancel_signal or CancelSignal.install())
    # Only training has a graceful path; everything else stops on SIGTERM as usual.
    if cancel_signal is not None and cancel_signal.requested:
        return EXIT_CANCELLED
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        document = _answer(args)
    except TrainerError as error:
        return _report(error, False, None)
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK


# Thread pools of the BLAS libraries numpy and scikit-learn load. Training is
# single-threaded by design: on these small matrices a pool only spins, taking CPU from
# the other runs on the machine (measured: 80 % more CPU time for the same epochs).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _train(args: argparse.Namespace, cancel_signal: CancelSignal) -> int:
    for variable in BLAS_THREAD_VARIABLES:
        # Read when numpy is first imported, which happens after the dataset is loaded.
        os.environ.setdefault(variable, "1")
    from runforge_runner.train_run import TrainRequest, train_run

    try:
        plan = plan_training(args.preset, args.model, args.profile, args.param, args.seed)
        raw_dataset = os.environ.get(DATASET_ENV, "").strip()
        if not raw_dataset:
            raise TrainerError(
                ERROR_INVALID_ARGUMENTS,
                f"{DATASET_ENV} is not set; set it to the path of a CSV file",
                EXIT_USAGE,
            )
        session = TrainerSession(args.out, cancel_signal=cancel_signal)
    except TrainerError as error:
        return _report(error, True, _run_id_from_argv(["--out", args.out]))
    request = TrainRequest(
        plan=plan,
        dataset_path=Path(os.path.abspath(raw_dataset)),
        label_column=args.label,
        device=args.device,
    )
    code = session.run(lambda active: train_run(active, request))
    # Looked up, not imported: a cancel before training must not import scikit-learn.
    fitting = sys.modules.get("runforge_runner.fitting")
    if code == EXIT_CANCELLED and fitting is not None and fitting.fit_thread_running():
        # Cancelled while scikit-learn was inside a solver or a tree that cannot be
        # interrupted: everything is flushed and recorded, so leave now rather than wait
        # for it (or tear down the interpreter under its feet).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _answer(args: argparse.Namespace) -> Any:
    if args.command == "inspect":
        from runforge_runner.dataset import inspect_dataset

        return inspect_dataset(Path(args.dataset), args.label)
    if args.command == "inspect-artifact":
        from runforge_runner.inspection import inspect_artifact

        return inspect_artifact(Path(args.artifact))
    from runforge_contract.sample_data import write_samples

    files = []
    for path in write_samples(Path(args.out)):
        data = path.read_bytes()
        files.append(
            {
                "path": str(path),
                "rows": data.count(b"\n") - 1,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return {"files": files}


def _run_id_from_argv(argv: Sequence[str]) -> str | None:
    """The run id (the --out folder name) if it can be read, for a run_failed event."""
    for index, arg in enumerate(argv):
        value = None
        if arg == "--out" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--out="):
            value = arg.partition("=")[2]
        if value:
            name = Path(os.path.abspath(value)).name
            return name if RUN_ID_PATTERN.fullmatch(name) else None
    return None


def _report(error: TrainerError, as_event: bool, run_id: str | None) -> int:
    if as_event:
        emit_run_failed(error, run_id)
    else:
        sys.stderr.write(f"runforge_runner: error: {error.message}\n")
        sys.stderr.flush()
    return error.exit_code
