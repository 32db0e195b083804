"""``runforged``: run the daemon in the foreground, or detach it for interactive use."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time

from runforge_protocol.discovery import RUNTIME_DIR_ENV, Endpoints, RuntimeDirError
from runforged.runtime import prepare_runtime_dir

# A detached daemon reports readiness (or why it could not start) on this inherited pipe.
READY_FD_ENV = "RUNFORGED_READY_FD"
EXIT_CANNOT_START = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="runforged", description="The RunForge daemon: owns training runs for one user."
    )
    parser.add_argument(
        "--runtime-dir",
        help=f"where the sockets and lock live (default: ${RUNTIME_DIR_ENV}, else "
        "$XDG_RUNTIME_DIR/runforge, else /tmp/runforge-<uid>)",
    )
    parser.add_argument(
        "--detach", action="store_true", help="start in the background and return once ready"
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        help="default: console on a terminal, JSON lines otherwise",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.epilog = (
        "environment: RUNFORGE_RUNTIME_DIR (sockets), RUNFORGE_CONFIG_DIR (config, trust "
        "store), RUNFORGE_STATE_DIR (in-flight records, --detach log; default "
        "$XDG_STATE_HOME/runforge), NO_COLOR (plain console logs), JOURNAL_STREAM (set by "
        "systemd: syslog priority prefixes). exit status: 0 stopped cleanly, 1 could not start."
    )
    return parser.parse_args(argv)


def _version() -> str:
    from runforge_protocol.messages import PROTOCOL_VERSION
    from runforged import __version__

    return f"runforged {__version__} (protocol {PROTOCOL_VERSION})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    endpoints = Endpoints.resolve(args.runtime_dir)
    if args.detach:
        return detach(endpoints, args)
    return run_foreground(endpoints, args)


def run_foreground(endpoints: Endpoints, args: argparse.Namespace) -> int:
    from runforged.app import open_daemon
    from runforged.logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    ready_fd = _take_ready_fd()
    try:
        daemon = open_daemon(endpoints)
    except RuntimeDirError as exc:
        print(f"runforged: {exc}", file=sys.stderr)
        _report(ready_fd, f"ERROR {exc}")
        return EXIT_CANNOT_START
    try:
        asyncio.run(daemon.serve(on_ready=lambda: _report(ready_fd, "READY")))
    finally:
        daemon.close()
    return 0


def detach(endpoints: Endpoints, args: argparse.Namespace) -> int:
    """Start a foreground daemon in its own session and wait for it to say it is ready."""
    try:
        prepare_runtime_dir(endpoints.runtime_dir)
    except RuntimeDirError as exc:
        print(f"runforged: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "runforged", "--runtime-dir", str(endpoints.runtime_dir)]
    argv += ["--log-level", args.log_level, "--log-format", args.log_format or "json"]
    # Logs are state, not runtime data: they must survive a logout's tmpfs cleanup.
    from runforged.durable_state import state_dir

    log_dir = state_dir()
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = log_dir / "runforged.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(log_fd, "ab") as log_file:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            pass_fds=(write_fd,),
            env={**os.environ, READY_FD_ENV: str(write_fd)},
        )
    os.close(write_fd)
    message = _read_report(read_fd, timeout_s=30.0)
    if message == "READY":
        print(f"runforged: started (log: {log_path})")
        return 0
    reason = message.removeprefix("ERROR ") if message else f"no readiness report; see {log_path}"
    print(f"runforged: failed to start: {reason}", file=sys.stderr)
    return EXIT_CANNOT_START


def _take_ready_fd() -> int | None:
    value = os.environ.pop(READY_FD_ENV, None)
    return int(value) if value and value.isdigit() else None


def _report(fd: int | None, message: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, message.encode() + b"\n")
        os.close(fd)


def _read_report(fd: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    chunks = b""
    os.set_blocking(fd, False)
    try:
        while time.monotonic() < deadline and b"\n" not in chunks:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                break
            chunks += chunk
    finally:
        os.close(fd)
    return chunks.decode(errors="replace").strip()


if __name__ == "__main__":
    sys.exit(main())
