"""``python -m runforge_rayjob --run-dir DIR --nonce N``: see the package docstring."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runforge_contract import trainer_parent
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
DEFAULT_MAX_LOG_BYTES = 64 << 20  # a spec from a daemon that did not say
PIPE_DRAIN_TIMEOUT_S = 5.0
READ_CHUNK = 1 << 16


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class Stream:
    """``output``: whole tagged lines appended with one ``write`` each, from any thread.

    Plain log lines (stdout, and stderr lines that cannot be events) stop at the run's
    ``maxLogBytes`` as in ``logs.txt`` (``LogCap``): the line that reaches the cap still
    goes (the daemon's own cap, on the same lines, then notes it); later ones are only
    counted, so a flooding trainer cannot fill the shared filesystem. Lines that may be
    events always go."""

    def __init__(self, path: Path, max_log_bytes: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self.cap = trainer_parent.LogCap(max_log_bytes)

    def line(self, tag: bytes, payload: bytes) -> None:
        data = tag + payload + b"\n"  # a line (LineSplitter) or a record: no newline in it
        if tag == TAG_STDOUT or (
            tag == TAG_STDERR and not payload.lstrip().startswith((b"{", b"["))
        ):
            with self._lock:
                passes = self.cap.admit(data[1:]) is not None
            if not passes:
                return
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
    lines = trainer_parent.LineSplitter()
    while chunk := pipe.read(READ_CHUNK):
        complete, cut_head = lines.feed(chunk)
        for line in complete:
            stream.line(tag, line)
        if cut_head is not None:
            # As locally: a cut line is a log line, never an event.
            stream.line(TAG_STDOUT, cut_head + trainer_parent.CUT_NOTE)
    rest = lines.rest()
    if rest:
        stream.line(tag, rest)


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
        self.trainer_pid = 0
        self.exit_code: int | None = None
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
        max_log_bytes = self.spec.get("max_log_bytes")
        self.stream = Stream(
            self.dir / OUTPUT_FILE,
            max_log_bytes if isinstance(max_log_bytes, int) else DEFAULT_MAX_LOG_BYTES,
        )
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # The trainer's tree is every process below this one, double-forked ones included.
        trainer_parent.become_subreaper()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            self.trainer_pid = trainer_parent.spawn_trainer(
                argv, self.trainer_environment(), self.spec["cwd"], out_w, err_w
            )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            self.stream.record("spawn_failed", error=str(exc))
            self._write_exit(None, spawn_error=str(exc))
            self.stream.close()
            return 1
        finally:
            os.close(out_w)
            os.close(err_w)
        self.stream.record("spawned", pid=self.trainer_pid, host=socket.gethostname(), argv=argv)
        pumps = [
            threading.Thread(target=_pump, args=(os.fdopen(fd, "rb", 0), self.stream, tag))
            for fd, tag in ((out_r, TAG_STDOUT), (err_r, TAG_STDERR))
        ]
        for pump in pumps:
            pump.daemon = True
            pump.start()
        while self.exit_code is None:
            now = time.monotonic()
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
                self._kill("kill_request" if request.get("kill") else "deadline")
            time.sleep(POLL_S)
            self._reap()
        # Workers the trainer left behind die with it (they would hold the pipes open).
        leftovers = trainer_parent.kill_tree(self._reap)
        for pump in pumps:
            pump.join(PIPE_DRAIN_TIMEOUT_S)
        code = self.exit_code
        self.stream.record(
            "exited",
            exit_code=code,
            leftovers_killed=leftovers,
            log_lines_not_copied=self.stream.cap.dropped_lines,
            log_bytes_not_copied=self.stream.cap.dropped_bytes,
        )
        self._write_exit(code)
        self.stream.close()
        return code if code >= 0 else 128 - code

    def _reap(self) -> None:
        code = trainer_parent.reap_children(self.trainer_pid)
        if code is not None:
            self.exit_code = code

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
        assert self.stream is not None
        self.cancel_seen = True
        if grace_s is not None:
            self.deadline = time.monotonic() + max(0.0, grace_s)
        with contextlib.suppress(OSError):
            os.kill(self.trainer_pid, signal.SIGTERM)  # the trainer only, never its workers
        self.stream.record("sigterm", grace_s=grace_s, from_ray=self.term_from_ray)

    def _kill(self, reason: str) -> None:
        assert self.stream is not None
        if self.killed:
            return
        self.killed = max(1, trainer_parent.kill_tree(self._reap))
        self.stream.record("killed", processes=self.killed, reason=reason)

    def _write_exit(self, code: int | None, spawn_error: str = "") -> None:
        record = trainer_parent.exit_record(
            exit_code=code,
            spawn_error=spawn_error,
            cancel_requested=self.cancel_seen,
            killed=bool(self.killed),
        )
        # 0644: on a cluster the daemon may read it as another uid over NFS.
        trainer_parent.write_exit_record(str(self.dir / EXIT_FILE), record, mode=0o644)


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
