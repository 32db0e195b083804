"""The Neovim plugin (``editors/nvim``) in a headless Neovim against the real daemon
through the real bridge with real trainers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.editors.tools import NVIM_DIR, REPO_ROOT, run, tool
from tests.harness import DaemonProcess, trainer_workspace


def _nvim(daemon: DaemonProcess, scenario: str, workspace: Path, untrusted: Path) -> None:
    nvim = tool("nvim")
    run(
        [
            nvim,
            "--headless",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "--cmd",
            f"set rtp+={NVIM_DIR}",
            "-c",
            f"luafile {NVIM_DIR / 'tests' / 'headless.lua'}",
        ],
        REPO_ROOT,
        timeout=300,
        **{k: v for k, v in daemon.env.items() if k.startswith("RUNFORGE_")},
        RF_NVIM_SCENARIO=scenario,
        RF_CMD=json.dumps([sys.executable, "-m", "runforgectl"]),
        RF_WS=str(workspace),
        RF_WS_UNTRUSTED=str(untrusted),
    )


def _untrusted(daemon: DaemonProcess) -> Path:
    folder = daemon.root / "untrusted"
    folder.mkdir()
    (folder / "data.csv").write_text("a,label\n1,0\n")
    return folder


@pytest.mark.timeout(400)
@pytest.mark.parametrize("scenario", ["complete", "cancel", "orphans"])
def test_nvim_plugin_headless(scenario: str, daemon_factory: Callable[..., DaemonProcess]) -> None:
    tool("nvim")
    env = {"RF_TEST_STEPS": "5", "RF_TEST_STEP_S": "0.1"}
    if scenario == "cancel":
        env = {"RF_TEST_MODE": "graceful", "RF_TEST_STEPS": "10000", "RF_TEST_STEP_S": "0.1"}
    daemon = daemon_factory(**env).start()
    workspace = trainer_workspace(daemon)
    if scenario == "orphans":
        # A regular file where the outputs folder goes: the index cannot be written.
        (workspace / ".ml").mkdir()
        (workspace / ".ml" / "outputs").write_text("not a folder\n")
    _nvim(daemon, scenario, workspace, _untrusted(daemon))
