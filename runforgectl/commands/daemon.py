"""``ping``, ``status`` and ``daemon start|stop|restart|install-service``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runforge_protocol import messages as m
from runforgectl import output
from runforgectl.client import DaemonUnavailable
from runforgectl.context import Context
from runforgectl.exits import EXIT_OK, EXIT_UNAVAILABLE


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
    from runforgectl.commands.trust import print_settings

    print()
    output.orphan_banner(ws.orphans)
    print(f"workspace {ws.workspace} ({'trusted' if ws.trusted else 'NOT trusted'})")
    if ws.settings is not None:
        print_settings(ws.settings)
    if ws.interpreter is not None:
        i = ws.interpreter
        print(f"\ninterpreter  {i.python_path} -> {i.executable} (Python {i.version})")
    if ws.gpu is not None:
        gpus = ", ".join(f"{d.name} ({d.free_mib} MiB free)" for d in ws.gpu.devices)
        print(f"gpu          {gpus or 'none'} (probed with {ws.gpu.source})")
    if ws.device is not None:
        print(f"device       {ws.device.device}: {ws.device.reason}")
    for problem in ws.problems:
        output.error(problem, sys.stdout)


def cmd_daemon_start(ctx: Context) -> int:
    from runforgectl import lifecycle

    pid = lifecycle.running_pid(ctx.endpoints)
    if pid is not None:
        if ctx.json:
            output.print_json(ctx.call(m.Hello(client="runforgectl")))
        else:
            print(f"runforged is already running (pid {pid})")
        return EXIT_OK
    how = lifecycle.start(ctx.endpoints, ctx.args.timeout)
    result = ctx.call(m.Hello(client="runforgectl"))
    if ctx.json:
        output.print_json(result)
    else:
        print(f"runforged started (pid {result.pid}) on {ctx.endpoints.control} ({how})")
    return EXIT_OK


def cmd_daemon_stop(ctx: Context) -> int:
    from runforgectl import lifecycle

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
    stopped = lifecycle.wait_gone(result.pid, max(ctx.args.timeout, 60))
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
    from runforgectl import lifecycle

    pid = lifecycle.running_pid(ctx.endpoints)
    unit = lifecycle.systemd_unit_of(pid) if pid is not None else None
    if unit is not None:
        import subprocess  # only here: start-up cost

        restarted = subprocess.run(["systemctl", "--user", "restart", unit], check=False)
        if restarted.returncode != 0:
            return EXIT_UNAVAILABLE
    else:
        if pid is not None:
            result: m.ShutdownResult = ctx.call(m.Shutdown(keep_runs=True))
            if not lifecycle.wait_gone(result.pid, max(ctx.args.timeout, 60)):
                print("runforged did not stop in time", file=sys.stderr)
                return EXIT_UNAVAILABLE
        lifecycle.start_detached(ctx.endpoints, ctx.args.timeout)
    hello = ctx.call(m.Hello(client="runforgectl"))
    if ctx.json:
        output.print_json(hello)
    else:
        print(f"runforged restarted (pid {hello.pid}); runs in flight carry on")
    return EXIT_OK


def cmd_daemon_install_service(ctx: Context) -> int:
    import pwd
    import shutil

    from runforgectl import lifecycle

    runforged = shutil.which("runforged") or str(Path(sys.executable).with_name("runforged"))
    target = Path(ctx.args.dest) if ctx.args.dest else lifecycle.unit_dir() / lifecycle.SERVICE_NAME
    lifecycle.write_atomically(target, lifecycle.render_unit(runforged))
    user = pwd.getpwuid(os.getuid()).pw_name
    linger = lifecycle.lingering(user)
    if ctx.json:
        output.print_json({"path": str(target), "exec": runforged, "linger": linger})
    else:
        print(f"wrote {target}")
        print(
            "enable it with: systemctl --user daemon-reload && "
            "systemctl --user enable --now runforged"
        )
    if linger is not True:
        state = "is off" if linger is False else "could not be checked"
        print(
            f"warning: lingering {state} for {user}: without it systemd stops your user "
            f"services when you log out of your last session, and runforged with every "
            f"training run in it is killed. Keep them running with:\n"
            f"  loginctl enable-linger {user}",
            file=sys.stderr,
        )
    return EXIT_OK


DAEMON_ACTIONS = (
    ("start", cmd_daemon_start, "start the daemon in the background", "runforgectl daemon start"),
    (
        "stop",
        cmd_daemon_stop,
        "stop the daemon (cancels in-flight runs gracefully)",
        "runforgectl daemon stop --keep-runs",
    ),
    (
        "restart",
        cmd_daemon_restart,
        "restart the daemon; runs in flight carry on",
        "runforgectl daemon restart",
    ),
    (
        "install-service",
        cmd_daemon_install_service,
        "write the systemd user unit",
        "runforgectl daemon install-service",
    ),
)


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    if name == "ping":
        parser.set_defaults(fn=cmd_ping)
    elif name == "status":
        parser.set_defaults(fn=cmd_status)
    elif name == "daemon":
        from runforgectl.parser import example_epilog

        actions = parser.add_subparsers(dest="daemon_command", required=True, metavar="ACTION")
        for action, fn, summary, example in DAEMON_ACTIONS:
            p = actions.add_parser(
                action,
                help=summary,
                description=summary,
                epilog=example_epilog(example),
                formatter_class=argparse.RawDescriptionHelpFormatter,
                parents=[common],
            )
            p.set_defaults(fn=fn)
            if action == "stop":
                p.add_argument(
                    "--keep-runs",
                    action="store_true",
                    help="leave runs in flight to their monitors (the next daemon takes them over)",
                )
            if action == "install-service":
                p.add_argument(
                    "--dest",
                    help="unit file path (default: ~/.config/systemd/user/runforged.service)",
                )
