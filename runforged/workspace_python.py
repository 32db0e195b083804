"""The workspace's Python: whether its interpreter can run a trainer (the version check),
which GPU it sees (the probe), and which device a run uses (the choice). It also hosts
the one way the daemon runs anything short-lived in a workspace, the trust-gated spawn.

Every spawn here goes through :func:`run_in_workspace`, which takes a
:class:`~runforged.trust.TrustedWorkspace`, re-checks trust, runs the child in its own
process group with the workspace as working directory, and kills the whole group on
timeout or cancellation, so no process outlives the call.

``env`` is always the child's complete environment: the daemon builds it (PATH, and
PYTHONPATH pointing at a directory that holds only ``runforge_runner``), and nothing of
the daemon's own environment, such as its site-packages, leaks in unasked.

GPU thresholds for ``device=auto`` (free memory on the best device):
``std-train`` needs 2 GiB, ``hq-train`` 4 GiB; below that the run uses the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from runforge_protocol.errors import ErrorCode
from runforge_protocol.payloads import DeviceChoice, GpuDevice, GpuProbe, InterpreterInfo
from runforged.errors import RunforgeError
from runforged.trust import TrustedWorkspace

log = structlog.get_logger(__name__)

MINIMUM_PYTHON = (3, 10)
GPU_FREE_MIB_REQUIRED: dict[str, int] = {"std-train": 2048, "hq-train": 4096}

# Both scripts must run on any Python old enough to be rejected (so they can report its
# version) and must not import from the workspace: `-c` puts the working directory first
# on sys.path, where a stray json.py or torch/ would shadow the real one.
_VERSION_SCRIPT = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import json, platform
sys.stdout.write(json.dumps({
    "version": platform.python_version(),
    "version_info": list(sys.version_info[:3]),
    "implementation": platform.python_implementation().lower(),
}))
"""

_TORCH_SCRIPT = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import json
try:
    import torch
except ImportError:
    sys.stdout.write(json.dumps({"torch": False, "devices": []}))
    sys.exit(0)
devices = []
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append({
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "free_mib": free // 1048576,
            "total_mib": total // 1048576,
        })
sys.stdout.write(json.dumps({"torch": True, "devices": devices}))
"""

_NVIDIA_SMI_ARGS = ("--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits")


@dataclass(frozen=True)
class SpawnOutput:
    """What a finished child left behind; ``timed_out`` children were killed."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    def last_error_line(self) -> str:
        """The child's one-line error: the last non-empty stderr line (the exception line
        of a traceback), or its exit status when it printed nothing."""
        for line in reversed(self.stderr.decode("utf-8", "replace").splitlines()):
            if line.strip():
                return line.strip()[:500]
        return f"exited with status {self.returncode}"


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # ProcessLookupError: the child and everything it started are gone already.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_in_workspace(
    workspace: TrustedWorkspace,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
) -> SpawnOutput:
    """Run ``argv`` with cwd = the workspace and collect its output. Raises
    ``WORKSPACE_NOT_TRUSTED`` (nothing started) if trust was withdrawn, and ``OSError`` if
    the executable cannot be started."""
    workspace.recheck()
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workspace.path,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so one killpg reaches its children
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except asyncio.TimeoutError:
        log.warning("spawn_timed_out", executable=argv[0], timeout_s=timeout_s)
        return SpawnOutput(returncode=None, stdout=b"", stderr=b"", timed_out=True)
    finally:
        # Also reaps grandchildren that outlived a child which exited normally.
        _kill_group(process)
        await process.wait()
    return SpawnOutput(returncode=process.returncode, stdout=stdout, stderr=stderr)


def interpreter_not_found(interpreter: str, why: str) -> RunforgeError:
    return RunforgeError(
        ErrorCode.INTERPRETER_NOT_FOUND,
        f"the Python interpreter {interpreter} {why}",
        remediation="set runforge.pythonPath to a Python 3.10+ interpreter",
        details={"interpreter": interpreter},
    )


def locate_interpreter(
    python_path: str, workspace: TrustedWorkspace, env: Mapping[str, str]
) -> Path:
    """The absolute interpreter ``python_path`` names: a bare name is looked up on the
    child's PATH, a relative path is workspace-relative. Symlinks are kept: a virtualenv's
    ``bin/python`` is a symlink whose target would not see the virtualenv."""
    if os.sep not in python_path:
        found = shutil.which(python_path, path=env.get("PATH", os.defpath))
        if found is None:
            raise interpreter_not_found(python_path, "was not found on PATH")
        return workspace.path / found  # PATH may hold relative entries; cwd is the workspace
    candidate = workspace.path / python_path
    if not candidate.is_file():
        raise interpreter_not_found(str(candidate), "does not exist")
    if not os.access(candidate, os.X_OK):
        raise interpreter_not_found(str(candidate), "is not executable")
    return candidate


