"""``runforgectl``: the command-line client of runforged (one subcommand per request)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from runforge_protocol import messages as m
from runforge_protocol.discovery import RUNTIME_DIR_ENV, Endpoints
from runforge_protocol.records import RunState
from runforgectl import output
from runforgectl.client import Client, DaemonError, DaemonUnavailable

# Imports only what `ping` and `status` need at module level; commands import the rest
# (subprocess, signal, the follow machinery) themselves: start-up cost is a feature here.

# Exit status (DESIGN §11 for 0-3; run outcomes from 10 up, the same meaning everywhere).
EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CANCELLED_FORCED = 10
EXIT_COMPLETED_DESPITE_CANCEL = 11  # `cancel`: training won the race
EXIT_RUN_FAILED = 12
EXIT_CANCELLED_GRACEFUL = 13  # `train`: the run you followed was cancelled (gracefully)
EXIT_RUN_LOST = 14

TRAIN_EXIT = {
    RunState.COMPLETED: EXIT_OK,
    RunState.FAILED: EXIT_RUN_FAILED,
    RunState.CANCELLED_GRACEFUL: EXIT_CANCELLED_GRACEFUL,
    RunState.CANCELLED_FORCED: EXIT_CANCELLED_FORCED,
    RunState.LOST: EXIT_RUN_LOST,
}
CANCEL_EXIT = {
    **TRAIN_EXIT,
    RunState.COMPLETED: EXIT_COMPLETED_DESPITE_CANCEL,
    RunState.CANCELLED_GRACEFUL: EXIT_OK,
}

SERVICE_NAME = "runforged.service"
AUTOSTART_ENV = "RUNFORGE_AUTOSTART"


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self.endpoints = Endpoints.resolve(args.runtime_dir)
        self.client = Client(self.endpoints, timeout_s=args.timeout)

    def workspace(self) -> str:
        return os.path.abspath(self.args.workspace or os.getcwd())

    def call(self, request: m.RequestBase, timeout_s: float | None = None) -> Any:
        return self.client.result(request, timeout_s)


# ---------------------------------------------------------------------- daemon commands


def cmd_ping(ctx: Context) -> int:
    result = ctx.call(m.Hello(client="runforgectl"))
    if ctx.json:
        output.print_json(result)
    else:
        print(
            f"runforged {result.daemon_version} (protocol {result.protocol}) pid {result.pid}, "
            f"up {output.duration(result.uptime_s)}"
        )
    return EXIT_OK


def cmd_status(ctx: Context) -> int:
    workspace = ctx.workspace() if ctx.args.workspace else None
    result: m.StatusResult = ctx.call(m.Status(workspace=workspace))
    if ctx.json:
        output.print_json(result)
        return EXIT_OK
    c = result.counters
    output.key_values(
        [
            ("daemon", f"runforged {result.daemon_version}, pid {result.pid}"),
            ("protocol", result.protocol),
            ("uptime", output.duration(result.uptime_s)),
            ("runtime dir", result.runtime_dir),
            ("control", result.control_endpoint),
            ("events", result.events_endpoint),
            ("state", "stopping" if result.stopping else "serving"),
            ("runs", f"{result.active_runs} active, {result.queued_runs} queued"),
            ("requests", f"{c.requests} ({c.errors} errors, {c.dropped_frames} dropped frames)"),
            ("events published", c.events_published),
            ("invalid trainer lines", c.invalid_trainer_lines),
        ]
    )
    if result.workspace is not None:
        _print_workspace_status(result.workspace)
    return EXIT_OK


def _print_workspace_status(ws: m.WorkspaceStatus) -> None:
    print()
    output.orphan_banner(ws.orphans)
    print(f"workspace {ws.workspace} ({'trusted' if ws.trusted else 'NOT trusted'})")
    if ws.settings is not None:
        _print_settings(ws.settings)
    if ws.interpreter is not None:
        i = ws.interpreter
        version = i.get("version")
        print(f"\ninterpreter  {i.get('python_path')} -> {i.get('executable')} (Python {version})")
    if ws.gpu is not None:
        devices = ws.gpu.get("devices") or []
        gpus = ", ".join(f"{d.get('name')} ({d.get('free_mib')} MiB free)" for d in devices)
        print(f"gpu          {gpus or 'none'} (probed with {ws.gpu.get('source')})")
    if ws.device is not None:
        print(f"device       {ws.device.get('device')}: {ws.device.get('reason')}")
    for problem in ws.problems:
        output.error(problem, sys.stdout)


def _running_pid(ctx: Context) -> int | None:
    """The pid of the daemon answering on this runtime directory, if one does."""
    try:
        with Client(ctx.endpoints, timeout_s=2) as probe:
            reply = probe.result(m.Hello(client="runforgectl"))
    except (DaemonUnavailable, DaemonError):
        return None
    return reply.pid if isinstance(reply, m.HelloResult) else None


def _start_detached(ctx: Context) -> None:
    """Run ``runforged --detach``, which returns once the daemon answers."""
    import subprocess

    proc = subprocess.run(
        [*_runforged_command(), "--runtime-dir", str(ctx.endpoints.runtime_dir), "--detach"],
        capture_output=True,
        text=True,
        timeout=max(ctx.args.timeout, 30),
    )
    if proc.returncode != 0:
        raise DaemonUnavailable(
            f"could not start runforged: {(proc.stderr or proc.stdout).strip()}"
        )


def cmd_daemon_start(ctx: Context) -> int:
    pid = _running_pid(ctx)
    if pid is not None:
        if ctx.json:
            output.print_json(ctx.call(m.Hello(client="runforgectl")))
        else:
            print(f"runforged is already running (pid {pid})")
        return EXIT_OK
    _start_detached(ctx)
    result = ctx.call(m.Hello(client="runforgectl"))
    if ctx.json:
        output.print_json(result)
    else:
        print(f"runforged started (pid {result.pid}) on {ctx.endpoints.control}")
    return EXIT_OK


def _ensure_daemon(ctx: Context) -> None:
    """For interactive use (``--start``): start the daemon unless it already answers."""
    if _running_pid(ctx) is None:
        _start_detached(ctx)
        print(f"runforgectl: started runforged on {ctx.endpoints.control}", file=sys.stderr)


def cmd_daemon_stop(ctx: Context) -> int:
    keep_runs = bool(getattr(ctx.args, "keep_runs", False))
    try:
        result: m.ShutdownResult = ctx.call(m.Shutdown(keep_runs=keep_runs))
    except DaemonUnavailable:
        if ctx.json:
            output.print_json({"stopped": False, "running": False})
        else:
            print("runforged is not running")
        return EXIT_OK
    if result.cancelling_runs and not ctx.json:
        print(
            f"cancelling {len(result.cancelling_runs)} run(s): {', '.join(result.cancelling_runs)}"
        )
    if result.kept_runs and not ctx.json:
        print(f"leaving {len(result.kept_runs)} run(s) to their monitors")
    stopped = _wait_gone(result.pid, max(ctx.args.timeout, 60))
    if ctx.json:
        output.print_json(
            {
                "stopped": stopped,
                "cancelled_runs": result.cancelling_runs,
                "kept_runs": result.kept_runs,
            }
        )
    elif stopped:
        print("runforged stopped")
    else:
        print("runforged did not stop in time", file=sys.stderr)
    return EXIT_OK if stopped else EXIT_UNAVAILABLE


def cmd_daemon_restart(ctx: Context) -> int:
    """Restart keeping every run: the old daemon leaves them to their monitors, the new
    one re-attaches. Under systemd, the service is restarted (the unit keeps runs too)."""
    pid = _running_pid(ctx)
    unit = _systemd_unit_of(pid) if pid is not None else None
    if unit is not None:
        import subprocess  # only here: start-up cost

        restarted = subprocess.run(["systemctl", "--user", "restart", unit], check=False)
        if restarted.returncode != 0:
            return EXIT_UNAVAILABLE
    else:
        if pid is not None:
            result: m.ShutdownResult = ctx.call(m.Shutdown(keep_runs=True))
            if not _wait_gone(result.pid, max(ctx.args.timeout, 60)):
                print("runforged did not stop in time", file=sys.stderr)
                return EXIT_UNAVAILABLE
        _start_detached(ctx)
    hello = ctx.call(m.Hello(client="runforgectl"))
    if ctx.json:
        output.print_json(hello)
    else:
        print(f"runforged restarted (pid {hello.pid}); runs in flight carry on")
    return EXIT_OK


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Stopped means the process is gone (its socket files go just before it exits)."""
    deadline = time.monotonic() + timeout_s
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _process_alive(pid)


