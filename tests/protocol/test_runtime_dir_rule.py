"""The one runtime-directory rule (``discovery.check_runtime_dir``) on real directories:
the daemon applies it before it binds, the client before it connects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runforge_protocol.discovery import RuntimeDirError, RuntimeDirMissing, check_runtime_dir


def test_a_private_directory_of_ours_passes(tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    check_runtime_dir(runtime, refusing_to="connect")


def test_missing_symlinked_open_and_foreign_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeDirMissing):
        check_runtime_dir(tmp_path / "absent", refusing_to="connect")
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(RuntimeDirError, match="is a symlink"):
        check_runtime_dir(tmp_path / "link", refusing_to="start")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    with pytest.raises(RuntimeDirError) as raised:
        check_runtime_dir(open_dir, refusing_to="start")
    assert "mode 0755" in str(raised.value) and f"chmod 700 {open_dir}" in str(raised.value)
    assert "refusing to start" in str(raised.value)
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        with pytest.raises(RuntimeDirError) as raised:
            check_runtime_dir(foreign, refusing_to="connect")
        assert "belongs to uid 65534" in str(raised.value) and "not by you" in str(raised.value)


def test_a_path_too_long_for_a_socket_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir(mode=0o700)
    with pytest.raises(RuntimeDirError, match="too long for a Unix socket"):
        check_runtime_dir(deep, refusing_to="start")
