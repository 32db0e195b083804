"""A local Ray head on 127.0.0.1 only, for the benchmarks and the Ray tests.

``ray start --head --block`` runs as our child in its own session: stopping it (SIGTERM)
stops every Ray process it started; anything left (workers, job entrypoints) is found by
the head's temp dir and killed. Needs ``pip install 'runforge[ray]'``.

Ray rewrites ``--node-ip-address=127.0.0.1`` to the external interface unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; with it, and ``--dashboard-host=127.0.0.1``,
every socket of the head is bound to the loopback interface (checked after the start).
Usage statistics are off, so nothing leaves the machine.

``unshared``: a folder the head's processes (and so its jobs) see empty, as a cluster node
without the shared filesystem would. The head runs in a private mount namespace
(``unshare --mount``, and ``--map-root-user`` when not root) in which an empty tmpfs is
mounted over that folder; everyone else sees the real one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from runforged.ray_jobs import RayJobsClient, RayJobsError

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60


def ray_command() -> str | None:
    """The ``ray`` console script of this interpreter's installation, if Ray is there."""
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    return shutil.which("ray")


def private_mount_command(folder: Path) -> list[str]:
    """The prefix that runs a command in a private mount namespace where ``folder`` is an
    empty tmpfs (the command is exec'd: its pid is the prefix's)."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = 'mount -t tmpfs -o size=1m,mode=0755 runforge-unshared "$0" && exec "$@"'
    return [
        "unshare",
        "--mount",
        "--propagation=private",
        *user,
        "--",
        "sh",
        "-c",
        script,
        str(folder),
    ]


def private_mounts_work(probe: Path) -> bool:
    """Whether this machine lets us run a command with a private mount (root, or
    unprivileged user namespaces), tried on ``probe`` (an existing folder)."""
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(
            [*private_mount_command(probe), "true"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRayHead:
    """One head; ``temp_dir`` is Ray's (sockets, logs, sessions) and is ours to remove."""

    def __init__(
        self,
        temp_dir: Path,
        *,
        num_cpus: int = 4,
        env: Mapping[str, str] | None = None,
        unshared: Path | None = None,
    ) -> None:
        self.temp_dir = temp_dir
        self.unshared = unshared
        self.num_cpus = num_cpus
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"  # the Job API
        self._env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = temp_dir / "ray-start.log"

    def client(self) -> RayJobsClient:
        return RayJobsClient(self.address)

    def start(self) -> float:
        """Start the head; seconds until its Job API answers."""
        command = ray_command()
        if command is None:
            raise RuntimeError("Ray is not installed (pip install 'runforge[ray]')")
        env = dict(self._env)
        env.update(
            {
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
                # The jobs' `python` is this interpreter (it has the standard library the
                # entrypoint needs, and what the test trainers import).
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        started = time.monotonic()
        wrapper = [] if self.unshared is None else private_mount_command(self.unshared)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *wrapper,
                    command,
                    "start",
                    "--head",
                    "--block",
                    "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1",
                    f"--port={self.gcs_port}",
                    f"--dashboard-port={self.dashboard_port}",
                    f"--ray-client-server-port={free_port()}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--num-cpus={self.num_cpus}",
                    f"--temp-dir={self.temp_dir}",
                    "--disable-usage-stats",
                    "--include-dashboard=true",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        client = self.client()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ray start exited {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                client.version()
                break
            except RayJobsError:
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise
                time.sleep(0.25)
        return time.monotonic() - started

    def cluster_view(self, path: Path) -> Path:
        """``path`` as the head's processes see it (through their mount namespace)."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / path.relative_to("/")

    def processes(self) -> list[psutil.Process]:
        """Every process of this head: those naming its temp dir, the ``ray start`` child,
        and all their descendants (workers, job entrypoints, trainers)."""
        leader = self.proc.pid if self.proc is not None else -1
        roots = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(self.temp_dir) in cmdline or proc.pid == leader:
                roots.append(proc)
        found = {p.pid: p for p in roots}
        for root in roots:
            try:
                for child in root.children(recursive=True):
                    found.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def listening_hosts(self) -> set[str]:
        """The addresses the head's processes listen on (expected: 127.0.0.1 only)."""
        hosts = set()
        for process in self.processes():
            try:
                connections = process.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for conn in connections:
                if conn.status == psutil.CONN_LISTEN:
                    hosts.add(conn.laddr.ip.removeprefix("::ffff:"))
        return hosts

    def stop(self) -> float:
        """Stop every process of the head; seconds it took."""
        started = time.monotonic()
        members = self.processes()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        alive = members
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            time.sleep(0.1)
        for leftover in alive + self.processes():
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                continue
        return time.monotonic() - started


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
