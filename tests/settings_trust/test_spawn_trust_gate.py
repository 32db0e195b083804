"""Every one of the four non-training Python spawns checks trust first: an untrusted
workspace gets WORKSPACE_NOT_TRUSTED and no process is started.

Each spawn runs an interpreter that writes a marker file before doing anything else, so
"no process" is observed, and the trusted cases prove the marker would have appeared.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.inspection import inspect_artifact, inspect_dataset
from runforged.trust import TrustedWorkspace, TrustStore
from runforged.workspace_python import InterpreterProbes
from tests.contracts import IRIS_SAMPLE
from tests.settings_trust.conftest import FAKE_RUNNER

SPAWNS = ["interpreter check", "gpu probe", "dataset inspect", "artifact inspect"]


async def spawn(kind: str, trusted: TrustedWorkspace, python: Path, env: dict[str, str]) -> None:
    if kind == "interpreter check":
        await InterpreterProbes().check_interpreter(trusted, str(python), env=env)
    elif kind == "gpu probe":
        await InterpreterProbes().probe_gpu(trusted, str(python), env=env)
    elif kind == "dataset inspect":
        await inspect_dataset(
            trusted,
            python_path=str(python),
            runner_module=FAKE_RUNNER,
            dataset="data/iris.csv",
            env=env,
        )
    else:
        await inspect_artifact(
            trusted,
            python_path=str(python),
            runner_module=FAKE_RUNNER,
            artifact="models/model.pkl",
            env=env,
        )


def handle_request(
    store: TrustStore, workspace: Path, kind: str, python: Path, env: dict[str, str]
) -> None:
    """What a request handler does: obtain the trusted workspace, then spawn."""
    trusted = store.require(str(workspace))
    asyncio.run(spawn(kind, trusted, python, env))


def populate(workspace: Path) -> None:
    (workspace / "data").mkdir(exist_ok=True)
    shutil.copy(IRIS_SAMPLE, workspace / "data" / "iris.csv")
    (workspace / "models").mkdir(exist_ok=True)
    (workspace / "models" / "model.pkl").write_bytes(b"not really a pickle")


def assert_refused(
    call: Callable[[], None], code: ErrorCode = ErrorCode.WORKSPACE_NOT_TRUSTED
) -> None:
    with pytest.raises(RunforgeError) as caught:
        call()
    assert caught.value.code == code


@pytest.mark.parametrize("kind", SPAWNS)
def test_a_trusted_workspace_runs_the_spawn_in_the_workspace(
    kind: str,
    store: TrustStore,
    workspace: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    populate(workspace)
    python, marker = marker_interpreter()
    store.trust(str(workspace))
    handle_request(store, workspace, kind, python, child_env)
    assert marker.read_text().splitlines()[0] == str(workspace)


@pytest.mark.parametrize("kind", SPAWNS)
def test_an_untrusted_workspace_starts_no_process(
    kind: str,
    store: TrustStore,
    workspace: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    populate(workspace)
    python, marker = marker_interpreter()
    assert_refused(lambda: handle_request(store, workspace, kind, python, child_env))
    assert not marker.exists()


@pytest.mark.parametrize("kind", SPAWNS)
def test_trust_withdrawn_after_the_check_still_starts_no_process(
    kind: str,
    store: TrustStore,
    workspace: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    populate(workspace)
    python, marker = marker_interpreter()
    store.trust(str(workspace))
    trusted = store.require(str(workspace))
    store.untrust(str(workspace))
    assert_refused(lambda: asyncio.run(spawn(kind, trusted, python, child_env)))
    assert not marker.exists()


@pytest.mark.parametrize("kind", SPAWNS)
def test_a_subfolder_of_a_trusted_folder_may_spawn(
    kind: str,
    store: TrustStore,
    workspace: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    project = workspace / "projects" / "iris"
    project.mkdir(parents=True)
    populate(project)
    python, marker = marker_interpreter()
    store.trust(str(workspace))
    handle_request(store, project, kind, python, child_env)
    assert marker.read_text().splitlines()[0] == str(project)


@pytest.mark.parametrize("kind", SPAWNS)
def test_a_symlink_in_a_trusted_folder_to_an_untrusted_one_starts_no_process(
    kind: str,
    store: TrustStore,
    workspace: Path,
    tmp_path: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    populate(stranger)
    (workspace / "linked").symlink_to(stranger)
    python, marker = marker_interpreter()
    store.trust(str(workspace))
    assert_refused(lambda: handle_request(store, workspace / "linked", kind, python, child_env))
    assert not marker.exists()


@pytest.mark.parametrize("kind", SPAWNS)
def test_a_symlink_to_a_trusted_folder_may_spawn(
    kind: str,
    store: TrustStore,
    workspace: Path,
    tmp_path: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    populate(workspace)
    (tmp_path / "alias").symlink_to(workspace)
    python, marker = marker_interpreter()
    store.trust(str(workspace))
    handle_request(store, tmp_path / "alias", kind, python, child_env)
    assert marker.read_text().splitlines()[0] == str(workspace)


@pytest.mark.parametrize("kind", SPAWNS)
def test_a_corrupt_trust_file_starts_no_process(
    kind: str,
    store: TrustStore,
    workspace: Path,
    marker_interpreter: Callable[[], tuple[Path, Path]],
    child_env: dict[str, str],
) -> None:
    populate(workspace)
    python, marker = marker_interpreter()
    store.trust(str(workspace))
    store.path.write_text('{"schema_version": "runforge.trust.v1", "workspaces": [')
    assert_refused(
        lambda: handle_request(store, workspace, kind, python, child_env),
        ErrorCode.SETTINGS_INVALID,
    )
    assert not marker.exists()