def _systemd_unit_of(pid: int) -> str | None:
    """The systemd service running ``pid`` (from its cgroup), or None."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    for line in text.splitlines():
        name = line.rpartition("/")[2]
        if name.endswith(".service") and not name.startswith("user@"):
            return name
    return None


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # The state follows the parenthesised command name, which may contain spaces.
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, IndexError):
        return False


def cmd_daemon_install_service(ctx: Context) -> int:
    import shutil

    runforged = shutil.which("runforged") or str(Path(sys.executable).with_name("runforged"))
    unit_dir = (
        Path(os.environ.get("XDG_CONFIG_HOME", str(Path.home() / ".config"))) / "systemd" / "user"
    )
    target = Path(ctx.args.dest) if ctx.args.dest else unit_dir / SERVICE_NAME
    text = render_unit(runforged)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    if ctx.json:
        output.print_json({"path": str(target), "exec": runforged})
    else:
        print(f"wrote {target}")
        print(
            "enable it with: systemctl --user daemon-reload && "
            "systemctl --user enable --now runforged"
        )
    return EXIT_OK


def render_unit(runforged: str) -> str:
    from runforgectl.service import UNIT_TEMPLATE

    return UNIT_TEMPLATE.replace("@RUNFORGED@", runforged)


def _runforged_command() -> list[str]:
    # Prefer the interpreter we run under: the same installation as this client.
    return [sys.executable, "-m", "runforged"]


# ---------------------------------------------------------------------- trust & settings


def cmd_trust(ctx: Context) -> int:
    if ctx.args.list or not ctx.args.path:
        result: m.TrustResult = ctx.call(m.ListTrusted())
        if ctx.json:
            output.print_json(result)
        elif result.trusted:
            output.table(["trusted folder"], [[p] for p in result.trusted])
        else:
            print("no trusted folders (trust one with: runforgectl trust PATH)")
        return EXIT_OK
    result = ctx.call(m.TrustPath(path=os.path.abspath(ctx.args.path)))
    if ctx.json:
        output.print_json(result)
    else:
        print(f"{'trusted' if result.changed else 'already trusted'}: {result.path}")
    return EXIT_OK


def cmd_untrust(ctx: Context) -> int:
    result: m.TrustResult = ctx.call(m.UntrustPath(path=os.path.abspath(ctx.args.path)))
    if ctx.json:
        output.print_json(result)
    else:
        print(f"{'untrusted' if result.changed else 'was not trusted'}: {result.path}")
    return EXIT_OK


def cmd_settings(ctx: Context) -> int:
    result: m.SettingsResult = ctx.call(m.GetSettings(workspace=ctx.workspace()))
    if ctx.json:
        output.print_json(result)
    else:
        print(f"effective settings for {result.workspace}")
        _print_settings(result.settings)
    return EXIT_OK


def _print_settings(settings: dict[str, Any]) -> None:
    # Every setting has an origin, in the daemon's own order: no key list to keep in step.
    origins = settings.get("origins", {})
    rows = []
    for key in origins:
        origin = origins.get(key, {})
        where = origin.get("source", "default")
        if origin.get("file"):
            where += (
                f" ({origin['file']}" + (f":{origin['line']}" if origin.get("line") else "") + ")"
            )
        rows.append([key, settings.get(key), where])
    output.table(["setting", "value", "source"], rows)
    for warning in settings.get("warnings", []):
        place = f" ({warning.get('file')}:{warning.get('line')})" if warning.get("file") else ""
        print(f"warning: {warning.get('key')}: {warning.get('message')}{place}")


# ---------------------------------------------------------------------- runs


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
        executor=a.executor,
        ray_address=a.ray_address,
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
    return _follow_to_end(ctx, run.workspace, run.run_id, TRAIN_EXIT, cancel_on_interrupt=True)


def _follow_to_end(
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
    if a.no_wait:
        if ctx.json:
            output.print_json(result)
        else:
            note = " (already cancelling)" if result.already_cancelling else ""
            print(f"cancelling {run.run_id}{note}")
        return EXIT_OK
    if not ctx.json:
        note = " (already cancelling)" if result.already_cancelling else ""
        print(f"cancelling {run.run_id}{note}")
    if run.state.terminal:
        # A queued run is removed at once: nothing to follow.
        if ctx.json:
            output.print_json(result)
        else:
            print(f"state: {run.state.value}")
        return CANCEL_EXIT.get(run.state, EXIT_OK)
    return _follow_to_end(ctx, run.workspace, run.run_id, CANCEL_EXIT, cancel_on_interrupt=False)


def cmd_active(ctx: Context) -> int:
    workspace = ctx.workspace() if ctx.args.workspace else None
    result: m.ActiveResult = ctx.call(m.Active(workspace=workspace))
    if ctx.json:
        output.print_json(result)
    elif not result.runs:
        print("no active runs")
    else:
        output.table(
            ["run", "state", "model", "pid", "queue", "workspace"],
            [
                [r.run_id, r.state.value, r.model, r.pid, r.queue_position, r.workspace]
                for r in result.runs
            ],
        )
    return EXIT_OK


def cmd_runs(ctx: Context) -> int:
    if ctx.args.recover:
        report: m.RecoverResult = ctx.call(m.Recover(workspace=ctx.workspace()), timeout_s=300)
        if not ctx.json:
            print(f"recovered {len(report.report.recovered)} run(s)\n")
    result: m.RunsResult = ctx.call(m.ListRuns(workspace=ctx.workspace()))
    if ctx.json:
        output.print_json(result)
        return EXIT_OK
    output.orphan_banner(result.orphans)
    rows: list[list[Any]] = []
    for o in result.orphans:
        rows.append([o.run_id, "ORPHANED", "", o.created_at, None, o.error or "not in index"])
    for r in result.runs:
        metric = r.final_metrics.get("accuracy")
        note = r.reason or ("" if r.index_status.value == "indexed" else r.index_status.value)
        rows.append([r.run_id, r.state.value, r.name, r.created_at, metric, note])
    if not rows:
        print(f"no runs in {result.workspace}")
        return EXIT_OK
    output.table(["run", "state", "name", "created", "accuracy", "note"], rows)
    return EXIT_OK


def _document_command(kind: type[m.RequestBase]) -> Any:
    def run(ctx: Context) -> int:
        request = kind(workspace=ctx.workspace(), run_id=ctx.args.run_id)  # type: ignore[call-arg]
        result: m.DocumentResult = ctx.call(request)
        if ctx.json:
            output.print_json(result)
            return EXIT_OK
        output.orphan_banner(result.orphans)
        print(f"{result.kind} of run {result.run_id} ({result.path})")
        _print_document(result.kind, result.document)
        return EXIT_OK

    return run


def _print_document(kind: str, document: Any) -> None:
    """RunForge's interpretability documents as ranked tables; anything else as key/value
    rows."""
    if kind == "feature_importance" and isinstance(document, dict):
        features = document.get("features_by_importance")
        if isinstance(features, list) and features:
            output.table(
                ["feature", "value"], [[f.get("name"), f.get("importance")] for f in features]
            )
            return
    if kind == "coefficients" and isinstance(document, dict):
        by_class = document.get("coefficients_by_class")
        if isinstance(by_class, list) and by_class:
            output.table(
                ["class", "feature", "coefficient"],
                [
                    [group.get("class"), f.get("name"), f.get("coefficient")]
                    for group in by_class
                    for f in group.get("features", [])
                ],
            )
            return
    output.key_values(output.flatten(document))


def cmd_export_md(ctx: Context) -> int:
    result: m.MarkdownResult = ctx.call(
        m.ExportMarkdown(workspace=ctx.workspace(), run_id=ctx.args.run_id)
    )
    if ctx.json:
        output.print_json(result)
    else:
        output.orphan_banner(result.orphans)
        print(f"wrote {result.path}")
    return EXIT_OK


def cmd_inspect_dataset(ctx: Context) -> int:
    request = m.InspectDataset(
        workspace=ctx.workspace(), path=os.path.abspath(ctx.args.csv), label=ctx.args.label
    )
    result: m.InspectResult = ctx.call(request, timeout_s=max(ctx.args.timeout, 60))
    return _print_inspect(ctx, result)


def cmd_inspect_artifact(ctx: Context) -> int:
    request = m.InspectArtifact(workspace=ctx.workspace(), path=os.path.abspath(ctx.args.pkl))
    result: m.InspectResult = ctx.call(request, timeout_s=max(ctx.args.timeout, 60))
    return _print_inspect(ctx, result)


def _print_inspect(ctx: Context, result: m.InspectResult) -> int:
    if ctx.json:
        output.print_json(result)
    else:
        output.orphan_banner(result.orphans)
        print(result.path)
        output.key_values(output.flatten(result.document))
    return EXIT_OK


def cmd_recover(ctx: Context) -> int:
    result: m.RecoverResult = ctx.call(
        m.Recover(workspace=ctx.workspace()), timeout_s=max(ctx.args.timeout, 300)
    )
    if ctx.json:
        output.print_json(result.report)
        return EXIT_OK
    from runforgectl.recovery_report import render_markdown, render_text

    report = msgspec.to_builtins(result.report)
    output.orphan_banner(result.orphans)
    if ctx.args.markdown:
        sys.stdout.write(render_markdown(result.workspace, report))
    else:
        render_text(result.workspace, report)
    return EXIT_OK


def cmd_events(ctx: Context) -> int:
    a = ctx.args
    if a.run:
        ws = os.path.realpath(ctx.workspace())

        def emit(event: m.Event) -> None:
            if ctx.json:
                output.print_json(event)
            else:
                print(_event_line(event), flush=True)

        try:
            from runforgectl.follow import follow_run

            follow_run(ctx.client, ws, a.run, a.since, emit)
        except KeyboardInterrupt:
            return EXIT_OK
        return EXIT_OK
    from runforge_protocol import events as ev

    ctx.call(m.Ping())  # fail fast, with exit 3, when no daemon is there
    prefix = ev.run_topic_prefix(os.path.realpath(ctx.workspace())) if a.workspace else b""
    ctx.client.subscribe(prefix)
    try:
        while True:
            for event in ctx.client.next_events(timeout_s=1.0):
                if ctx.json:
                    output.print_json(event)
                else:
                    print(_event_line(event), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK


def _event_line(event: m.Event) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
    where = f" {event.run_id}#{event.run_seq}" if event.run_id else ""
    data = {k: v for k, v in event.data.items() if k not in ("event", "timestamp", "run_id")}
    return f"{stamp} [{event.seq}]{where} {event.type} {output._json.encode(data).decode()}"


def cmd_bridge(ctx: Context) -> int:
    """Speak the protocol as JSON lines on stdin/stdout (see runforgectl/bridge.py)."""
    from runforgectl.bridge import run_bridge

    ctx.call(m.Hello(client="runforgectl-bridge"))  # exit 3 at once when no daemon is there
    return run_bridge(ctx.endpoints)


def cmd_sample_data(ctx: Context) -> int:
    """Write the bundled sample datasets into a folder (default: the workspace)."""
    # The runner's generator is standard library only: no daemon code is imported.
    from runforge_contract.sample_data import write_samples

    dest = Path(ctx.args.dest or ctx.workspace()).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    written = [str(p) for p in write_samples(dest)]
    if ctx.json:
        output.print_json({"written": written})
    else:
        for path in written:
            print(path)
    return EXIT_OK


# ---------------------------------------------------------------------- parser


COMMANDS = frozenset(
    {
        "ping",
        "status",
        "daemon",
        "trust",
        "untrust",
        "settings",
        "train",
        "cancel",
        "recover",
        "runs",
        "show",
        "metrics",
        "feature-importance",
        "coefficients",
        "interpretability",
        "export-md",
        "inspect-dataset",
        "inspect-artifact",
        "active",
        "events",
        "bridge",
        "sample-data",
    }
)
_OPTIONS_WITH_VALUE = ("--runtime-dir", "--timeout")


def requested_command(argv: list[str]) -> str | None:
    """The command named on the command line, if it is a known one."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _OPTIONS_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) the top level plus that one command: building
    every subcommand costs several milliseconds of each run's start-up."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    ws = argparse.ArgumentParser(add_help=False)
    ws.add_argument("--workspace", "-w", help="workspace folder (default: current directory)")

    # Global options are accepted before or after the command.
    common.add_argument(
        "--runtime-dir",
        default=argparse.SUPPRESS,
        help=f"daemon runtime directory (default: ${RUNTIME_DIR_ENV} or the per-user default)",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help="seconds to wait for each reply (default 10)",
    )
    common.add_argument(
        "--start",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"start the daemon first if it is not running (or set {AUTOSTART_ENV}=1)",
    )
    parser = argparse.ArgumentParser(
        prog="runforgectl", description="Client of the RunForge daemon.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Any, help: str, parents: list[argparse.ArgumentParser] | None = None
    ) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return argparse.ArgumentParser(add_help=False)  # not registered: never parsed
        p = sub.add_parser(name, help=help, parents=[common, *(parents or [])])
        p.set_defaults(fn=fn)
        return p

    add("ping", cmd_ping, "check that the daemon answers")
    add("status", cmd_status, "daemon status (with --workspace: settings, interpreter, GPU)", [ws])
    if only in (None, "daemon"):
        _add_daemon_commands(sub, common)

    p = add("trust", cmd_trust, "trust a workspace folder (and everything beneath it)")
    p.add_argument("path", nargs="?")
    p.add_argument("--list", action="store_true", help="list trusted folders")
    add("untrust", cmd_untrust, "stop trusting a folder").add_argument("path")
    add("settings", cmd_settings, "effective settings and where each comes from", [ws])

    p = add("train", cmd_train, "start a training run and follow it", [ws])
    p.add_argument("--preset", choices=["std-train", "hq-train"])
    p.add_argument("--model", choices=["logistic_regression", "random_forest", "linear_svc"])
    p.add_argument("--profile")
    p.add_argument("--dataset", help="CSV file (default: the datasetPath setting)")
    p.add_argument("--name")
    p.add_argument("--seed", type=int)
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--grace", type=float, help="cancel grace window in seconds")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--executor", choices=["local", "ray"], help="where the run goes")
    p.add_argument("--ray-address", metavar="URL", help="the Ray dashboard (executor ray)")
    p.add_argument("--detach", action="store_true", help="print the run id and return")

    p = add("cancel", cmd_cancel, "cancel a run (default: the workspace's active run)", [ws])
    p.add_argument("run_id", nargs="?")
    p.add_argument("--grace", type=float, help="seconds before SIGKILL (0: at once)")
    p.add_argument("--no-wait", action="store_true", help="return once the cancel is under way")

    p = add("recover", cmd_recover, "re-add orphaned runs to the index", [ws])
    p.add_argument("--markdown", action="store_true", help="render the report as Markdown")
    p = add("runs", cmd_runs, "list runs: orphans first, then newest first", [ws])
    p.add_argument("--recover", action="store_true", help="recover orphans first, then list")
    for name, kind, help_text in (
        ("show", m.ShowRun, "a run's metadata (default: the latest run)"),
        ("metrics", m.GetMetrics, "a run's metrics"),
        ("feature-importance", m.GetFeatureImportance, "a run's feature importance"),
        ("coefficients", m.GetCoefficients, "a run's linear coefficients"),
        ("interpretability", m.GetInterpretability, "a run's interpretability index"),
    ):
        add(name, _document_command(kind), help_text, [ws]).add_argument("run_id", nargs="?")
    add("export-md", cmd_export_md, "write run-summary.md for a run", [ws]).add_argument(
        "run_id", nargs="?"
    )
    p = add("inspect-dataset", cmd_inspect_dataset, "describe a CSV dataset", [ws])
    p.add_argument("csv")
    p.add_argument("--label")
    add("inspect-artifact", cmd_inspect_artifact, "describe a model artifact", [ws]).add_argument(
        "pkl"
    )
    add("active", cmd_active, "queued, running and cancelling runs", [ws])
    p = add("events", cmd_events, "stream events (one per line)", [ws])
    p.add_argument("--run", help="one run: replay its events, then follow it to its end")
    p.add_argument("--since", type=int, default=0, help="with --run: start after this run_seq")
    add("bridge", cmd_bridge, "JSON-lines stdio bridge to the protocol, for editor adapters")
    p = add("sample-data", cmd_sample_data, "write the bundled sample datasets into a folder", [ws])
    p.add_argument("dest", nargs="?", help="destination folder (default: the workspace)")
    return parser


