"""The peers, run side by side with runforged: circusd and supervisord, each in its own
temp dir, on ipc/unix sockets there, supervising ``peer_program.py``.

Both get the same two programs, neither started automatically: ``stubborn`` (catches
SIGTERM and keeps running; stop grace 2 s) and ``prompt`` (dies at once on SIGTERM).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

from benchmarks.processes import command, read_int_file, terminate, timed_run, wait_until
from benchmarks.runforged_process import short_tempdir

PROGRAM = Path(__file__).resolve().with_name("peer_program.py")
PROGRAMS = ("stubborn", "prompt")
STOP_GRACE_S = 2
START_TIMEOUT_S = 60


class Peer(ABC):
    """A supervisor daemon and its command-line client."""

    name = ""

    def __init__(self) -> None:
        self.root = short_tempdir(f"rf-bench-{self.name}-")
        self.state_dir = self.root / "state"
        self.state_dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @abstractmethod
    def _write_config(self) -> None: ...

    @abstractmethod
    def _daemon_argv(self) -> list[str]: ...

    @abstractmethod
    def ctl(self, *args: str) -> list[str]:
        """The argv of a whole-process client command."""

    def status_argv(self) -> list[str]:
        return self.ctl("status")

    @abstractmethod
    def stop_argv(self, program: str) -> list[str]:
        """Stop ``program`` and return once it is gone."""

    def program_argv(self, mode: str) -> str:
        return f"{sys.executable} {PROGRAM} {mode} {self.state_dir}"

    def start(self) -> float:
        """Start the daemon; seconds until its client gets an answer."""
        started = time.perf_counter()
        with open(self.root / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                self._daemon_argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            return subprocess.run(self.status_argv(), capture_output=True).returncode == 0

        wait_until(answers, START_TIMEOUT_S, f"{self.name} to answer", interval_s=0.01)
        return time.perf_counter() - started

    def start_program(self, mode: str) -> int:
        """Start one of the two programs; its pid once its SIGTERM handling is in place."""
        pid_file = self.state_dir / f"{mode}.pid"
        pid_file.unlink(missing_ok=True)
        timed_run(self.ctl("start", mode))
        return wait_until(lambda: read_int_file(pid_file), START_TIMEOUT_S, f"{pid_file}")

    def log_tail(self) -> str:
        path = self.root / f"{self.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        """Stop the daemon (its programs with it) and remove its directory."""
        if self.proc is not None:
            terminate(self.proc, timeout_s=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Supervisor(Peer):
    """supervisord, ``stopwaitsecs=2``; its client talks XML-RPC over a unix socket."""

    name = "supervisor"

    @property
    def config(self) -> Path:
        return self.root / "supervisord.conf"

    def _write_config(self) -> None:
        programs = "".join(
            f"""
[program:{mode}]
command={self.program_argv(mode)}
autostart=false
autorestart=false
startsecs=0
stopsignal=TERM
stopwaitsecs={STOP_GRACE_S}
"""
            for mode in PROGRAMS
        )
        self.config.write_text(
            f"""[unix_http_server]
file={self.root}/supervisor.sock

[supervisord]
nodaemon=true
logfile={self.root}/supervisord.log
pidfile={self.root}/supervisord.pid
childlogdir={self.root}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.root}/supervisor.sock
{programs}"""
        )

    def _daemon_argv(self) -> list[str]:
        return [command("supervisord"), "-c", str(self.config)]

    def ctl(self, *args: str) -> list[str]:
        return [command("supervisorctl"), "-c", str(self.config), *args]

    def status_argv(self) -> list[str]:
        # `status` exits 3 when a program is not running: ask for the daemon's pid instead
        # when only "does it answer" matters, but time the real `status` elsewhere.
        return self.ctl("pid")

    def stop_argv(self, program: str) -> list[str]:
        return self.ctl("stop", program)


class Circus(Peer):
    """circusd, ``graceful_timeout=2``; its client talks ZeroMQ over ipc."""

    name = "circus"

    @property
    def config(self) -> Path:
        return self.root / "circus.ini"

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.root}/control.sock"

    def _write_config(self) -> None:
        watchers = "".join(
            f"""
[watcher:{mode}]
cmd = {self.program_argv(mode)}
numprocesses = 1
autostart = False
respawn = False
warmup_delay = 0
stop_signal = TERM
graceful_timeout = {STOP_GRACE_S}
"""
            for mode in PROGRAMS
        )
        self.config.write_text(
            f"""[circus]
endpoint = {self.endpoint}
pubsub_endpoint = ipc://{self.root}/pubsub.sock
statsd = False
{watchers}"""
        )

    def _daemon_argv(self) -> list[str]:
        return [
            command("circusd"),
            "--log-output",
            str(self.root / "circusd.log"),
            str(self.config),
        ]

    def ctl(self, *args: str) -> list[str]:
        return [command("circusctl"), "--endpoint", self.endpoint, "--timeout", "30", *args]

    def stop_argv(self, program: str) -> list[str]:
        return self.ctl("stop", program, "--waiting")
