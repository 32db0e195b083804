"""Fixtures of the end-to-end tests: a real daemon, workspaces wired to the bundled
runner and sample data or to the purpose-built test trainer, and small helpers that read
what a run left on disk."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runforge_contract.sample_data import BUNDLED_DIR, SMALL_NAME
from tests.harness import (  # noqa: F401 - re-exported to the e2e test modules
    DaemonProcess,
    events_on_disk,
    index_path,
    json_lines,
    read_json,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)

SAMPLE_CSV = BUNDLED_DIR / SMALL_NAME
FAMILIES = ("logistic_regression", "random_forest", "linear_svc")
LINEAR_FAMILIES = ("logistic_regression", "linear_svc")

# runforgectl exit statuses (runforgectl/exits.py).
EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_RUN_FAILED = 12


def error_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The structured error a ``--json`` command printed (exit 1)."""
    assert result.returncode == EXIT_DAEMON_ERROR, (result.returncode, result.stdout, result.stderr)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def write_executable(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def write_settings(workspace: Path, text: str) -> Path:
    """Write ``<ws>/.vscode/settings.json`` verbatim (JSONC allowed)."""
    path = workspace / ".vscode" / "settings.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def sample_workspace(daemon: DaemonProcess) -> Path:
    """A trusted workspace holding the bundled small sample CSV as ``data/iris_like.csv``
    and settings that point at it; the runner is the bundled ``runforge_runner``."""
    workspace = daemon.root / "ws"
    (workspace / "data").mkdir(parents=True)
    shutil.copyfile(SAMPLE_CSV, workspace / "data" / SMALL_NAME)
    write_settings(
        workspace,
        """
        {
          // the small sample: runs take seconds
          "runforge.datasetPath": "data/iris_like.csv",
          "runforge.profile": "fast",
          "runforge.device": "cpu",
        }
        """,
    )
    daemon.ctl("trust", str(workspace), check=True)
    return workspace


@pytest.fixture
def trainer_daemon(
    daemon_factory: Callable[..., DaemonProcess],
) -> Iterator[Callable[..., tuple[DaemonProcess, Path]]]:
    """``make(settings=None, **RF_TEST_env)``: a started daemon whose environment switches
    the test trainer, and a trusted workspace wired to that trainer."""

    def make(
        settings: dict[str, Any] | None = None, **trainer_env: str
    ) -> tuple[DaemonProcess, Path]:
        daemon = daemon_factory(**trainer_env).start()
        return daemon, trainer_workspace(daemon, settings=settings)

    yield make
