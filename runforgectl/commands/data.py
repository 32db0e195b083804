"""``sample-data``: write the bundled sample datasets into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from runforgectl import output
from runforgectl.context import Context
from runforgectl.exits import EXIT_OK


def cmd_sample_data(ctx: Context) -> int:
    """Write the bundled sample datasets into a folder (default: the workspace)."""
    # The contract package's generator is standard library only: no daemon code is imported.
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


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", nargs="?", help="destination folder (default: the workspace)")
    parser.set_defaults(fn=cmd_sample_data)
