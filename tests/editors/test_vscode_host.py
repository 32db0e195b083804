"""The RunForge extension in a real VS Code: code-server (installed from npm by
``editors/vscode/host-test/setup.sh``) in Debian's chromium, driven by playwright-core:
Train (Standard) from the Command Palette, the run's progress notification, its Cancel
button, the daemon's countdown, and the terminal state as the daemon classified it.

Slow (code-server and a browser start): it runs only with RUNFORGE_VSCODE_HOST_TEST=1,
which .ci/run sets for a separate step after the main suite."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.editors.tools import VSCODE_DIR, editor_env, require, tool
from tests.harness import DaemonProcess, trainer_workspace, wait_for

HOST_DIR = VSCODE_DIR / "host-test"
ENTRY = HOST_DIR / "node_modules" / "code-server" / "out" / "node" / "entry.js"
VSIX = VSCODE_DIR / "runforge-daemon.vsix"

pytestmark = pytest.mark.skipif(
    os.environ.get("RUNFORGE_VSCODE_HOST_TEST") != "1",
    reason="slow: set RUNFORGE_VSCODE_HOST_TEST=1 (.ci/run does, in its own step)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def code_server(
    daemon_factory: Callable[..., DaemonProcess],
) -> Iterator[tuple[DaemonProcess, Path, int]]:
    node = tool("node")
    tool("chromium")
    require(ENTRY.is_file(), "code-server is not installed: run editors/vscode/host-test/setup.sh")
    require(VSIX.is_file(), "the .vsix is not built: npm run package in editors/vscode")
    daemon = daemon_factory(RF_TEST_MODE="graceful", RF_TEST_STEPS="10000", RF_TEST_STEP_S="0.2")
    daemon.start()
    workspace = trainer_workspace(daemon)
    data, extensions, home = daemon.root / "cs-data", daemon.root / "cs-ext", daemon.root / "home"
    (data / "User").mkdir(parents=True)
    home.mkdir()
    (data / "User" / "settings.json").write_text(
        json.dumps(
            {
                "runforge.runforgectlPath": f"{sys.executable} -m runforgectl",
                "runforge.autoStartDaemon": False,
                "workbench.startupEditor": "none",
            }
        )
    )
    env = {**editor_env(), **daemon.env, "HOME": str(home)}
    dirs = ["--user-data-dir", str(data), "--extensions-dir", str(extensions)]
    subprocess.run(
        [node, str(ENTRY), *dirs, "--install-extension", str(VSIX)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    port = _free_port()
    with open(daemon.root / "code-server.log", "wb") as log:
        server = subprocess.Popen(
            [
                *(node, str(ENTRY), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}", *dirs),
                *("--disable-telemetry", "--disable-update-check", "--disable-workspace-trust"),
                str(workspace),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _answers(port), timeout=120)
        yield daemon, workspace, port
    finally:
        # code-server's extension host (and the bridge under it) would outlive a plain
        # terminate for a while: end the whole tree.
        try:
            tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=20)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        server.wait()


@pytest.mark.timeout(900)
def test_train_progress_cancel_countdown_in_code_server(
    code_server: tuple[DaemonProcess, Path, int],
) -> None:
    daemon, workspace, port = code_server
    shots = daemon.root / "screenshots"
    shots.mkdir()
    proc = subprocess.run(
        [
            *("node", str(HOST_DIR / "drive.js")),
            *(f"http://127.0.0.1:{port}/?folder={workspace}", str(shots)),
        ],
        env=editor_env(NODE_PATH=str(HOST_DIR / "node_modules")),
        capture_output=True,
        text=True,
        timeout=800,
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    texts = json.loads(proc.stdout.strip().splitlines()[-1])["texts"]
    training = [t for t in texts if "training " in t]
    countdown = [t for t in texts if "Cancelling… " in t]
    final = [t for t in texts if ": cancelled" in t]
    assert training and countdown and final, texts
    assert texts.index(training[0]) < texts.index(countdown[0]) < texts.index(final[-1])
    run_id = final[-1].split()[1].rstrip(":")
    # What the notification said is what the daemon decided.
    result = json.loads((workspace / ".ml" / "runs" / run_id / "result.json").read_text())
    assert result["state"] == "cancelled_graceful"
    assert "cancelled (gracefully" in final[-1]
