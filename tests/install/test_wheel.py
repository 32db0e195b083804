"""A real install: the built wheel in a fresh venv, away from the checkout, drives the
whole life cycle; and the sdist and wheel carry everything the project ships."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    REPO_ROOT,
    SESSION_MARKER,
    SESSION_MARKER_ENV,
    read_json,
    remove_tree,
    run_dir,
    short_tempdir,
    wait_for,
    wait_result,
)
from tests.install.conftest import Distributions

pytestmark = [pytest.mark.install, pytest.mark.slow, pytest.mark.xdist_group("install")]

PACKAGES = [
    "runforge_contract",
    "runforge_protocol",
    "runforge_rayjob",
    "runforge_runner",
    "runforgectl",
    "runforged",
]


def checkout_files(folder: str, pattern: str) -> set[str]:
    """Files under a package folder of the checkout, relative to the repository."""
    root = REPO_ROOT / ("protocol" if folder == "runforge_protocol" else folder)
    return {
        f"{folder}/{p.relative_to(root).as_posix()}"
        for p in root.rglob(pattern)
        if "__pycache__" not in p.parts
    }


def test_the_wheel_carries_every_package_module_and_data_file_and_nothing_generic(
    distributions: Distributions,
) -> None:
    names = set(zipfile.ZipFile(distributions.wheel).namelist())
    for package in PACKAGES:
        modules = checkout_files(package, "*.py")
        assert modules and modules <= names, sorted(modules - names)
    data = {
        "runforge_protocol/PROTOCOL.md",
        "runforge_protocol/schema/requests.schema.json",
        "runforge_protocol/schema/replies.schema.json",
        "runforge_protocol/schema/events.schema.json",
        "runforge_protocol/examples/requests.json",
        "runforge_contract/data/iris_like.csv",
        "runforgectl/service.py",  # the systemd unit's template
    }
    assert data <= names, sorted(data - names)
    top_level = {name.split("/")[0] for name in names}
    version = distributions.wheel.name.split("-")[1]
    assert top_level == {*PACKAGES, f"runforge-{version}.dist-info"}, top_level
    assert not any(name.startswith(("protocol/", "tools/", "tests/")) for name in names)


def test_the_sdist_carries_the_project_with_its_tests_scripts_and_unit(
    distributions: Distributions,
) -> None:
    with tarfile.open(distributions.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {
        "pyproject.toml",
        "README.md",
        "systemd/runforged.service",
        "scripts/test",
        "scripts/demo",
        "scripts/_setup.sh",
        ".ci/run",
        "tools/schema_gen.py",
        "tests/contracts/run.v0.3.6.schema.json",
        "tests/contracts/iris_sample.csv",
        "runforge_protocol/schema/events.schema.json",
        "runforge_contract/data/iris_like.csv",
    }
    assert expected <= names, sorted(expected - names)
    for package in PACKAGES:
        modules = checkout_files(package, "*.py")
        assert modules <= names, sorted(modules - names)


@dataclass
class Installed:
    """A venv holding the wheel, and a clean environment to run its commands in."""

    root: Path
    venv: Path
    env: dict[str, str]

    def run(
        self,
        *argv: str,
        timeout: float = 120,
        check: bool = True,
        env_extra: dict[str, str] | None = None,
    ) -> Any:
        done = subprocess.run(
            argv,
            cwd=self.root / "elsewhere",
            env={**self.env, **(env_extra or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stderr}"
        return done

    def ctl(self, *args: str, **kwargs: Any) -> Any:
        return self.run(str(self.venv / "bin" / "runforgectl"), *args, **kwargs)

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json").stdout)


@pytest.fixture
def installed(distributions: Distributions) -> Iterator[Installed]:
    root = short_tempdir()
    venv = root / "venv"
    for folder in ("elsewhere", "home", "config", "state", "cache", "runtime"):
        (root / folder).mkdir()
    (root / "runtime").chmod(0o700)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "RUNFORGE_RUNTIME_DIR": str(root / "runtime" / "runforge"),
        "LANG": "C.UTF-8",
        SESSION_MARKER_ENV: SESSION_MARKER,
    }
    box = Installed(root=root, venv=venv, env=env)
    try:
        # The venv gets no pip of its own: this interpreter's pip installs into it
        # (--python), from the wheelhouse only, without byte-compiling (the slow part).
        box.run(sys.executable, "-m", "venv", "--without-pip", str(venv), timeout=300)
        box.run(
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--quiet", "--no-compile", "--no-index"),
            *("--find-links", str(distributions.wheelhouse), str(distributions.wheel)),
            timeout=600,
        )
        yield box
    finally:
        box.ctl("daemon", "stop", check=False, timeout=60)
        remove_tree(root)


@pytest.mark.timeout(900)
def test_the_installed_wheel_runs_the_whole_life_cycle_away_from_the_checkout(
    installed: Installed,
) -> None:
    python = str(installed.venv / "bin" / "python")
    # Imported from the venv's site-packages, never from the checkout; no generic names.
    where = installed.run(
        python,
        "-c",
        "import json, sys, importlib.util as u, runforged, runforgectl, runforge_protocol, "
        "runforge_runner; print(json.dumps({'files': [m.__file__ for m in (runforged, "
        "runforgectl, runforge_protocol, runforge_runner)], 'protocol': "
        "u.find_spec('protocol') is not None, 'path': sys.path}))",
    )
    found = json.loads(where.stdout)
    site = str(installed.venv / "lib")
    assert all(path.startswith(site) for path in found["files"]), found["files"]
    assert not found["protocol"]
    assert not any(str(REPO_ROOT) in entry for entry in found["path"] if entry)

    workspace = installed.root / "elsewhere" / "project"
    workspace.mkdir()
    installed.ctl("daemon", "start")
    assert installed.ctl_json("ping")["protocol"] >= 1
    installed.ctl("trust", str(workspace))
    written = installed.ctl_json("sample-data", str(workspace))["written"]
    sample = next(path for path in written if path.endswith("iris_like.csv"))

    # Train on the bundled sample to completion, following it as a user would.
    trained = installed.ctl("train", "--workspace", str(workspace), "--dataset", sample)
    assert "completed" in trained.stdout
    [completed] = installed.ctl_json("runs", "--workspace", str(workspace))["runs"]
    assert completed["state"] == "completed"
    assert (run_dir(workspace, completed["run_id"]) / "run.json").is_file()

    # Start a long run and cancel it.
    large = next(path for path in written if path.endswith("demo_large.csv"))
    long_run = installed.ctl_json(
        *("train", "--workspace", str(workspace), "--dataset", large, "--detach"),
        *("--model", "random_forest", "--param", "n_estimators=5000"),
    )["run"]["run_id"]
    events = run_dir(workspace, long_run) / "events.jsonl"
    wait_for(lambda: events.exists() and "train_progress" in events.read_text(), timeout=120)
    installed.ctl("cancel", long_run, "--workspace", str(workspace), timeout=120)
    result = wait_result(workspace, long_run)
    assert result["state"] in {"cancelled_graceful", "cancelled_forced"}, result

    # Recover: the completed run is indexed, the cancelled one stays out of the index.
    report = installed.ctl_json("recover", "--workspace", str(workspace))
    assert report["scanned_run_dirs"] == 2, report
    index = read_json(workspace / ".ml" / "outputs" / "index.json")
    assert [entry["run_id"] for entry in index["runs"]] == [completed["run_id"]]

    # The systemd unit, written into this user's (temporary) config home.
    service = installed.ctl_json("daemon", "install-service")
    unit = installed.root / "config" / "systemd" / "user" / "runforged.service"
    assert service["path"] == str(unit)
    assert f"ExecStart={installed.venv / 'bin' / 'runforged'} " in unit.read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        verify = installed.run(analyze, "verify", str(unit), check=False)
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    installed.ctl("daemon", "stop", timeout=60)
    assert installed.ctl("ping", check=False).returncode == 3

    # The README's demo, run against this install (its own daemon and folder).
    demo = installed.run(
        str(REPO_ROOT / "scripts" / "demo"),
        "--installed",
        timeout=600,
        env_extra={"RUNFORGE_DEMO_DATASET": "iris_like.csv", "TMPDIR": str(installed.root)},
    )
    assert "completed" in demo.stdout and "removed" in demo.stdout, demo.stdout
    assert not list(installed.root.glob("runforge-demo.*"))
    assert not (installed.root / "home" / ".local").exists()
    assert os.listdir(installed.root / "home") == []
