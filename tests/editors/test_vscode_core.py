"""The VS Code extension's editor-independent core (``editors/vscode/src/core``), tested by
``node --test`` against the real daemon through the real bridge with real trainers."""

from __future__ import annotations

import pytest

from tests.editors.tools import VSCODE_DIR, require, run, tool


@pytest.mark.timeout(900)
def test_vscode_core_against_the_real_daemon() -> None:
    tool("node")
    npx = tool("npx")
    require(
        (VSCODE_DIR / "node_modules" / "typescript").is_dir(),
        "editors/vscode/node_modules is missing: run 'npm ci' in editors/vscode",
    )
    run([npx, "tsc", "-p", "."], VSCODE_DIR, timeout=300)
    run(
        [
            "node",
            "--test",
            "--test-concurrency=1",
            "out/test/manifest.test.js",
            "out/test/core.test.js",
        ],
        VSCODE_DIR,
        timeout=600,
    )
