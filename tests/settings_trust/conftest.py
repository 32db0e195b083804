"""Fixtures for settings, trust and the trust-gated spawns: private config and workspace
folders, a child environment, a fake runner, and interpreters that leave a marker."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runforged.trust import TrustStore, trust_store_path
from tests.harness import SESSION_MARKER, SESSION_MARKER_ENV

FAKE_RUNNER = "fake_runner"

# A real runner module speaking the runner's inspect contract, switched by environment
# variables: FAKE_RUNNER_MODE=fail|hang|garbage.
FAKE_RUNNER_MAIN = '''
"""Test runner: `inspect` and `inspect-artifact` in RunForge's output formats."""
import argparse, csv, hashlib, json, os, sys, time

mode = os.environ.get("FAKE_RUNNER_MODE", "")
if mode == "hang":
    time.sleep(600)
if mode == "fail":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("  File \\"runner.py\\", line 1", file=sys.stderr)
    print("ValueError: dataset has no rows", file=sys.stderr)
    sys.exit(1)
if mode == "garbage":
    print("this is not json")
    sys.exit(0)

parser = argparse.ArgumentParser()
commands = parser.add_subparsers(dest="command", required=True)
inspect = commands.add_parser("inspect")
inspect.add_argument("--dataset", required=True)
inspect.add_argument("--label", default="label")
artifact = commands.add_parser("inspect-artifact")
artifact.add_argument("--artifact", required=True)
args = parser.parse_args()

if args.command == "inspect":
    with open(args.dataset, "rb") as handle:
        data = handle.read()
    rows = list(csv.reader(data.decode("utf-8").splitlines()))
    columns = rows[0]
    print(json.dumps({
        "dataset_path": args.dataset,
        "fingerprint_sha256": hashlib.sha256(data).hexdigest(),
        "columns": columns,
        "num_rows": len(rows) - 1,
        "label_column": args.label,
        "num_features_excluding_label": len([c for c in columns if c != args.label]),
        "label_present": args.label in columns,
    }))
else:
    with open(args.artifact, "rb"):
        pass
    steps = [
        {"name": "scaler", "type": "StandardScaler", "module": "sklearn.preprocessing._data"},
        {"name": "clf", "type": "LogisticRegression",
         "module": "sklearn.linear_model._logistic"},
    ]
    print(json.dumps({
        "schema_version": "0.2.2.2",
        "artifact_path": args.artifact,
        "pipeline_steps": steps,
        "has_preprocessing": True,
        "step_count": len(steps),
    }))
'''


def write_executable(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder.resolve()


@pytest.fixture
def store(config_dir: Path) -> TrustStore:
    return TrustStore(trust_store_path(config_dir))


@pytest.fixture
def runner_path(tmp_path: Path) -> Path:
    """A PYTHONPATH entry holding only the fake runner package."""
    entry = tmp_path / "runner-path"
    package = entry / FAKE_RUNNER
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_RUNNER_MAIN)
    return entry


@pytest.fixture
def child_env(runner_path: Path) -> dict[str, str]:
    """The complete environment of spawned children, as the daemon would build it."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": str(runner_path),
        SESSION_MARKER_ENV: SESSION_MARKER,
    }


@pytest.fixture
def marker_interpreter(tmp_path: Path) -> Callable[[], tuple[Path, Path]]:
    """Make an interpreter that appends its working directory to a marker file, then
    runs the real Python: if the marker exists, something was executed."""
    made = 0

    def make() -> tuple[Path, Path]:
        nonlocal made
        made += 1
        marker = tmp_path / f"ran-{made}.marker"
        python = write_executable(
            tmp_path / f"python-with-marker-{made}",
            f"""
            #!/bin/sh
            pwd >> '{marker}'
            exec '{sys.executable}' "$@"
            """,
        )
        return python, marker

    return make
