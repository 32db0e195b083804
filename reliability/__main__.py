"""``python -m reliability``: attack a real daemon and a real bridge, print what happened
and write it into RELIABILITY.md (between its fuzz markers)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from reliability import bridge_fuzz, protocol_fuzz
from reliability.report import flat, fuzz_markdown, growth, replace_section

REPO = Path(__file__).resolve().parents[1]
MARKDOWN = REPO / "RELIABILITY.md"
DEFAULT_FRAMES = 100_000
DEFAULT_LINES = 10_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    fuzz = commands.add_parser("fuzz", help="the protocol and bridge fuzzers (the default)")
    for p in (parser, fuzz):
        p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="protocol frames")
        p.add_argument("--bridge-lines", type=int, default=DEFAULT_LINES, help="bridge lines")
        p.add_argument("--seed", type=int, default=1, help="the same seed sends the same input")
        p.add_argument(
            "--markdown",
            type=Path,
            help="the report to update (default: the repository's RELIABILITY.md, on runs "
            "of the default size only)",
        )
    return parser.parse_args(argv)


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head or "unknown"


def _say(text: str) -> None:
    print(text, flush=True)


def fuzz(args: argparse.Namespace) -> int:
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    protocol = protocol_fuzz.run(args.frames, args.seed, progress=_say)
    bridge = bridge_fuzz.run(args.bridge_lines, args.seed, progress=_say)
    rss, fds = growth(protocol.resources)
    _say(
        f"\nprotocol: {protocol.frames_sent} frames, {protocol.replies} replies, "
        f"{protocol.structured_errors} structured errors, {protocol.internal_errors} internal, "
        f"{protocol.unstructured} unstructured, {protocol.crashes} crashes, "
        f"{protocol.hangs} hangs, RSS {rss / (1 << 20):+.1f} MiB, fds {fds:+d}"
    )
    b_rss, b_fds = growth(bridge.resources)
    _say(
        f"bridge:   {bridge.lines_sent} lines, {bridge.replies} replies, "
        f"{bridge.structured_errors} structured errors, {bridge.unstructured} unstructured, "
        f"{bridge.crashes} crashes, {bridge.hangs} hangs, RSS {b_rss / (1 << 20):+.1f} MiB, "
        f"fds {b_fds:+d}"
    )
    target = args.markdown
    if target is None and (args.frames, args.bridge_lines) == (DEFAULT_FRAMES, DEFAULT_LINES):
        target = MARKDOWN
    if target is not None:
        body = fuzz_markdown(protocol, bridge, when=when, commit=_commit(), seed=args.seed)
        replace_section(target, "fuzz", body)
        _say(f"report: {target}")
    passed = protocol.passed and bridge.passed
    return 0 if passed and flat(protocol.resources) and flat(bridge.resources) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return fuzz(args)


if __name__ == "__main__":
    sys.exit(main())
