"""Path safety: workspaces, paths inside them, run ids, run folder layout."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.paths import (
    index_path,
    new_run_id,
    resolve_inside,
    run_dir,
    runs_dir,
    validate_run_id,
    validate_workspace,
)


def error_code(call: Callable[..., object], *args: object) -> ErrorCode:
    with pytest.raises(RunforgeError) as caught:
        call(*args)
    return caught.value.code


# --- workspaces ----------------------------------------------------------------------------


def test_a_workspace_is_returned_absolute_with_symlinks_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert validate_workspace(str(tmp_path / "link")) == real.resolve()


@pytest.mark.parametrize("path", ["", "relative/dir", "a\0b"])
def test_a_workspace_path_must_be_absolute_and_clean(path: str) -> None:
    assert error_code(validate_workspace, path) == ErrorCode.INVALID_PATH


def test_a_missing_workspace_is_not_found(tmp_path: Path) -> None:
    assert error_code(validate_workspace, str(tmp_path / "gone")) == ErrorCode.WORKSPACE_NOT_FOUND


def test_a_file_is_not_a_workspace(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert error_code(validate_workspace, str(tmp_path / "file")) == ErrorCode.INVALID_PATH


# --- paths inside a workspace --------------------------------------------------------------


def test_relative_and_absolute_paths_inside_the_workspace_resolve(workspace: Path) -> None:
    assert resolve_inside(workspace, "data/iris.csv") == workspace / "data" / "iris.csv"
    assert resolve_inside(workspace, str(workspace / "a.csv")) == workspace / "a.csv"
    assert resolve_inside(workspace, "a/../b.csv") == workspace / "b.csv"
    assert resolve_inside(workspace, ".") == workspace


@pytest.mark.parametrize("candidate", ["../outside.csv", "/etc/passwd", "a/../../x", "", "a\0b"])
def test_paths_escaping_the_workspace_or_malformed_are_refused(
    workspace: Path, candidate: str
) -> None:
    assert error_code(resolve_inside, workspace, candidate) == ErrorCode.INVALID_PATH


def test_a_symlink_pointing_outside_the_workspace_is_refused(
    workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.csv").write_text("x")
    (workspace / "data.csv").symlink_to(tmp_path / "secret.csv")
    (workspace / "dir").symlink_to(tmp_path)
    assert error_code(resolve_inside, workspace, "data.csv") == ErrorCode.INVALID_PATH
    assert error_code(resolve_inside, workspace, "dir/secret.csv") == ErrorCode.INVALID_PATH


def test_a_symlink_staying_inside_the_workspace_is_followed(workspace: Path) -> None:
    (workspace / "real.csv").write_text("x")
    (workspace / "alias.csv").symlink_to("real.csv")
    assert resolve_inside(workspace, "alias.csv") == workspace / "real.csv"


hostile_paths = st.lists(
    st.sampled_from(["..", ".", "a", "b", "", "/", "//", "\0", "link", "..."])
    | st.text(max_size=6),
    max_size=6,
).map("/".join)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_paths)
@example("link/../../x")
def test_resolve_inside_never_returns_a_path_outside_the_workspace(
    tmp_path: Path, candidate: str
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    if not (workspace / "link").is_symlink():
        (workspace / "link").symlink_to(tmp_path)
    try:
        resolved = resolve_inside(workspace, candidate)
    except RunforgeError as error:
        assert error.code == ErrorCode.INVALID_PATH
        return
    real = Path(os.path.realpath(resolved))
    assert real == workspace or workspace in real.parents


# --- run ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id", ["20240131-142501-1a2b3c4d", "my.run_1", "A", "x" * 128, "run-1.v2"]
)
def test_well_formed_run_ids_are_accepted(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id",
    [
        "../../etc",
        "a/b",
        ".",
        "..",
        "/abs",
        "",
        ".hidden",
        "-flag",
        "a..b",
        "x" * 129,
        "a\0b",
        "a b",
        "run\n",
        "a\\b",
    ],
)
def test_hostile_or_malformed_run_ids_are_refused(run_id: str) -> None:
    assert error_code(validate_run_id, run_id) == ErrorCode.INVALID_RUN_ID


@settings(deadline=None)
@given(st.text(max_size=140))
def test_an_accepted_run_id_always_names_a_direct_child_of_the_runs_folder(run_id: str) -> None:
    workspace = Path("/ws")
    try:
        folder = run_dir(workspace, run_id)
    except RunforgeError as error:
        assert error.code == ErrorCode.INVALID_RUN_ID
        return
    assert folder.parent == runs_dir(workspace)
    assert folder.name == run_id
    assert os.path.normpath(folder) == str(folder)


def test_new_run_ids_have_the_documented_format_and_are_valid() -> None:
    run_id = new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", run_id)
    assert validate_run_id(run_id) == run_id


def test_new_run_ids_are_unique_under_concurrent_calls() -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def allocate() -> None:
        mine = [new_run_id() for _ in range(500)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 4000
    assert len(set(ids)) == len(ids)


def test_the_run_layout_matches_runforge() -> None:
    workspace = Path("/ws")
    assert runs_dir(workspace) == Path("/ws/.ml/runs")
    assert run_dir(workspace, "r1") == Path("/ws/.ml/runs/r1")
    assert index_path(workspace) == Path("/ws/.ml/outputs/index.json")
