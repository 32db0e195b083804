"""``train`` and ``cancel``: start or cancel a run, then follow it to its end."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from runforge_protocol import messages as m
from runforge_protocol.records import RunState
from runforgectl import output
from runforgectl.context import Context
from runforgectl.exits import (
    CANCEL_EXIT,
    EXIT_DAEMON_ERROR,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    TRAIN_EXIT,
)


def cmd_train(ctx: Context) -> int:
    a = ctx.args
    params: dict[str, str] = {}
    for item in a.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"runforgectl: --param expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        params[key] = value
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
    )
    result: m.TrainResult = ctx.call(request)
    run = result.run
    if a.detach:
        if ctx.json:
            output.print_json(result)
        else:
            print(run.run_id)
        return EXIT_OK
    if not ctx.json:
        where = f" (queued, position {run.queue_position})" if run.queue_position else ""
        print(f"{run.run_id}{where}")
    return follow_to_end(ctx, run.workspace, run.run_id, TRAIN_EXIT, cancel_on_interrupt=True)


def follow_to_end(
    ctx: Context,
    workspace: str,
    run_id: str,
    exit_codes: dict[RunState, int],
    cancel_on_interrupt: bool,
) -> int:
    import signal

    from runforgectl.follow import ProgressDisplay, follow_run

    display = ProgressDisplay()

    def on_event(event: m.Event) -> None:
        if ctx.json:
            output.print_json(event)
        else:
            display(event)

    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        if interrupted or not cancel_on_interrupt:
            raise KeyboardInterrupt
        interrupted = True
        if not ctx.json:
            print("\ninterrupted: cancelling the run gracefully (Ctrl-C again to stop watching)")
        ctx.call(m.Cancel(workspace=workspace, run_id=run_id))

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        terminal = follow_run(ctx.client, workspace, run_id, 0, on_event)
    except KeyboardInterrupt:
        print(f"\nstopped watching; the run goes on in the daemon ({run_id})", file=sys.stderr)
        return EXIT_OK
    finally:
        signal.signal(signal.SIGINT, previous)
    if terminal is None:
        return EXIT_DAEMON_ERROR
    state = RunState(terminal.data.get("state", "failed"))
    if not ctx.json:
        _print_terminal(terminal.data)
    return exit_codes.get(state, EXIT_RUN_FAILED)


def _print_terminal(data: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = [("state", data.get("state"))]
    if data.get("reason"):
        rows.append(("reason", data.get("reason")))
    if data.get("exit_code") is not None:
        rows.append(("exit code", data.get("exit_code")))
    if data.get("duration_ms") is not None:
        rows.append(("duration", output.duration(data["duration_ms"] / 1000)))
    for name, value in sorted((data.get("final_metrics") or {}).items()):
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
        p.add_argument("--preset", choices=["std-train", "hq-train"])
        p.add_argument("--model", choices=["logistic_regression", "random_forest", "linear_svc"])
        p.add_argument("--profile")
        p.add_argument("--dataset", help="CSV file (default: the datasetPath setting)")
        p.add_argument("--name")
        p.add_argument("--seed", type=int)
        p.add_argument("--param", action="append", metavar="NAME=VALUE")
        p.add_argument("--grace", type=float, help="cancel grace window in seconds")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"])
        p.add_argument("--detach", action="store_true", help="print the run id and return")
        p.set_defaults(fn=cmd_train)
    elif name == "cancel":
        p.add_argument("run_id", nargs="?")
        p.add_argument("--grace", type=float, help="seconds before SIGKILL (0: at once)")
        p.add_argument("--no-wait", action="store_true", help="return once the cancel is under way")
        p.set_defaults(fn=cmd_cancel)
