"""The Ray executor: runs as Ray jobs, behind the same seam as local trainers.

A run's job has ``runforge_rayjob`` as its entrypoint (its docstring describes the
cluster side and the files both sides share under ``<run dir>/.executor/``). The daemon
never imports Ray: it speaks the Job REST API (``runforged.ray_jobs``) from a thread.

- **start** writes ``spec.json`` (argv, environment, grace, a nonce), ships the entrypoint
  and the trainer packages through Ray's package store (content-addressed: sent once),
  and submits the job with the run id as its ``submission_id``.
- **output** follows the tagged ``output`` stream in the run folder on the shared
  filesystem (every ``FOLLOW_S``), which is faster than Ray's log tail and has an offset:
  a re-attached handle resumes right after what the previous daemon relayed.
- **signal_trainer** / **kill_tree** are requests in ``control.json``: the entrypoint
  SIGTERMs the trainer alone, and kills the whole tree on a kill request. If the
  entrypoint has not reported within ``KILL_BACKSTOP_S`` of a kill request, Ray's
  ``stop_job`` ends the job. A job still pending for resources when a cancel comes is
  stopped at once and never starts training (the entrypoint finds the request before
  it spawns anything).
- **wait** returns the trainer's exit status from ``exit.json``, or None when the job
  ended without one (it never started, or the cluster lost it); ``start_failure`` then
  says why (for instance: the cluster cannot see the workspace).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog

from runforge_contract import layout
from runforge_contract import trainer_events as te
from runforge_protocol.errors import ErrorCode
from runforge_protocol.events import INVALID_EVENT_LINE
from runforged import run_folder
from runforged.errors import RunforgeError
from runforged.executor import HandleRecord, Stream, TrainerSpec
from runforged.ray_jobs import JobInfo, JobStatus, RayJobsClient, RayJobsError, package_archive
from runforged.trainer_env import TRAINER_PACKAGES, package_dir
from runforged.trainer_events import InvalidEventLine, parse_line

log = structlog.get_logger("runforged.ray_executor")

FOLLOW_S = 0.02  # how often the output stream is read
STATUS_S = 1.0  # how often the job's status is asked (Ray updates it about as often)
REOPEN_S = 0.5  # an idle stream is reopened this often (an NFS client revalidates on open)
# After a kill request, how long the entrypoint has to report before Ray's stop_job.
KILL_BACKSTOP_S = 2.0
# A job that ended without exit.json may still be writing it over NFS: wait this long.
EXIT_FILE_SETTLE_S = 2.0
METADATA_RUN_ID = "runforge_run_id"
METADATA_WORKSPACE = "runforge_workspace"
# The job's entrypoint: the cluster's own Python (the one Ray's workers run), which has
# the standard library the entrypoint needs; the shipped packages are on its path.
ENTRYPOINT_PYTHON = "python"

_json = msgspec.json.Encoder()
_STREAMS: dict[bytes, Stream] = {layout.TAG_STDOUT: "stdout", layout.TAG_STDERR: "stderr"}


@dataclass(frozen=True)
class RayPlacement:
    """Where and how a run goes on the cluster (from the settings)."""

    address: str
    resources: Mapping[str, float] = field(default_factory=dict)
    # pythonPath was set explicitly: the trainer runs under it on the cluster. Otherwise
    # it runs under the cluster's own interpreter (the daemon's path means nothing there).
    python_set: bool = False
    grace_s: float = 5.0


def split_resources(resources: Mapping[str, float]) -> dict[str, Any]:
    """``rayResources`` as the Job API wants them: CPU and GPU have fields of their own."""
    fields: dict[str, Any] = {}
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    if "CPU" in resources:
        fields["entrypoint_num_cpus"] = resources["CPU"]
    if "GPU" in resources:
        fields["entrypoint_num_gpus"] = resources["GPU"]
    if custom:
        fields["entrypoint_resources"] = custom
    return fields


def ray_device(device: str, resources: Mapping[str, float]) -> str:
    """The runner's ``--device`` for a run on the cluster: ``auto`` means CUDA when the
    job asks for a GPU (the daemon cannot probe the node's GPUs from here)."""
    if device == "auto":
        return "cuda" if resources.get("GPU", 0) > 0 else "cpu"
    return device


def job_environment(names: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's variables that ``rayEnvVars`` names (``NAME`` or ``PREFIX*``)."""
    chosen = {}
    for key, value in environ.items():
        for name in names:
            if key == name or (name.endswith("*") and key.startswith(name[:-1])):
                chosen[key] = value
    return chosen


def cluster_error(exc: RayJobsError, workspace: str) -> RunforgeError:
    """The reply for a cluster that cannot be reached or refuses a job."""
    return RunforgeError(
        ErrorCode.CLUSTER_UNREACHABLE,
        str(exc),
        remediation=(
            f"start the cluster or correct runforge.rayAddress (now {exc.address}); "
            "`ray start --head` starts one on this machine"
        ),
        details={"address": exc.address, "workspace": workspace, "http_status": exc.status},
    )


def shipped_packages() -> list[Path]:
    """What a job carries to the cluster: the entrypoint, and the packages a trainer may
    import of ours (all standard library only)."""
    return [package_dir(name) for name in ("runforge_rayjob", *TRAINER_PACKAGES)]


class OutputFollower:
    """Whole tagged lines of the ``output`` stream, from ``offset``, as the file grows."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offset = 0
        self._fd: int | None = None
        self._opened = 0.0
        self._pending = b""

    def read(self) -> list[bytes]:
        if self._fd is None:
            self._fd = run_folder.open_executor_stream(self.run_dir)
            if self._fd is None:
                return []
            os.lseek(self._fd, self.offset, os.SEEK_SET)
            self._opened = time.monotonic()
        chunks = []
        while chunk := os.read(self._fd, 1 << 20):
            chunks.append(chunk)
        if not chunks:
            if time.monotonic() - self._opened > REOPEN_S:
                self.close()
            return []
        data = b"".join(chunks)
        self.offset += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        return [line for line in lines if line]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class _Resume:
    """How much of the stream a previous daemon already relayed (re-attach): that many
    event lines (in ``events.jsonl``) and log lines (in ``logs.txt``) are skipped."""

    events: int = 0
    log_lines: int = 0

    def skip(self, tag: bytes, payload: bytes) -> bool:
        event = log_line = False
        if tag == layout.TAG_STDERR:
            try:
                event = parse_line(payload) is not None
            except InvalidEventLine:
                event = log_line = True  # an invalid line is an event and a log line
            else:
                log_line = not event
        else:
            log_line = True
        if (event and self.events <= 0) or (log_line and self.log_lines <= 0):
            self.events = self.log_lines = 0  # past the relayed part: skip nothing more
            return False
        self.events -= event
        self.log_lines -= log_line
        return True


class RayTrainerHandle:
    """One run's Ray job, as the supervisor sees a trainer (``TrainerHandle``)."""

    outlives_daemon = True

    def __init__(self, client: RayJobsClient, run_dir: Path, record: HandleRecord) -> None:
        self._client = client
        self._run_dir = run_dir
        self._record = record
        self._follower = OutputFollower(run_dir)
        self._resume = _Resume()
        self._control: dict[str, Any] = {}
        self._job: JobInfo | None = None
        self._exit: dict[str, Any] | None = None
        self._ended = asyncio.Event()
        self._exit_code: int | None = None
        self._spawned = False
        self._killed_reported = False
        self._cancel_asked = False
        self._pending_check_due = False  # right after a cancel: is the job still pending?
        self._kill_asked_at: float | None = None
        self._stop_sent = False
        self._lines: asyncio.Queue[tuple[Stream, bytes] | None] = asyncio.Queue()
        self._follower_task: asyncio.Future[None] | None = None
        self.start_failure = ""

    # ------------------------------------------------------------------ TrainerHandle

    @property
    def pid(self) -> int | None:
        return None  # the trainer's pid is on a cluster node, not here

    @property
    def record(self) -> HandleRecord:
        return self._record

    @property
    def started(self) -> bool:
        """Whether the trainer was started on the cluster (as far as the stream tells)."""
        return self._spawned

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        self._ensure_following()
        while True:
            item = await self._lines.get()
            if item is None:
                return
            yield item

    def _ensure_following(self) -> None:
        if self._follower_task is None:
            self._follower_task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        """Read the stream and watch the job until the run ends; lines go to ``output``
        (a queue, so that a slow or failed reader never stops ``wait``)."""
        try:
            await self._follow_until_end()
        except Exception as exc:
            log.exception("ray_follow_failed", job_id=self._record.job_id)
            if not self._ended.is_set():
                self._end(None, f"internal error while following the Ray job: {exc}")
        finally:
            self._follower.close()
            self._lines.put_nowait(None)

    async def _follow_until_end(self) -> None:
        next_status = 0.0
        ended_at: float | None = None
        while True:
            for line in self._follower.read():
                item = self._take(line)
                if item is not None:
                    self._lines.put_nowait(item)
            if self._ended.is_set():
                return
            if self._exit is None:
                self._exit = run_folder.read_executor_document(self._run_dir, layout.EXIT_FILE)
                if self._exit is not None:
                    continue  # one more read: the stream is complete before exit.json
            if self._exit is not None:
                self._finish_from_exit(self._exit)
                return
            now = time.monotonic()
            backstop_due = self._kill_asked_at is not None and (
                now - self._kill_asked_at >= KILL_BACKSTOP_S
            )
            if backstop_due and not self._stop_sent:
                await self._stop_job()
            if now >= next_status or self._pending_check_due:
                self._pending_check_due = False
                next_status = now + STATUS_S
                reachable, job = await self._poll_job()
                if not reachable:
                    await asyncio.sleep(FOLLOW_S)
                    continue
                if job is not None and job.status is JobStatus.PENDING and self._cancel_asked:
                    # Cancelled while waiting for resources: it never trains.
                    await self._stop_job()
                    self._end(None, "cancelled while pending on the cluster")
                    return
                if job is None or job.status.terminal:
                    ended_at = ended_at or now
                    if job is None or now - ended_at >= EXIT_FILE_SETTLE_S:
                        await self._ended_without_exit(job)
                        return
            await asyncio.sleep(FOLLOW_S)

    def refresh(self) -> bool:
        return False  # the tree lives on the cluster; the entrypoint tracks it

    def signal_trainer(self) -> bool:
        self._cancel_asked = self._pending_check_due = True
        self._write_control(cancel={"requested_at": time.time()})
        return True

    def kill_tree(self) -> int:
        if self._ended.is_set():
            return 0  # the entrypoint killed what the trainer left when it exited
        self._cancel_asked = self._pending_check_due = True
        self._write_control(kill=True)
        if self._kill_asked_at is None:
            self._kill_asked_at = time.monotonic()
        return 1

    def keep_deadline(self, deadline: float) -> None:
        # The entrypoint kills at this deadline by itself when no daemon asks it to.
        cancel = dict(self._control.get("cancel") or {"requested_at": time.time()})
        cancel["deadline"] = deadline
        self._cancel_asked = True
        self._write_control(cancel=cancel)

    @property
    def kept_deadline(self) -> float | None:
        cancel = self._control.get("cancel")
        deadline = cancel.get("deadline") if isinstance(cancel, dict) else None
        return float(deadline) if isinstance(deadline, (int, float)) else None

    def is_alive(self) -> bool:
        return not self._ended.is_set()

    async def wait(self) -> int | None:
        self._ensure_following()
        await self._ended.wait()
        return self._exit_code

    async def close(self) -> None:
        if self._follower_task is not None and not self._follower_task.done():
            self._follower_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower_task

    # ------------------------------------------------------------------ the stream

    def _take(self, line: bytes) -> tuple[Stream, bytes] | None:
        tag, payload = line[:1], line[1:]
        if tag == layout.TAG_RECORD:
            self._apply_record(payload)
            return None
        stream = _STREAMS.get(tag)
        if stream is None or self._resume.skip(tag, payload):
            return None
        return stream, payload

    def _apply_record(self, payload: bytes) -> None:
        try:
            record = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(record, dict):
            return
        kind = record.get("record")
        if kind == "spawned":
            self._spawned = True
            log.info("ray_trainer_spawned", job_id=self._record.job_id, host=record.get("host"))
        elif kind == "killed":
            self._killed_reported = True
        elif kind == "spawn_failed":
            self.start_failure = (
                f"could not start the trainer on the cluster: {record.get('error')}"
            )

    def _finish_from_exit(self, document: dict[str, Any]) -> None:
        code = document.get("exit_code")
        self._spawned = self._spawned or not document.get("spawn_error")
        if document.get("spawn_error"):
            self.start_failure = (
                f"could not start the trainer on the cluster: {document['spawn_error']}"
            )
        self._end(code if isinstance(code, int) else None, self.start_failure)

    def _end(self, exit_code: int | None, failure: str) -> None:
        self._exit_code = exit_code
        self.start_failure = failure
        self._ended.set()

    async def _ended_without_exit(self, job: JobInfo | None) -> None:
        """The job ended and the entrypoint left no exit.json: it never ran (runtime
        environment, workspace not shared, stopped while pending) or it died."""
        if job is None:
            self._end(None, f"the Ray cluster no longer knows job {self._record.job_id}")
            return
        not_shared = job.driver_exit_code == layout.EXIT_NOT_SHARED
        if not not_shared and job.status is JobStatus.FAILED:
            with contextlib.suppress(RayJobsError):
                logs = await asyncio.to_thread(self._client.logs, self._record.job_id)
                not_shared = layout.NOT_SHARED_KEY in logs
        if not_shared:
            message = (
                f"WORKSPACE_NOT_SHARED: the Ray cluster at {self._client.address} cannot see "
                f"this run's folder at {self._run_dir}; the workspace must be on a shared "
                "filesystem at the same path on every node"
            )
        elif self._spawned and self._stop_sent:
            # Ray's stop_job ended it (the backstop of a kill request): killed by SIGKILL.
            self._end(-signal.SIGKILL, "")
            return
        elif self._spawned:
            message = (
                f"the Ray job ended ({job.status.value}: {job.message}) while the trainer "
                "ran, and left no exit status"
            )
        else:
            message = f"the Ray job ended before the trainer started ({job.status.value}): "
            message += job.message
        self._end(None, message)

    # ------------------------------------------------------------------ the cluster

    async def _poll_job(self) -> tuple[bool, JobInfo | None]:
        """(reachable, the job's status or None if the cluster does not know it). While
        the cluster cannot be reached the run goes on: it belongs to the cluster now, and
        its folder keeps what it does."""
        try:
            self._job = await asyncio.to_thread(self._client.info, self._record.job_id)
        except RayJobsError as exc:
            log.warning("ray_status_unavailable", job_id=self._record.job_id, error=str(exc))
            return False, self._job
        return True, self._job

    async def _stop_job(self) -> None:
        self._stop_sent = True
        try:
            await asyncio.to_thread(self._client.stop, self._record.job_id)
        except RayJobsError as exc:
            log.warning("ray_stop_failed", job_id=self._record.job_id, error=str(exc))

    def _write_control(self, **update: Any) -> None:
        self._control.update(update)
        try:
            run_folder.write_executor_document(
                self._run_dir, layout.CONTROL_FILE, _json.encode(self._control) + b"\n"
            )
        except OSError as exc:
            log.error("ray_control_write_failed", job_id=self._record.job_id, error=str(exc))


class RayExecutor:
    """Runs on Ray clusters, one Job API client per dashboard address."""

    name = "ray"

    def __init__(self) -> None:
        self._clients: dict[str, RayJobsClient] = {}

    def client(self, address: str) -> RayJobsClient:
        if address not in self._clients:
            self._clients[address] = RayJobsClient(address)
        return self._clients[address]

    async def check_reachable(self, address: str, workspace: str) -> None:
        """Raise CLUSTER_UNREACHABLE unless the cluster's Job API answers."""
        try:
            await asyncio.to_thread(self.client(address).version)
        except RayJobsError as exc:
            raise cluster_error(exc, workspace) from exc

    async def start(self, spec: TrainerSpec) -> RayTrainerHandle:
        placement = spec.placement
        if placement is None:
            raise ValueError("a Ray run needs its placement")
        client = self.client(placement.address)
        run_dir = spec.cwd / layout.relative_run_dir(spec.run_id)
        nonce = secrets.token_hex(16)
        document = {
            "run_id": spec.run_id,
            "nonce": nonce,
            "argv": spec.argv,
            "cwd": str(spec.cwd),
            "env": dict(spec.env),
            "python": placement.python_set,
            "grace_s": placement.grace_s,
            "trainer_packages": [p.name for p in shipped_packages()[1:]],
        }
        run_folder.write_executor_document(
            run_dir, layout.SPEC_FILE, _json.encode(document) + b"\n"
        )
        entrypoint = shlex.join(
            [ENTRYPOINT_PYTHON, "-u", "-m", "runforge_rayjob", "--run-dir", str(run_dir)]
        )
        entrypoint += f" --nonce {nonce}"
        try:
            await asyncio.to_thread(self._submit, client, spec, entrypoint, placement.resources)
        except RayJobsError as exc:
            raise cluster_error(exc, str(spec.cwd)) from exc
        record = HandleRecord(
            executor=self.name,
            job_id=spec.run_id,
            address=client.address,
            job_run_dir=str(run_dir),
        )
        log.info("ray_job_submitted", job_id=spec.run_id, address=client.address)
        return RayTrainerHandle(client, run_dir, record)

    def _submit(
        self,
        client: RayJobsClient,
        spec: TrainerSpec,
        entrypoint: str,
        resources: Mapping[str, float],
    ) -> None:
        uris = [client.upload_package(*package_archive(p)) for p in shipped_packages()]
        try:
            client.submit(
                submission_id=spec.run_id,
                entrypoint=entrypoint,
                runtime_env={"py_modules": uris},
                metadata={METADATA_RUN_ID: spec.run_id, METADATA_WORKSPACE: str(spec.cwd)},
                **split_resources(resources),
            )
        except RayJobsError as exc:
            # The answer may have been lost after the cluster took the job: the run id
            # names it, so ask before calling the run failed.
            if not exc.unreachable or client.info(spec.run_id) is None:
                raise

    def reattach(self, record: HandleRecord) -> RayTrainerHandle | None:
        """The job a previous daemon submitted; its output resumes after what that daemon
        relayed (counted from ``events.jsonl`` and ``logs.txt``)."""
        if not record.job_id or not record.address or not record.job_run_dir:
            return None
        run_dir = Path(record.job_run_dir)
        handle = RayTrainerHandle(self.client(record.address), run_dir, record)
        handle._resume = _Resume(
            events=run_folder.count_events(run_dir, _RELAYED_TYPES),
            log_lines=run_folder.count_log_lines(run_dir),
        )
        control = run_folder.read_executor_document(run_dir, layout.CONTROL_FILE)
        if control is not None:
            handle._control = control  # a cancel asked before the restart, and its deadline
        return handle


# Events a daemon published from the trainer's stream (what a re-attached handle skips).
_RELAYED_TYPES = (*sorted(te.ALL_EVENTS), INVALID_EVENT_LINE)