def _cache_key(executable: Path) -> tuple[str, int]:
    """Identifies an interpreter binary: replacing or upgrading it changes the key."""
    real = os.path.realpath(executable)
    return real, os.stat(real).st_mtime_ns


@dataclass(frozen=True)
class _ReportedVersion:
    version: str
    version_info: tuple[int, ...]
    implementation: str


class InterpreterProbes:
    """The version check and GPU probe with their caches; one instance per daemon.

    Versions are cached per (resolved interpreter, mtime), which only change when the
    binary does. GPU results are cached per interpreter for ``gpu_cache_s`` because free
    memory changes as other programs use the GPU.
    """

    def __init__(
        self,
        *,
        version_timeout_s: float = 10.0,
        torch_timeout_s: float = 8.0,
        nvidia_smi_timeout_s: float = 5.0,
        gpu_cache_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.version_timeout_s = version_timeout_s
        self.torch_timeout_s = torch_timeout_s
        self.nvidia_smi_timeout_s = nvidia_smi_timeout_s
        self.gpu_cache_s = gpu_cache_s
        self.clock = clock
        self._versions: dict[tuple[str, int], _ReportedVersion] = {}
        self._gpus: dict[tuple[str, int], tuple[float, GpuProbe]] = {}

    async def check_interpreter(
        self, workspace: TrustedWorkspace, python_path: str, *, env: Mapping[str, str]
    ) -> InterpreterInfo:
        """Run ``<python_path> -c <version script>`` and accept Python >= 3.10.

        Raises ``INTERPRETER_NOT_FOUND`` (missing, not executable, not a Python, no answer
        in time) or ``INTERPRETER_UNSUPPORTED`` naming the interpreter and its version.
        """
        workspace.recheck()
        executable = locate_interpreter(python_path, workspace, env)
        key = _cache_key(executable)
        reported = self._versions.get(key)
        if reported is None:
            reported = await self._ask_version(workspace, executable, env)
            self._versions[key] = reported
        if reported.version_info < MINIMUM_PYTHON:
            needed = ".".join(map(str, MINIMUM_PYTHON))
            raise RunforgeError(
                ErrorCode.INTERPRETER_UNSUPPORTED,
                f"the Python interpreter {executable} is Python {reported.version};"
                f" RunForge needs Python {needed} or newer",
                remediation=f"set runforge.pythonPath to a Python {needed}+ interpreter",
                details={"interpreter": str(executable), "version": reported.version},
            )
        return InterpreterInfo(
            python_path=python_path,
            executable=str(executable),
            resolved_executable=key[0],
            version=reported.version,
            implementation=reported.implementation,
        )

    async def _ask_version(
        self, workspace: TrustedWorkspace, executable: Path, env: Mapping[str, str]
    ) -> _ReportedVersion:
        interpreter = str(executable)
        try:
            output = await run_in_workspace(
                workspace,
                [interpreter, "-c", _VERSION_SCRIPT],
                env=env,
                timeout_s=self.version_timeout_s,
            )
        except OSError as exc:
            raise interpreter_not_found(interpreter, f"could not be started: {exc}") from exc
        if output.timed_out:
            raise interpreter_not_found(
                interpreter, f"did not report its version within {self.version_timeout_s:g} s"
            )
        if output.returncode != 0:
            raise interpreter_not_found(
                interpreter, f"is not a working Python: {output.last_error_line()}"
            )
        try:
            answer = json.loads(output.stdout)
            reported = _ReportedVersion(
                version=str(answer["version"]),
                version_info=tuple(int(part) for part in answer["version_info"]),
                implementation=str(answer["implementation"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise interpreter_not_found(
                interpreter, "did not answer the version check like a Python interpreter"
            ) from exc
        log.info("interpreter_checked", interpreter=interpreter, version=reported.version)
        return reported

    async def probe_gpu(
        self, workspace: TrustedWorkspace, python_path: str, *, env: Mapping[str, str]
    ) -> GpuProbe:
        """GPUs visible to ``python_path``: torch first, then ``nvidia-smi``, then none.
        Never raises for a missing GPU or tool; the reasons end up in ``notes``."""
        workspace.recheck()
        executable = locate_interpreter(python_path, workspace, env)
        key = _cache_key(executable)
        cached = self._gpus.get(key)
        if cached is not None and self.clock() - cached[0] < self.gpu_cache_s:
            return cached[1]
        probe = await self._probe_with_torch(workspace, executable, env)
        if not probe.devices:
            probe = await self._probe_with_nvidia_smi(workspace, probe, env)
        self._gpus[key] = (self.clock(), probe)
        log.info(
            "gpu_probed",
            interpreter=str(executable),
            source=probe.source,
            devices=len(probe.devices),
        )
        return probe

    async def _probe_with_torch(
        self, workspace: TrustedWorkspace, executable: Path, env: Mapping[str, str]
    ) -> GpuProbe:
        interpreter = str(executable)
        none = GpuProbe(interpreter=interpreter, source="none")
        try:
            output = await run_in_workspace(
                workspace,
                [interpreter, "-c", _TORCH_SCRIPT],
                env=env,
                timeout_s=self.torch_timeout_s,
            )
        except OSError as exc:
            none.notes.append(f"{interpreter} could not be started: {exc}")
            return none
        if output.timed_out:
            none.notes.append(f"torch did not answer within {self.torch_timeout_s:g} s")
            return none
        if output.returncode != 0:
            none.notes.append(f"the torch probe failed: {output.last_error_line()}")
            return none
        try:
            answer = json.loads(output.stdout)
            if not answer["torch"]:
                none.notes.append(f"torch is not installed for {interpreter}")
                return none
            devices = msgspec.convert(answer["devices"], list[GpuDevice])
        except (ValueError, KeyError, TypeError, msgspec.ValidationError):
            none.notes.append("the torch probe printed an unexpected answer")
            return none
        if not devices:
            none.notes.append("torch reports no usable CUDA device")
            return none
        return GpuProbe(interpreter=interpreter, source="torch", devices=devices)

    async def _probe_with_nvidia_smi(
        self, workspace: TrustedWorkspace, earlier: GpuProbe, env: Mapping[str, str]
    ) -> GpuProbe:
        notes = list(earlier.notes)
        none = GpuProbe(interpreter=earlier.interpreter, source="none", notes=notes)
        tool = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
        if tool is None:
            notes.append("nvidia-smi was not found on PATH")
            return none
        try:
            output = await run_in_workspace(
                workspace, [tool, *_NVIDIA_SMI_ARGS], env=env, timeout_s=self.nvidia_smi_timeout_s
            )
        except OSError as exc:
            notes.append(f"nvidia-smi could not be started: {exc}")
            return none
        if output.timed_out or output.returncode != 0:
            why = "timed out" if output.timed_out else output.last_error_line()
            notes.append(f"nvidia-smi failed: {why}")
            return none
        devices: list[GpuDevice] = []
        for index, line in enumerate(output.stdout.decode("utf-8", "replace").splitlines()):
            # The name may itself contain commas; the two numbers are always last.
            name, _, numbers = line.strip().rpartition(",")
            name, _, free = name.rpartition(",")
            try:
                devices.append(
                    GpuDevice(
                        index=index, name=name.strip(), free_mib=int(free), total_mib=int(numbers)
                    )
                )
            except ValueError:
                notes.append(f"nvidia-smi printed an unexpected line: {line.strip()!r}")
        if not devices:
            notes.append("nvidia-smi lists no GPU")
            return none
        return GpuProbe(
            interpreter=earlier.interpreter, source="nvidia-smi", devices=devices, notes=notes
        )


def choose_device(requested: str, preset: str, gpu: GpuProbe) -> DeviceChoice:
    """The runner's ``--device``: ``auto`` picks cuda only when some GPU has the free memory
    the preset needs; ``cuda`` with no GPU at all is an error; ``cpu`` is cpu."""
    if requested == "cpu":
        return DeviceChoice(requested=requested, device="cpu", reason="device is set to cpu")
    best = max(gpu.devices, key=lambda device: device.free_mib, default=None)
    if requested == "cuda":
        if best is None:
            found = "; ".join(gpu.notes) or "no GPU found"
            raise RunforgeError(
                ErrorCode.SETTINGS_INVALID,
                f"device is set to cuda but no GPU is available ({found})",
                remediation='set runforge.device to "auto" or "cpu"',
                details={"key": "device", "value": requested, "probe": msgspec.to_builtins(gpu)},
            )
        return DeviceChoice(requested=requested, device="cuda", reason="device is set to cuda")
    needed = GPU_FREE_MIB_REQUIRED[preset]
    if best is None:
        return DeviceChoice(requested=requested, device="cpu", reason="no GPU found")
    if best.free_mib < needed:
        return DeviceChoice(
            requested=requested,
            device="cpu",
            reason=f"the best GPU ({best.name}) has {best.free_mib} MiB free;"
            f" {preset} needs {needed} MiB",
        )
    return DeviceChoice(
        requested=requested,
        device="cuda",
        reason=f"{best.name} has {best.free_mib} MiB free ({preset} needs {needed} MiB)",
    )
