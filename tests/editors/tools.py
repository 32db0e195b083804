"""Finding the editors' tools: absent locally, a test skips; absent in CI (``CI=true``),
it fails, so that CI always runs the editor tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, SESSION_MARKER, SESSION_MARKER_ENV

VSCODE_DIR = REPO_ROOT / "editors" / "vscode"
NVIM_DIR = REPO_ROOT / "editors" / "nvim"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, why: str) -> None:
    if condition:
        return
    if in_ci():
        pytest.fail(f"{why} (CI must run this test: .ci/run installs it)")
    pytest.skip(why)


def tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def editor_env(**extra: str) -> dict[str, str]:
    """The environment of an editor test: this interpreter runs runforged and runforgectl,
    and every process carries the session marker (the leak check sees them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFORGE_")}
    env.update(
        {
            "RUNFORGE_TEST_PYTHON": sys.executable,
            "RUNFORGE_REPO": str(REPO_ROOT),
            SESSION_MARKER_ENV: SESSION_MARKER,
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


def run(argv: list[str], cwd: Path, timeout: float, **extra: str) -> None:
    """Run an editor test command; its whole output is shown when it fails."""
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=editor_env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(proc.stdout[-20000:])
    print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}"
