"""The interpreter version check, the GPU probe and the device choice, with real
interpreters, a fake torch package and a fake nvidia-smi."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.trust import TrustedWorkspace, TrustStore
from runforged.workspace_python import (
    GPU_FREE_MIB_REQUIRED,
    GpuDevice,
    GpuProbe,
    InterpreterProbes,
    choose_device,
)
from tests.settings_trust.conftest import write_executable

FAKE_TORCH = """
class _Cuda:
    def is_available(self): return True
    def device_count(self): return 1
    def get_device_name(self, index): return "Fake GPU 8GB"
    def mem_get_info(self, index): return (3 * 1024**3, 8 * 1024**3)
cuda = _Cuda()
"""


@pytest.fixture
def trusted(store: TrustStore, workspace: Path) -> TrustedWorkspace:
    store.trust(str(workspace))
    return store.require(str(workspace))


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    return folder


def refused(coroutine: Coroutine[Any, Any, object]) -> RunforgeError:
    with pytest.raises(RunforgeError) as caught:
        asyncio.run(coroutine)
    return caught.value


# --- interpreter check ---------------------------------------------------------------------


def test_a_real_interpreter_reports_its_version(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    info = asyncio.run(
        InterpreterProbes().check_interpreter(trusted, sys.executable, env=child_env)
    )
    assert info.python_path == sys.executable
    assert info.executable == sys.executable
    assert info.resolved_executable == os.path.realpath(sys.executable)
    assert info.version == platform.python_version()
    assert info.implementation == platform.python_implementation().lower()


def test_a_bare_interpreter_name_is_found_on_the_child_path(
    trusted: TrustedWorkspace, child_env: dict[str, str], bin_dir: Path
) -> None:
    (bin_dir / "mypython").symlink_to(sys.executable)
    env = {**child_env, "PATH": str(bin_dir)}
    info = asyncio.run(InterpreterProbes().check_interpreter(trusted, "mypython", env=env))
    assert info.executable == str(bin_dir / "mypython")
    assert info.version == platform.python_version()


def test_the_version_is_cached_until_the_interpreter_changes(
    trusted: TrustedWorkspace,
    child_env: dict[str, str],
    marker_interpreter: Callable[[], tuple[Path, Path]],
) -> None:
    python, marker = marker_interpreter()
    probes = InterpreterProbes()

    async def check_twice() -> None:
        await probes.check_interpreter(trusted, str(python), env=child_env)
        await probes.check_interpreter(trusted, str(python), env=child_env)

    asyncio.run(check_twice())
    assert len(marker.read_text().splitlines()) == 1
    stat = python.stat()
    os.utime(python, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    asyncio.run(check_twice())
    assert len(marker.read_text().splitlines()) == 2


def test_the_child_gets_exactly_the_environment_it_is_given(
    trusted: TrustedWorkspace,
    child_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_VARIABLE", "leaked")
    dump = tmp_path / "env.txt"
    python = write_executable(
        tmp_path / "python-dumping-env",
        f"""
        #!/bin/sh
        env > '{dump}'
        exec '{sys.executable}' "$@"
        """,
    )
    asyncio.run(InterpreterProbes().check_interpreter(trusted, str(python), env=child_env))
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "DAEMON_ONLY_VARIABLE" not in seen
    assert seen["PYTHONPATH"] == child_env["PYTHONPATH"]


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("#!/bin/sh\necho hello\n", "did not answer the version check like a Python"),
        ("#!/bin/sh\necho 'boom: not here' >&2\nexit 3\n", "is not a working Python: boom"),
    ],
)
def test_a_program_that_is_not_python_is_not_found(
    trusted: TrustedWorkspace, child_env: dict[str, str], tmp_path: Path, script: str, why: str
) -> None:
    program = write_executable(tmp_path / "not-python", script)
    error = refused(InterpreterProbes().check_interpreter(trusted, str(program), env=child_env))
    assert error.code == ErrorCode.INTERPRETER_NOT_FOUND
    assert str(program) in error.message
    assert why in error.message
    assert error.details == {"interpreter": str(program)}


def test_a_missing_or_non_executable_interpreter_is_not_found(
    trusted: TrustedWorkspace, child_env: dict[str, str], tmp_path: Path
) -> None:
    plain = tmp_path / "python-without-x-bit"
    plain.write_text("#!/bin/sh\n")
    for path, why in [
        (str(tmp_path / "missing" / "python"), "does not exist"),
        (str(plain), "is not executable"),
        ("no-such-python-anywhere", "was not found on PATH"),
    ]:
        error = refused(InterpreterProbes().check_interpreter(trusted, path, env=child_env))
        assert error.code == ErrorCode.INTERPRETER_NOT_FOUND
        assert f"{path} {why}" in error.message


def test_an_old_python_is_unsupported_naming_its_version(
    trusted: TrustedWorkspace, child_env: dict[str, str], tmp_path: Path
) -> None:
    old = write_executable(
        tmp_path / "python3.8",
        """
        #!/bin/sh
        echo '{"version": "3.8.10", "version_info": [3, 8, 10], "implementation": "cpython"}'
        """,
    )
    error = refused(InterpreterProbes().check_interpreter(trusted, str(old), env=child_env))
    assert error.code == ErrorCode.INTERPRETER_UNSUPPORTED
    assert f"{old} is Python 3.8.10" in error.message
    assert error.details == {"interpreter": str(old), "version": "3.8.10"}


def test_an_interpreter_that_hangs_is_killed_with_everything_it_started(
    trusted: TrustedWorkspace, child_env: dict[str, str], tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    hanging = write_executable(
        tmp_path / "python-hangs",
        f"""
        #!/bin/sh
        sleep 300 &
        echo $$ $! > '{pids}'
        wait
        """,
    )
    probes = InterpreterProbes(version_timeout_s=1.0)
    error = refused(probes.check_interpreter(trusted, str(hanging), env=child_env))
    assert error.code == ErrorCode.INTERPRETER_NOT_FOUND
    assert "did not report its version within 1 s" in error.message
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# --- GPU probe -----------------------------------------------------------------------------


def test_without_torch_or_nvidia_smi_the_probe_finds_no_gpu_and_says_why(
    trusted: TrustedWorkspace, child_env: dict[str, str], bin_dir: Path
) -> None:
    env = {**child_env, "PATH": str(bin_dir)}
    probe = asyncio.run(InterpreterProbes().probe_gpu(trusted, sys.executable, env=env))
    assert probe.source == "none"
    assert probe.devices == []
    assert probe.notes == [
        f"torch is not installed for {sys.executable}",
        "nvidia-smi was not found on PATH",
    ]


def test_torch_is_asked_first(
    trusted: TrustedWorkspace, child_env: dict[str, str], tmp_path: Path
) -> None:
    package = tmp_path / "fake-torch" / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(FAKE_TORCH))
    env = {**child_env, "PYTHONPATH": str(package.parent)}
    probe = asyncio.run(InterpreterProbes().probe_gpu(trusted, sys.executable, env=env))
    assert probe.source == "torch"
    assert probe.devices == [GpuDevice(index=0, name="Fake GPU 8GB", free_mib=3072, total_mib=8192)]


def test_nvidia_smi_answers_when_torch_cannot(
    trusted: TrustedWorkspace, child_env: dict[str, str], bin_dir: Path
) -> None:
    write_executable(
        bin_dir / "nvidia-smi",
        """
        #!/bin/sh
        echo "NVIDIA A100-SXM4-40GB, 39000, 40536"
        echo "Tesla T4, rev 2, 100, 15360"
        """,
    )
    env = {**child_env, "PATH": str(bin_dir)}
    probe = asyncio.run(InterpreterProbes().probe_gpu(trusted, sys.executable, env=env))
    assert probe.source == "nvidia-smi"
    assert probe.devices == [
        GpuDevice(index=0, name="NVIDIA A100-SXM4-40GB", free_mib=39000, total_mib=40536),
        GpuDevice(index=1, name="Tesla T4, rev 2", free_mib=100, total_mib=15360),
    ]
    assert probe.notes == [f"torch is not installed for {sys.executable}"]


def test_the_gpu_probe_is_cached_per_interpreter_for_a_while(
    trusted: TrustedWorkspace,
    child_env: dict[str, str],
    marker_interpreter: Callable[[], tuple[Path, Path]],
) -> None:
    python, marker = marker_interpreter()
    now = [1000.0]
    probes = InterpreterProbes(gpu_cache_s=60.0, clock=lambda: now[0])

    async def probe() -> GpuProbe:
        return await probes.probe_gpu(trusted, str(python), env=child_env)

    first = asyncio.run(probe())
    now[0] += 59
    assert asyncio.run(probe()) == first
    assert len(marker.read_text().splitlines()) == 1
    now[0] += 2
    asyncio.run(probe())
    assert len(marker.read_text().splitlines()) == 2


# --- device choice -------------------------------------------------------------------------


def gpu(free_mib: int) -> GpuProbe:
    device = GpuDevice(index=0, name="GPU", free_mib=free_mib, total_mib=16384)
    return GpuProbe(interpreter="/py", source="torch", devices=[device])


NO_GPU = GpuProbe(interpreter="/py", source="none", notes=["torch is not installed for /py"])


@pytest.mark.parametrize(
    ("requested", "preset", "probe", "device"),
    [
        ("auto", "std-train", gpu(GPU_FREE_MIB_REQUIRED["std-train"]), "cuda"),
        ("auto", "std-train", gpu(GPU_FREE_MIB_REQUIRED["std-train"] - 1), "cpu"),
        ("auto", "hq-train", gpu(3000), "cpu"),
        ("auto", "hq-train", gpu(4096), "cuda"),
        ("auto", "std-train", NO_GPU, "cpu"),
        ("cpu", "std-train", gpu(40000), "cpu"),
        ("cuda", "hq-train", gpu(100), "cuda"),
    ],
)
def test_the_device_follows_the_setting_and_the_free_gpu_memory(
    requested: str, preset: str, probe: GpuProbe, device: str
) -> None:
    choice = choose_device(requested, preset, probe)
    assert (choice.requested, choice.device) == (requested, device)
    assert choice.reason


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(RunforgeError) as caught:
        choose_device("cuda", "std-train", NO_GPU)
    assert caught.value.code == ErrorCode.SETTINGS_INVALID
    assert "no GPU is available (torch is not installed for /py)" in caught.value.message
    assert caught.value.remediation == 'set runforge.device to "auto" or "cpu"'
