"""The trust store: what trusting covers, symlinks, the file on disk, and require()."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.trust import TrustedWorkspace, TrustStore, trust_store_path
from tests.harness import SESSION_MARKER, SESSION_MARKER_ENV


def test_a_missing_trust_file_means_nothing_is_trusted(store: TrustStore, workspace: Path) -> None:
    assert store.list() == []
    assert not store.is_trusted(workspace)
    assert not store.path.exists()


def test_trusting_a_folder_covers_the_folders_beneath_it(
    store: TrustStore, workspace: Path
) -> None:
    (workspace / "sub" / "deeper").mkdir(parents=True)
    store.trust(str(workspace))
    assert store.is_trusted(workspace)
    assert store.is_trusted(workspace / "sub" / "deeper")
    assert not store.is_trusted(workspace.parent)
    # A sibling whose name merely starts with the same text is a different folder.
    sibling = workspace.parent / (workspace.name + "-other")
    sibling.mkdir()
    assert not store.is_trusted(sibling)


def test_trust_is_idempotent_and_listed_with_resolved_paths(
    store: TrustStore, workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "alias").symlink_to(workspace)
    first = store.trust(str(tmp_path / "alias"))
    again = store.trust(str(workspace))
    assert first == again
    assert [entry.path for entry in store.list()] == [str(workspace)]


def test_a_symlink_to_a_trusted_folder_is_trusted(
    store: TrustStore, workspace: Path, tmp_path: Path
) -> None:
    store.trust(str(workspace))
    (tmp_path / "alias").symlink_to(workspace)
    assert store.is_trusted(tmp_path / "alias")
    assert store.require(str(tmp_path / "alias")).path == workspace


def test_a_symlink_inside_a_trusted_folder_pointing_outside_is_not_trusted(
    store: TrustStore, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "escape").symlink_to(outside)
    store.trust(str(workspace))
    assert not store.is_trusted(workspace / "escape")
    with pytest.raises(RunforgeError) as caught:
        store.require(str(workspace / "escape"))
    assert caught.value.code == ErrorCode.WORKSPACE_NOT_TRUSTED
    assert caught.value.details == {"workspace": str(outside)}


def test_require_refuses_an_untrusted_workspace_with_the_exact_remediation(
    store: TrustStore, tmp_path: Path
) -> None:
    folder = tmp_path / "someone's repo"
    folder.mkdir()
    with pytest.raises(RunforgeError) as caught:
        store.require(str(folder))
    error = caught.value
    assert error.code == ErrorCode.WORKSPACE_NOT_TRUSTED
    assert error.details == {"workspace": str(folder.resolve())}
    assert str(folder.resolve()) in error.message
    assert error.remediation == f"runforgectl trust {shlex.quote(str(folder.resolve()))}"
    assert shlex.split(error.remediation)[2] == str(folder.resolve())


def test_require_checks_the_path_before_trust(store: TrustStore, tmp_path: Path) -> None:
    for path, code in [
        ("relative", ErrorCode.INVALID_PATH),
        (str(tmp_path / "missing"), ErrorCode.WORKSPACE_NOT_FOUND),
    ]:
        with pytest.raises(RunforgeError) as caught:
            store.require(path)
        assert caught.value.code == code


def test_only_require_can_make_a_trusted_workspace(store: TrustStore, workspace: Path) -> None:
    with pytest.raises(TypeError):
        TrustedWorkspace(path=workspace, store=store, issued_by=object())
    store.trust(str(workspace))
    trusted = store.require(str(workspace))
    assert trusted.path == workspace


def test_recheck_notices_trust_withdrawn_after_require(store: TrustStore, workspace: Path) -> None:
    store.trust(str(workspace))
    trusted = store.require(str(workspace))
    trusted.recheck()
    store.untrust(str(workspace))
    with pytest.raises(RunforgeError) as caught:
        trusted.recheck()
    assert caught.value.code == ErrorCode.WORKSPACE_NOT_TRUSTED


def test_untrust_removes_the_entry_and_reports_whether_anything_changed(
    store: TrustStore, workspace: Path
) -> None:
    store.trust(str(workspace))
    assert store.untrust(str(workspace)) is True
    assert not store.is_trusted(workspace)
    assert store.untrust(str(workspace)) is False
    assert store.list() == []


def test_untrusting_a_folder_trusted_only_through_its_parent_is_an_error(
    store: TrustStore, workspace: Path
) -> None:
    (workspace / "sub").mkdir()
    store.trust(str(workspace))
    with pytest.raises(RunforgeError) as caught:
        store.untrust(str(workspace / "sub"))
    assert caught.value.code == ErrorCode.INVALID_PATH
    assert caught.value.details["trusted_through"] == str(workspace)
    assert caught.value.remediation == f"runforgectl untrust {shlex.quote(str(workspace))}"
    assert store.is_trusted(workspace / "sub")


def test_a_subfolder_trusted_on_its_own_stays_trusted_when_the_parent_is_untrusted(
    store: TrustStore, workspace: Path
) -> None:
    (workspace / "sub").mkdir()
    store.trust(str(workspace))
    store.trust(str(workspace / "sub"))
    store.untrust(str(workspace))
    assert store.is_trusted(workspace / "sub")
    assert not store.is_trusted(workspace)


def test_a_deleted_folder_can_still_be_untrusted(store: TrustStore, workspace: Path) -> None:
    store.trust(str(workspace))
    workspace.rmdir()
    assert store.untrust(str(workspace)) is True
    assert store.list() == []


def test_the_trust_file_is_private_and_its_folder_too(store: TrustStore, workspace: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store.trust(str(workspace))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    document = json.loads(store.path.read_text())
    assert document["schema_version"] == "runforge.trust.v1"
    assert [entry["path"] for entry in document["workspaces"]] == [str(workspace)]
    leftovers = [p.name for p in store.path.parent.iterdir()]
    assert sorted(leftovers) == ["trust.json", "trust.json.lock"]


def test_an_existing_config_folder_open_to_others_is_made_private(
    config_dir: Path, workspace: Path
) -> None:
    config_dir.mkdir(mode=0o755)
    os.chmod(config_dir, 0o755)
    TrustStore(trust_store_path(config_dir)).trust(str(workspace))
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        '{"schema_version": "runforge.trust.v1"}',
        '{"schema_version": "runforge.trust.v1",'
        ' "workspaces": [{"path": "rel", "trusted_at": ""}]}',
        '{"schema_version": "v999", "workspaces": []}',
        "[]",
    ],
)
def test_a_corrupt_trust_file_is_an_error_and_is_never_emptied(
    store: TrustStore, workspace: Path, content: str
) -> None:
    store.path.parent.mkdir(mode=0o700)
    store.path.write_text(content)
    store.path.chmod(0o600)
    for action in (
        store.list,
        lambda: store.is_trusted(workspace),
        lambda: store.trust(str(workspace)),
    ):
        with pytest.raises(RunforgeError) as caught:
            action()
        assert caught.value.code == ErrorCode.SETTINGS_INVALID
        assert caught.value.details == {"file": str(store.path)}
        assert str(store.path) in caught.value.message
    assert store.path.read_text() == content


def test_a_trust_file_writable_by_others_is_refused(store: TrustStore, workspace: Path) -> None:
    store.trust(str(workspace))
    store.path.chmod(0o666)
    with pytest.raises(RunforgeError) as caught:
        store.is_trusted(workspace)
    assert caught.value.code == ErrorCode.SETTINGS_INVALID
    assert "writable by other users" in caught.value.message


def test_concurrent_writers_in_separate_processes_lose_no_update(
    config_dir: Path, tmp_path: Path
) -> None:
    script = (
        "import sys; from pathlib import Path; from runforged.trust import TrustStore\n"
        "store = TrustStore(Path(sys.argv[1]))\n"
        "for folder in sys.argv[2:]: store.trust(folder)\n"
    )
    batches = []
    for number in range(4):
        batch = []
        for index in range(8):
            folder = tmp_path / f"ws-{number}-{index}"
            folder.mkdir()
            batch.append(str(folder.resolve()))
        batches.append(batch)
    env = {**os.environ, SESSION_MARKER_ENV: SESSION_MARKER}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(trust_store_path(config_dir)), *batch], env=env
        )
        for batch in batches
    ]
    try:
        assert [writer.wait(timeout=60) for writer in writers] == [0, 0, 0, 0]
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    trusted = [entry.path for entry in TrustStore(trust_store_path(config_dir)).list()]
    assert trusted == sorted(folder for batch in batches for folder in batch)
