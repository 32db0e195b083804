"""runforgectl's entry point: parse, run the command, turn failures into exit statuses."""

from __future__ import annotations

import os
import sys

from runforgectl import output
from runforgectl.client import DaemonError, DaemonUnavailable
from runforgectl.context import Context
from runforgectl.exits import (
    EXIT_DAEMON_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PIPE_CLOSED,
    EXIT_UNAVAILABLE,
)
from runforgectl.parser import AUTOSTART_ENV, UsageParser, build_parser, requested_command

# Commands that never need a running daemon (or manage it themselves).
_NO_AUTOSTART = ("daemon", "sample-data", "completion")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    try:
        return _run(arguments)
    except BrokenPipeError:
        # The reader went away (`runforgectl events | head -3`): end quietly, as a tool
        # killed by SIGPIPE would. Point stdout at /dev/null so that the interpreter's
        # final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(arguments: list[str]) -> int:
    UsageParser.json_errors = "--json" in arguments
    parser = build_parser(requested_command(arguments))
    args = parser.parse_args(arguments)
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", 10.0)
    args.runtime_dir = getattr(args, "runtime_dir", None)
    args.workspace = getattr(args, "workspace", None)
    autostart = getattr(args, "start", False) or os.environ.get(AUTOSTART_ENV) == "1"
    ctx = Context(args)
    try:
        if autostart and args.command not in _NO_AUTOSTART:
            from runforgectl import lifecycle

            if lifecycle.running_pid(ctx.endpoints) is None:
                lifecycle.start_detached(ctx.endpoints, args.timeout)
                print(f"runforgectl: started runforged on {ctx.endpoints.control}", file=sys.stderr)
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
