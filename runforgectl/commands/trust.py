"""``trust``, ``untrust`` and ``settings``."""

from __future__ import annotations

import argparse
import os

import msgspec

from runforge_protocol import messages as m
from runforge_protocol.payloads import ResolvedSettings
from runforgectl import output
from runforgectl.context import Context
from runforgectl.exits import EXIT_OK


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
        print_settings(result.settings)
    return EXIT_OK


def print_settings(resolved: ResolvedSettings) -> None:
    # Every setting has an origin, in the daemon's own order: no key list to keep in step.
    settings = msgspec.to_builtins(resolved)  # keyed by the setting names (camelCase)
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


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    if name == "trust":
        parser.add_argument("path", nargs="?", help="folder to trust")
        parser.add_argument("--list", action="store_true", help="list trusted folders")
        parser.set_defaults(fn=cmd_trust)
    elif name == "untrust":
        parser.add_argument("path", help="folder to stop trusting")
        parser.set_defaults(fn=cmd_untrust)
    elif name == "settings":
        parser.set_defaults(fn=cmd_settings)
