"""``python -m runforge_rayjob --run-dir DIR --nonce N``: see the package docstring."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runforge_contract.atomicio import write_bytes_atomic
from runforge_contract.layout import (
    CONTROL_FILE,
    EXECUTOR_DIR,
    EXIT_FILE,
    EXIT_NOT_SHARED,
    NOT_SHARED_KEY,
    OUTPUT_FILE,
    SPEC_FILE,
    TAG_RECORD,
    TAG_STDERR,
    TAG_STDOUT,
)

EXIT_CANCELLED_BEFORE_START = 0

POLL_S = 0.01  # control file and trainer exit
TREE_REFRESH_S = 0.25
PIPE_DRAIN_TIMEOUT_S = 5.0
READ_CHUNK = 1 << 16
MAX_LINE = 1 << 20


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class Stream:
    """``output``: whole tagged lines appended with one ``write`` each, from any thread."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def line(self, tag: bytes, payload: bytes) -> None:
        data = tag + payload[:MAX_LINE].replace(b"\n", b" ") + b"\n"
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if tag != TAG_RECORD:
                # Also in the job's own log, for whoever looks at the Ray dashboard.
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.buffer.write(data[1:])
                    sys.stdout.buffer.flush()

    def record(self, kind: str, **fields: Any) -> None:
        fields.update(record=kind, time=time.time())
        self.line(TAG_RECORD, json.dumps(fields, separators=(",", ":")).encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        os.close(self._fd)


def _pump(pipe: Any, stream: Stream, tag: bytes) -> None:
    pending = b""
    while True:
        chunk = pipe.read1(READ_CHUNK) if hasattr(pipe, "read1") else pipe.read(READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            lines.append(pending)
            pending = b""
        for line in lines:
            stream.line(tag, line)
    if pending:
        stream.line(tag, pending)


def _boot_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22):
    with the pid, an identity a reused pid cannot fake."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def _package_root(name: str) -> str:
    """The folder holding package ``name``: the job's ``py_modules`` folder (on this
    process's ``PYTHONPATH``) first, else wherever this interpreter would import it from."""
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and (Path(entry) / name / "__init__.py").is_file():
            return entry
    found = importlib.util.find_spec(name)
    if found is not None and found.submodule_search_locations:
        return str(Path(next(iter(found.submodule_search_locations))).parent)
    return ""


class ProcessTree:
    """The trainer and every descendant seen (by pid and start time), so a worker that
    left the trainer's session is still killed."""

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.known: dict[int, int | None] = {leader: _boot_ticks(leader)}

    def refresh(self) -> None:
        parents = _parents()
        frontier = list(self.known)
        while frontier:
            pid = frontier.pop()
            for child, parent in parents.items():
                if parent == pid and child not in self.known:
                    self.known[child] = _boot_ticks(child)
                    frontier.append(child)

    def kill_all(self) -> int:
        killed = 0
        with contextlib.suppress(OSError):
            os.killpg(self.leader, signal.SIGKILL)
        for pid, ticks in self.known.items():
            if ticks is not None and _boot_ticks(pid) == ticks:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed


class Entrypoint:
    def __init__(self, run_dir: Path, spec: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / EXECUTOR_DIR
        self.spec = spec
        self.control_path = self.dir / CONTROL_FILE
        self.control_stamp: tuple[int, int] | None = None
        self.cancel_seen = False
        self.deadline: float | None = None
        self.killed = 0
        self.stream: Stream | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.term_from_ray = False

    def control(self) -> dict[str, Any]:
        """The daemon's requests, re-read only when the file changed."""
        try:
            st = os.stat(self.control_path)
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self.control_stamp:
            return {}
        document = _read_json(self.control_path)
        if not isinstance(document, dict):
            return {}  # being replaced: read it on the next pass
        self.control_stamp = stamp
        return document

    def trainer_environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
        }
        # The runner packages that came with the job, and nothing else of this process's path.
        roots = [_package_root(str(name)) for name in self.spec.get("trainer_packages", [])]
        env.update({str(k): str(v) for k, v in self.spec.get("env", {}).items()})
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(r for r in roots if r))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self) -> int:
        if self.control().get("cancel") is not None:
            # Cancelled while the job waited for resources: never start training.
            return EXIT_CANCELLED_BEFORE_START
        argv = [str(a) for a in self.spec["argv"]]
        if not self.spec.get("python"):
            argv[0] = sys.executable  # the cluster's interpreter: no pythonPath was set
        self.stream = Stream(self.dir / OUTPUT_FILE)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.spec["cwd"],
                env=self.trainer_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self.stream.record("spawn_failed", error=str(exc))
            self._write_exit(None, spawn_error=str(exc))
            self.stream.close()
            return 1
        self.stream.record("spawned", pid=self.proc.pid, host=socket.gethostname(), argv=argv)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        pumps = [
            threading.Thread(target=_pump, args=(self.proc.stdout, self.stream, TAG_STDOUT)),
            threading.Thread(target=_pump, args=(self.proc.stderr, self.stream, TAG_STDERR)),
        ]
        for pump in pumps:
            pump.daemon = True
            pump.start()
        tree = ProcessTree(self.proc.pid)
        next_refresh = 0.0
        while (code := self.proc.poll()) is None:
            now = time.monotonic()
            if now >= next_refresh:
                tree.refresh()
                next_refresh = now + TREE_REFRESH_S
            request = self.control()
            cancel = request.get("cancel")
            if isinstance(cancel, dict):
                if not self.cancel_seen:
                    self._start_cancel(None)
                self._keep(cancel.get("deadline"))
            elif self.term_from_ray and not self.cancel_seen:
                # Ray's stop_job: the run's grace, counted here.
                self._start_cancel(float(self.spec.get("grace_s", 0)))
            if request.get("kill") or (self.deadline is not None and now >= self.deadline):
                self._kill(tree, "kill_request" if request.get("kill") else "deadline")
            time.sleep(POLL_S)
        # Workers the trainer left behind die with it (they would hold the pipes open).
        tree.refresh()
        leftovers = tree.kill_all() if self.killed == 0 else 0
        for pump in pumps:
            pump.join(PIPE_DRAIN_TIMEOUT_S)
        self.stream.record("exited", exit_code=code, leftovers_killed=leftovers)
        self._write_exit(code)
        self.stream.close()
        return code if code >= 0 else 128 - code

    def _keep(self, deadline: Any) -> None:
        """The daemon's deadline (UNIX time): kept here too, so the tree is killed on time
        even while no daemon is there to ask (the daemon's own kill request, when it is,
        comes at the same moment)."""
        if isinstance(deadline, (int, float)) and not isinstance(deadline, bool):
            at = time.monotonic() + max(0.0, deadline - time.time())
            self.deadline = at if self.deadline is None else min(self.deadline, at)

    def _on_sigterm(self, _signum: int, _frame: Any) -> None:
        self.term_from_ray = True

    def _start_cancel(self, grace_s: float | None) -> None:
        assert self.proc is not None and self.stream is not None
        self.cancel_seen = True
        if grace_s is not None:
            self.deadline = time.monotonic() + max(0.0, grace_s)
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGTERM)  # the trainer only, never its workers
        self.stream.record("sigterm", grace_s=grace_s, from_ray=self.term_from_ray)

    def _kill(self, tree: ProcessTree, reason: str) -> None:
        assert self.stream is not None
        if self.killed:
            return
        tree.refresh()
        self.killed = max(1, tree.kill_all())
        self.stream.record("killed", processes=self.killed, reason=reason)

    def _write_exit(self, code: int | None, spawn_error: str = "") -> None:
        document = {
            "exit_code": code,
            "killed": bool(self.killed),
            "cancel_seen": self.cancel_seen,
            "spawn_error": spawn_error,
            "finished_at": time.time(),
        }
        write_bytes_atomic(self.dir / EXIT_FILE, json.dumps(document).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runforge_rayjob")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--nonce", required=True)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    spec = _read_json(run_dir / EXECUTOR_DIR / SPEC_FILE)
    if not isinstance(spec, dict) or spec.get("nonce") != args.nonce:
        print(
            json.dumps(
                {
                    NOT_SHARED_KEY: True,
                    "run_dir": str(run_dir),
                    "host": socket.gethostname(),
                    "found": "another run's file" if isinstance(spec, dict) else "nothing",
                }
            ),
            flush=True,
        )
        return EXIT_NOT_SHARED
    return Entrypoint(run_dir, spec).run()


if __name__ == "__main__":
    sys.exit(main())