def _add_daemon_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    daemon = sub.add_parser("daemon", help="start, stop or install the daemon", parents=[common])
    dsub = daemon.add_subparsers(dest="daemon_command", required=True, metavar="ACTION")
    for name, fn, help_text in (
        ("start", cmd_daemon_start, "start the daemon in the background"),
        ("stop", cmd_daemon_stop, "stop the daemon (cancels in-flight runs gracefully)"),
        ("restart", cmd_daemon_restart, "restart the daemon; runs in flight carry on"),
    ):
        action = dsub.add_parser(name, help=help_text, parents=[common])
        action.set_defaults(fn=fn)
        if name == "stop":
            action.add_argument(
                "--keep-runs",
                action="store_true",
                help="leave runs in flight to their monitors (the next daemon takes them over)",
            )
    install = dsub.add_parser(
        "install-service", help="write the systemd user unit", parents=[common]
    )
    install.add_argument(
        "--dest", help="unit file path (default: ~/.config/systemd/user/runforged.service)"
    )
    install.set_defaults(fn=cmd_daemon_install_service)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(requested_command(arguments))
    args = parser.parse_args(arguments)
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", 10.0)
    args.runtime_dir = getattr(args, "runtime_dir", None)
    autostart = getattr(args, "start", False) or os.environ.get(AUTOSTART_ENV) == "1"
    ctx = Context(args)
    try:
        if autostart and args.fn not in (
            cmd_daemon_start,
            cmd_daemon_stop,
            cmd_daemon_restart,
            cmd_sample_data,
        ):
            _ensure_daemon(ctx)
        code: int = args.fn(ctx)
        return code
    except DaemonUnavailable as exc:
        if ctx.json:
            output.print_json({"code": "DAEMON_UNAVAILABLE", "message": str(exc)})
        print(f"runforgectl: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except DaemonError as exc:
        if ctx.json:
            output.print_json(exc.error)
        output.error(exc.error)
        return EXIT_DAEMON_ERROR
    finally:
        ctx.client.close()


if __name__ == "__main__":
    sys.exit(main())
