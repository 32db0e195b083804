"""A cluster run's ``.executor/`` exchange and ``logs.txt`` are opened like every other
file of a run folder: no symlink followed, regular files only, nothing written outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runforge_contract.layout import CONTROL_FILE, EXECUTOR_DIR, EXIT_FILE, OUTPUT_FILE
from runforged import run_folder


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ws" / ".ml" / "runs" / "r1"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    place = tmp_path / "outside"
    place.mkdir()
    (place / EXIT_FILE).write_text('{"returncode": 0}')
    (place / OUTPUT_FILE).write_text("secret\n")
    (place / "logs").write_text("a\nb\nc\n")
    return place


def test_the_exchange_works_in_a_real_folder(run_dir: Path) -> None:
    run_folder.write_executor_document(run_dir, CONTROL_FILE, b'{"cancel": 1}')
    assert run_folder.read_executor_document(run_dir, CONTROL_FILE) == {"cancel": 1}
    assert os.stat(run_dir / EXECUTOR_DIR).st_mode & 0o777 == 0o700
    assert os.stat(run_dir / EXECUTOR_DIR / CONTROL_FILE).st_mode & 0o777 == 0o600
    assert run_folder.open_executor_stream(run_dir) is None  # not there yet
    (run_dir / EXECUTOR_DIR / OUTPUT_FILE).write_bytes(b"line\n")
    fd = run_folder.open_executor_stream(run_dir)
    assert fd is not None
    with os.fdopen(fd, "rb") as stream:
        assert stream.read() == b"line\n"
    (run_dir / "logs.txt").write_bytes(b"1\n2\ntorn")
    assert run_folder.count_log_lines(run_dir) == 2


def test_a_symlinked_executor_folder_is_neither_written_nor_read(
    run_dir: Path, outside: Path
) -> None:
    (run_dir / EXECUTOR_DIR).symlink_to(outside)
    with pytest.raises(OSError):
        run_folder.write_executor_document(run_dir, CONTROL_FILE, b"{}")
    assert not (outside / CONTROL_FILE).exists()
    assert run_folder.read_executor_document(run_dir, EXIT_FILE) is None
    assert run_folder.open_executor_stream(run_dir) is None


def test_symlinked_or_fifo_executor_files_are_not_read(run_dir: Path, outside: Path) -> None:
    (run_dir / EXECUTOR_DIR).mkdir()
    (run_dir / EXECUTOR_DIR / EXIT_FILE).symlink_to(outside / EXIT_FILE)
    (run_dir / EXECUTOR_DIR / OUTPUT_FILE).symlink_to(outside / OUTPUT_FILE)
    os.mkfifo(run_dir / EXECUTOR_DIR / CONTROL_FILE)
    assert run_folder.read_executor_document(run_dir, EXIT_FILE) is None
    assert (
        run_folder.read_executor_document(run_dir, CONTROL_FILE) is None
    )  # a FIFO: no blocking read
    assert run_folder.open_executor_stream(run_dir) is None
    (run_dir / "logs.txt").symlink_to(outside / "logs")
    assert run_folder.count_log_lines(run_dir) == 0
