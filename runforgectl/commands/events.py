"""``events`` (the event stream, one per line) and ``bridge`` (JSON lines on stdio)."""

from __future__ import annotations

import argparse
import os
import time

from runforge_protocol import messages as m
from runforgectl import output
from runforgectl.context import Context
from runforgectl.exits import EXIT_OK


def cmd_events(ctx: Context) -> int:
    a = ctx.args
    if a.run:
        ws = os.path.realpath(ctx.workspace())

        def emit(event: m.Event) -> None:
            if ctx.json:
                output.print_json(event)
            else:
                print(event_line(event), flush=True)

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
                    print(event_line(event), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK


def event_line(event: m.Event) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
    where = f" {event.run_id}#{event.run_seq}" if event.run_id else ""
    data = {k: v for k, v in event.data.items() if k not in ("event", "timestamp", "run_id")}
    return f"{stamp} [{event.seq}]{where} {event.type} {output._json.encode(data).decode()}"


def cmd_bridge(ctx: Context) -> int:
    """Speak the protocol as JSON lines on stdin/stdout (see runforgectl/bridge.py)."""
    from runforgectl.bridge import run_bridge

    ctx.call(m.Hello(client="runforgectl-bridge"))  # exit 3 at once when no daemon is there
    return run_bridge(ctx.endpoints)


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    if name == "events":
        parser.add_argument("--run", help="one run: replay its events, then follow it to its end")
        parser.add_argument(
            "--since", type=int, default=0, help="with --run: start after this run_seq"
        )
        parser.set_defaults(fn=cmd_events)
    elif name == "bridge":
        parser.set_defaults(fn=cmd_bridge)
