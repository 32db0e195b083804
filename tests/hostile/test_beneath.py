"""Opening beneath a directory: no symlink followed anywhere, no way out, no FIFO read,
no file over its cap; with the kernel's openat2 and with the component walk alike."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runforged import beneath


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "walk":
        monkeypatch.setattr(beneath, "_openat2_works", False)
    yield request.param


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{a/b/file, link-dir -> outside, a/link-file -> outside/secret, fifo}; outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (root / "a" / "b" / "file").write_text("inside")
    (root / "link-dir").symlink_to(outside)
    (root / "a" / "link-file").symlink_to(outside / "secret")
    (root / "a" / "inner-link").symlink_to(root / "a" / "b")  # even one that stays inside
    os.mkfifo(root / "fifo")
    return root


def read(root: Path, path: str, cap: int = 1 << 20) -> bytes:
    with beneath.opened(beneath.open_root(root)) as fd:
        return beneath.read_regular(fd, path, cap)[0]


def test_a_plain_path_is_read(mode: str, tree: Path) -> None:
    assert read(tree, "a/b/file") == b"inside"


@pytest.mark.parametrize("path", ["link-dir/secret", "a/link-file", "a/inner-link/file"])
def test_a_symlink_in_any_component_is_eloop(mode: str, tree: Path, path: str) -> None:
    with pytest.raises(OSError) as caught:
        read(tree, path)
    assert caught.value.errno == errno.ELOOP


@pytest.mark.parametrize("path", ["../outside/secret", "a/../../outside/secret", "/etc/hostname"])
def test_a_path_that_leaves_is_refused(mode: str, tree: Path, path: str) -> None:
    with pytest.raises(OSError) as caught:
        read(tree, path)
    assert caught.value.errno in (errno.EXDEV, errno.ELOOP)


def test_a_fifo_is_not_read_and_does_not_block(mode: str, tree: Path) -> None:
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(beneath.NotRegularFile):
            read(tree, "fifo")
        done.set()

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert done.is_set(), "reading a FIFO blocked"


def test_a_file_over_its_cap_is_refused(mode: str, tree: Path) -> None:
    with pytest.raises(beneath.FileTooLarge):
        read(tree, "a/b/file", cap=3)


def test_directories_are_created_but_never_through_a_symlink(mode: str, tree: Path) -> None:
    with beneath.opened(beneath.open_root(tree)) as root:
        with beneath.opened(beneath.open_dir(root, "new/deeper", create=True)) as made:
            beneath.write_atomic(made, "doc.json", b"{}")
        with pytest.raises(OSError) as caught:
            beneath.open_dir(root, "link-dir/planted", create=True)
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
        assert beneath.symlink_on_the_way(root, "link-dir/planted") == "link-dir"
    assert (tree / "new" / "deeper" / "doc.json").read_bytes() == b"{}"
    assert sorted(p.name for p in (tree.parent / "outside").iterdir()) == ["secret"]


def test_an_atomic_write_replaces_a_planted_symlink_instead_of_following_it(
    mode: str, tree: Path
) -> None:
    with (
        beneath.opened(beneath.open_root(tree)) as root,
        beneath.opened(beneath.open_dir(root, "a")) as folder,
    ):
        beneath.write_atomic(folder, "link-file", b"replaced")
    assert not (tree / "a" / "link-file").is_symlink()
    assert (tree / "a" / "link-file").read_bytes() == b"replaced"
    assert (tree.parent / "outside" / "secret").read_text() == "secret"
    assert [p.name for p in (tree / "a").iterdir() if p.name.startswith(".")] == []
