"""``train`` and ``cancel``: start or cancel a run, then follow it to its end."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from runforge_protocol import messages as m
from runforge_protocol.records import RunState
from runforgectl import output
from runforgectl.client import DaemonError, DaemonTimeout, DaemonUnavailable
from runforgectl.context import Context
from runforgectl.exits import (
    CANCEL_EXIT,
    EXIT_DAEMON_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    TRAIN_EXIT,
)

# The values the daemon accepts (it checks them too: runforged/services.py); a test keeps
# these in step with the daemon's settings and the runner's own tables.
PRESETS = ("std-train", "hq-train")
MODELS = ("logistic_regression", "random_forest", "linear_svc")
PROFILES = ("default", "fast", "thorough")
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("local", "ray")


def param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def non_negative_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def cmd_train(ctx: Context) -> int:
    a = ctx.args
    params = dict(a.param or [])
    request = m.Train(
        workspace=ctx.workspace(),
        preset=a.preset,
        model=a.model,
        profile=a.profile,
        dataset=os.path.abspath(a.dataset) if a.dataset else None,
        name=a.name,
        seed=a.seed,
        params=params,
        grace_s=a.grace,
        device=a.device,
        label=a.label,
        executor=a.executor,
        ray_address=a.ray_address,
        request_key=a.request_key or os.urandom(12).hex(),
    )
    if a.detach:
        return _train_detached(ctx, request)
    # A Ctrl-C from here on cancels the run, even one that arrives before the daemon has
    # answered: it is remembered and acted on as soon as the run id is known.
    import signal

    early: list[int] = []
    original = signal.signal(signal.SIGINT, lambda signum, frame: early.append(signum))
    try:
        run = _send_train(ctx, request).run
        if not ctx.json:
            where = f" (queued, position {run.queue_position})" if run.queue_position else ""
            print(f"{run.run_id}{where}")
        return follow_to_end(
            ctx, run.workspace, run.run_id, TRAIN_EXIT, cancel_on_interrupt=True, interrupted=early
        )
    finally:
        signal.signal(signal.SIGINT, original)


def _train_detached(ctx: Context, request: m.Train) -> int:
    result = _send_train(ctx, request)
    if ctx.json:
        output.print_json(result)
    else:
        print(result.run.run_id)
    return EXIT_OK


def _send_train(ctx: Context, request: m.Train) -> m.TrainResult:
    """Send ``train``; on a timeout send it once more with the same request key, which the
    daemon answers with the run the first attempt created (never a second run)."""
    try:
        result: m.TrainResult = ctx.call(request)
        return result
    except DaemonTimeout:
        pass
    try:
        result = ctx.call(request)
        return result
    except DaemonTimeout as exc:
        raise DaemonUnavailable(
            f"{exc}. The run may have been created: repeat the command with "
            f"--request-key {request.request_key} to get that run instead of a second one"
        ) from None


def follow_to_end(
    ctx: Context,
    workspace: str,
    run_id: str,
    exit_codes: dict[RunState, int],
    cancel_on_interrupt: bool,
    interrupted: list[int] | None = None,
) -> int:
    """Follow the run to its end and return the exit status for its terminal state.
    ``interrupted`` holds the Ctrl-Cs that came before following began."""
    import signal

    from runforgectl.follow import ProgressDisplay, follow_run

    display = ProgressDisplay()

    def on_event(event: m.Event) -> None:
        if ctx.json:
            output.print_json(event)
        else:
            display(event)

    cancel_sent = not cancel_on_interrupt  # `cancel` follows a run it already cancelled

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal cancel_sent
        if cancel_sent:
            raise KeyboardInterrupt
        cancel_sent = True
        print(
            "\ninterrupted: cancelling the run gracefully (Ctrl-C again to stop watching)",
            file=sys.stderr if ctx.json else sys.stdout,
            flush=True,
        )
        try:
            ctx.call(m.Cancel(workspace=workspace, run_id=run_id))
        except DaemonError as exc:  # e.g. it ended meanwhile: following shows its end
            output.error(exc.error)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        for _ in interrupted or []:
            on_sigint(signal.SIGINT, None)
        terminal = follow_run(ctx.client, workspace, run_id, 0, on_event)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, previous)
        print(f"\nstopped watching: {_where_is(ctx, workspace, run_id)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
    if terminal is None:
        return EXIT_DAEMON_ERROR
    state = RunState(terminal.data.get("state", "failed"))
    if not ctx.json:
        _print_terminal(terminal.data)
    return exit_codes.get(state, EXIT_RUN_FAILED)


def _where_is(ctx: Context, workspace: str, run_id: str) -> str:
    """What is true about a run we stop watching after its cancel was sent."""
    try:
        active = ctx.client.result(m.Active(workspace=workspace), timeout_s=2)
    except Exception:  # the daemon may be gone too; say what we know
        return f"run {run_id} was asked to cancel; see 'runforgectl show {run_id}'"
    for run in active.runs if isinstance(active, m.ActiveResult) else []:
        if run.run_id == run_id:
            return (
                f"run {run_id} is being cancelled ({run.state.value}); the daemon finishes "
                f"the cancel. See it with 'runforgectl show {run_id}'"
            )
    return f"run {run_id} has ended; see 'runforgectl show {run_id}'"


def _print_terminal(data: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = [("state", data.get("state"))]
    if data.get("reason"):
        rows.append(("reason", data.get("reason")))
    if data.get("exit_code") is not None:
        rows.append(("exit code", data.get("exit_code")))
    if data.get("duration_ms") is not None:
        rows.append(("duration", output.duration(data["duration_ms"] / 1000)))
    for name, value in sorted((data.get("final_metrics") or {}).items()):
        # Counts travel as floats (metrics are numbers); show them as the counts they are.
        if name.startswith("num_") and isinstance(value, float) and value.is_integer():
            value = int(value)
        rows.append((name, value))
    if data.get("partial_artifacts"):
        rows.append(("partial artifacts", ", ".join(data["partial_artifacts"])))
    if data.get("index_status"):
        rows.append(("index", data.get("index_status")))
    print()
    output.key_values(rows)


def cmd_cancel(ctx: Context) -> int:
    a = ctx.args
    workspace = ctx.workspace() if (a.workspace or not a.run_id) else None
    result: m.CancelResult = ctx.call(
        m.Cancel(workspace=workspace, run_id=a.run_id, grace_s=a.grace)
    )
    run = result.run
    note = " (already cancelling)" if result.already_cancelling else ""
    if a.no_wait:
        if ctx.json:
            output.print_json(result)
        else:
            print(f"cancelling {run.run_id}{note}")
        return EXIT_OK
    if not ctx.json:
        print(f"cancelling {run.run_id}{note}")
    if run.state.terminal:
        # A queued run is removed at once: nothing to follow.
        if ctx.json:
            output.print_json(result)
        else:
            print(f"state: {run.state.value}")
        return CANCEL_EXIT.get(run.state, EXIT_OK)
    return follow_to_end(ctx, run.workspace, run.run_id, CANCEL_EXIT, cancel_on_interrupt=False)


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p = parser
    if name == "train":
        p.add_argument("--preset", choices=PRESETS, help="training preset (setting: preset)")
        p.add_argument("--model", choices=MODELS, help="model family (setting: modelFamily)")
        p.add_argument("--profile", choices=PROFILES, help="training profile (setting: profile)")
        p.add_argument("--dataset", help="CSV file (default: the datasetPath setting)")
        p.add_argument("--label", metavar="COL", help="label column (setting: labelColumn)")
        p.add_argument("--name", help="display name (default: the run id)")
        p.add_argument("--seed", type=int, help="random seed (default 42)")
        p.add_argument(
            "--param",
            action="append",
            type=param,
            metavar="NAME=VALUE",
            help="override a hyperparameter, repeatable (logistic_regression, linear_svc: "
            "C, max_iter; random_forest: n_estimators, max_depth, min_samples_leaf, "
            "max_features)",
        )
        p.add_argument(
            "--grace",
            type=non_negative_seconds,
            help="cancel grace window in seconds (setting: cancelGraceSeconds)",
        )
        p.add_argument("--device", choices=DEVICES, help="where to train (setting: device)")
        p.add_argument(
            "--executor", choices=EXECUTORS, help="where the run goes (setting: executor)"
        )
        p.add_argument(
            "--ray-address",
            metavar="URL",
            help="the Ray dashboard (executor ray; setting: rayAddress)",
        )
        p.add_argument(
            "--request-key",
            metavar="KEY",
            help="idempotency key: a repeated train with the same key gets the run the first "
            "one created (default: a fresh key per call)",
        )
        p.add_argument("--detach", action="store_true", help="print the run id and return")
        p.set_defaults(fn=cmd_train)
    elif name == "cancel":
        p.add_argument("run_id", nargs="?", help="run id (default: the workspace's active run)")
        p.add_argument(
            "--grace", type=non_negative_seconds, help="seconds before SIGKILL (0: at once)"
        )
        p.add_argument("--no-wait", action="store_true", help="return once the cancel is under way")
        p.set_defaults(fn=cmd_cancel)
