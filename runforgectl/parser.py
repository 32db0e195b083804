"""runforgectl's argument parser, built from the one list of commands
(``runforgectl.commands.COMMANDS``). On a normal run only the named command's parser is
built (and only its module imported): building every subcommand costs start-up time."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from typing import Any, NoReturn

from runforge_protocol.discovery import RUNTIME_DIR_ENV
from runforgectl.commands import BY_NAME, COMMANDS
from runforgectl.exits import EXIT_USAGE

AUTOSTART_ENV = "RUNFORGE_AUTOSTART"
_OPTIONS_WITH_VALUE = ("--runtime-dir", "--timeout")

EPILOG = f"""\
Run 'runforgectl COMMAND --help' for a command's options and an example.

environment:
  {RUNTIME_DIR_ENV}  the daemon's runtime directory (sockets); default
                        $XDG_RUNTIME_DIR/runforge, else /tmp/runforge-<uid>
  RUNFORGE_CONFIG_DIR   user config and trust store (default ~/.config/runforge)
  RUNFORGE_STATE_DIR    in-flight records and the detached daemon's log
                        (default $XDG_STATE_HOME/runforge)
  {AUTOSTART_ENV}=1  start the daemon when none answers (as --start)
  TERM=dumb             plain progress lines instead of one redrawn line

exit status:
  0   success (for cancel: the run was cancelled gracefully)
  1   the daemon answered with an error
  2   usage error (bad arguments)
  3   the daemon is not running, did not answer, or its runtime directory is not yours
  10  the followed run was cancelled by force
  11  cancel: training finished before the cancel took effect
  12  the followed run failed
  13  train: the followed run was cancelled gracefully
  14  the followed run was lost (the daemon died while it ran)
  130 interrupted (Ctrl-C)
  141 stdout was closed early (e.g. '| head'): the SIGPIPE convention
"""


class UsageParser(argparse.ArgumentParser):
    """argparse whose usage errors also print a JSON error document on stdout when
    ``--json`` is on the command line, so scripts parsing stdout see what went wrong."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if UsageParser.json_errors:
            from runforgectl.output import print_json

            print_json(
                {
                    "code": "USAGE",
                    "message": message,
                    "remediation": f"see '{self.prog} --help'",
                    "details": {"usage": self.format_usage().strip()},
                }
            )
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (package metadata is slow to read)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from runforge_protocol.messages import PROTOCOL_VERSION

        try:
            number = version("runforge")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        print(f"runforgectl {number} (protocol {PROTOCOL_VERSION})")
        parser.exit()


def seconds_above_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def requested_command(argv: list[str]) -> str | None:
    """The command named on the command line, if it is a known one."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _OPTIONS_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            return token if token in BY_NAME else None
    return None


def example_epilog(example: str) -> str:
    return f"example:\n  {example}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) the top level plus that one command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    # Global options are accepted before or after the command.
    common.add_argument(
        "--runtime-dir",
        default=argparse.SUPPRESS,
        help=f"daemon runtime directory (default: ${RUNTIME_DIR_ENV} or the per-user default)",
    )
    common.add_argument(
        "--timeout",
        type=seconds_above_zero,
        default=argparse.SUPPRESS,
        help="seconds to wait for each reply (default 10)",
    )
    common.add_argument(
        "--start",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"start the daemon first if it is not running (or set {AUTOSTART_ENV}=1)",
    )
    ws = argparse.ArgumentParser(add_help=False)
    ws.add_argument("--workspace", "-w", help="workspace folder (default: current directory)")

    parser = UsageParser(
        prog="runforgectl",
        description="Client of the RunForge daemon, which owns this user's training runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if only is not None and command.name != only:
            continue
        p = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.summary,
            epilog=example_epilog(command.example),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common, ws] if command.workspace else [common],  # type: ignore[list-item]
        )
        module = importlib.import_module(f"runforgectl.commands.{command.module}")
        module.configure(command.name, p, common)
    return parser
