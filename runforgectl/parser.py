"""runforgectl's argument parser, built from the one list of commands
(``runforgectl.commands.COMMANDS``). On a normal run only the named command's parser is
built (and only its module imported): building every subcommand costs start-up time."""

from __future__ import annotations

import argparse
import importlib

from runforge_protocol.discovery import RUNTIME_DIR_ENV
from runforgectl.commands import BY_NAME, COMMANDS

AUTOSTART_ENV = "RUNFORGE_AUTOSTART"
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
    ws = argparse.ArgumentParser(add_help=False)
    ws.add_argument("--workspace", "-w", help="workspace folder (default: current directory)")

    parser = argparse.ArgumentParser(
        prog="runforgectl", description="Client of the RunForge daemon.", parents=[common]
    )
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
            parents=[common, ws] if command.workspace else [common],
        )
        module = importlib.import_module(f"runforgectl.commands.{command.module}")
        module.configure(command.name, p, common)
    return parser
