"""``completion bash|zsh``: a completion script generated from the real parser by shtab.

shtab is imported here only, so it adds nothing to any other command's start-up."""

from __future__ import annotations

import argparse
import sys

from runforgectl.context import Context
from runforgectl.exits import EXIT_OK

SHELLS = ("bash", "zsh")


def cmd_completion(ctx: Context) -> int:
    import shtab

    from runforgectl.parser import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=ctx.args.shell))
    sys.stdout.flush()
    return EXIT_OK


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, help="the shell: " + " or ".join(SHELLS))
    parser.set_defaults(fn=cmd_completion)
