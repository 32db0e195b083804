"""Shared fixtures: real daemons in private temp directories, and the no-leak guarantee."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import (
    TEMP_PREFIX,
    DaemonProcess,
    kill_marked_processes,
    remove_tree,
    short_tempdir,
)


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fails the test if any process it started (daemon, client, trainer, grandchild) is
    still alive once its fixtures are torn down."""
    yield
    leftovers = kill_marked_processes()
    assert leftovers == [], f"processes left behind: {leftovers}"


@pytest.fixture(autouse=True, scope="session")
def no_leaked_temp_dirs() -> Iterator[None]:
    """Every temp directory the harness creates is removed by the end of the session."""
    tmp = Path("/tmp")
    yield
    left = sorted(p.name for p in tmp.glob(f"{TEMP_PREFIX}*"))
    assert left == [], f"temp dirs left behind: {left}"


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., DaemonProcess]]:
    """Make (unstarted) daemons; each is stopped and checked clean at teardown."""
    made: list[DaemonProcess] = []

    def make(**extra_env: str) -> DaemonProcess:
        daemon = DaemonProcess(root=short_tempdir(), extra_env=dict(extra_env))
        made.append(daemon)
        return daemon

    yield make
    try:
        for daemon in made:
            if daemon.proc is not None and daemon.proc.poll() is None:
                code = daemon.stop()
                assert code == 0, f"runforged exited {code}:\n{daemon.log()}"
                daemon.assert_clean_runtime_dir()
    finally:
        for daemon in made:
            daemon.kill_hard()
            remove_tree(daemon.root)


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A running daemon."""
    return daemon_factory().start()
