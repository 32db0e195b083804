"""The runner under a foreign interpreter: a plain virtual environment with no packages
at all (not even numpy or scikit-learn: installing them would take minutes).

What these tests prove: that the daemon makes ``runforge_runner`` importable under an
interpreter that is not its own, through a PYTHONPATH holding that package and nothing
else, so the daemon's own packages (msgspec, pyzmq, runforged) stay out of the
trainer's reach; that the parts of the runner needing only the standard library work
there (dataset inspection); and that training, which needs scikit-learn, fails cleanly
with a message naming what is missing. What they do not prove: a successful training
run under a second interpreter with its own scikit-learn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runforge_contract.sample_data import BUNDLED_DIR, SMALL_NAME
from tests.e2e.conftest import (
    EXIT_RUN_FAILED,
    read_json,
    run_dir,
    write_settings,
)
from tests.harness import DaemonProcess

# A runner module that reports, instead of training, what it can import and from where.
PATH_PROBE = '''
"""Reports the interpreter's import path and which packages it can import."""
import importlib.util, json, os, sys
found = {}
for name in ("runforge_runner", "runforged", "runforgectl", "runforge_protocol", "msgspec", "zmq",
             "numpy", "sklearn"):
    spec = importlib.util.find_spec(name)
    found[name] = None if spec is None else spec.origin
print(json.dumps({"executable": sys.executable, "pythonpath": os.environ.get("PYTHONPATH"),
                  "found": found}))
sys.exit(3)
'''


@pytest.fixture
def foreign_python(tmp_path: Path) -> Path:
    """The interpreter of a fresh virtual environment without any package."""
    venv = tmp_path / "foreign-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    for module in ("zmq", "msgspec", "numpy", "sklearn"):
        imported = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
        assert imported.returncode != 0, f"{module} is importable in the plain venv"
    return python


@pytest.fixture
def foreign_workspace(daemon: DaemonProcess, foreign_python: Path) -> Path:
    workspace = daemon.root / "ws"
    (workspace / "data").mkdir(parents=True)
    shutil.copyfile(BUNDLED_DIR / SMALL_NAME, workspace / "data" / SMALL_NAME)
    write_settings(
        workspace,
        json.dumps(
            {
                "runforge.pythonPath": str(foreign_python),
                "runforge.datasetPath": f"data/{SMALL_NAME}",
                "runforge.device": "cpu",
            }
        ),
    )
    daemon.ctl("trust", str(workspace), check=True)
    return workspace


def test_the_foreign_interpreter_is_checked_and_reported(
    daemon: DaemonProcess, foreign_workspace: Path, foreign_python: Path
) -> None:
    status = daemon.ctl_json("status", "--workspace", str(foreign_workspace))["workspace"]
    assert status["problems"] == []
    assert status["interpreter"]["python_path"] == str(foreign_python)
    assert status["interpreter"]["version"].startswith("3.")


def test_the_runner_is_importable_and_inspects_a_dataset_with_the_standard_library(
    daemon: DaemonProcess, foreign_workspace: Path
) -> None:
    csv = str(foreign_workspace / "data" / SMALL_NAME)
    inspected = daemon.ctl_json("inspect-dataset", csv, "--workspace", str(foreign_workspace))
    assert inspected["document"]["num_rows"] == 150
    assert inspected["document"]["label_present"] is True


def test_training_without_scikit_learn_fails_cleanly_naming_what_is_missing(
    daemon: DaemonProcess, foreign_workspace: Path
) -> None:
    followed = daemon.ctl("train", "--workspace", str(foreign_workspace), timeout=120)
    assert followed.returncode == EXIT_RUN_FAILED, (followed.stdout, followed.stderr)
    run_id = followed.stdout.split()[0]
    result = read_json(run_dir(foreign_workspace, run_id) / "result.json")
    assert result["state"] == "failed"
    reason = result["reason"].lower()
    assert "scikit-learn" in reason or "sklearn" in reason or "numpy" in reason, reason
    assert "traceback" not in reason


def test_the_trainers_path_holds_the_runner_and_none_of_the_daemons_packages(
    daemon: DaemonProcess, foreign_workspace: Path, foreign_python: Path
) -> None:
    (foreign_workspace / "path_probe.py").write_text(PATH_PROBE)
    settings = read_json(foreign_workspace / ".vscode" / "settings.json")
    settings["runforge.mlRunnerModule"] = "path_probe"
    write_settings(foreign_workspace, json.dumps(settings))

    followed = daemon.ctl("train", "--workspace", str(foreign_workspace), timeout=120)
    assert followed.returncode == EXIT_RUN_FAILED
    run_id = followed.stdout.split()[0]
    logs = (run_dir(foreign_workspace, run_id) / "logs.txt").read_text().splitlines()
    [report] = [json.loads(line) for line in logs if line.startswith("{")]
    assert report["executable"].startswith(str(foreign_python.parent))
    found = report["found"]
    assert found["runforge_runner"] is not None
    assert {name: found[name] for name in ("runforged", "runforgectl", "runforge_protocol")} == {
        "runforged": None,
        "runforgectl": None,
        "runforge_protocol": None,
    }
    assert {name: found[name] for name in ("msgspec", "zmq", "numpy", "sklearn")} == {
        "msgspec": None,
        "zmq": None,
        "numpy": None,
        "sklearn": None,
    }
    [entry] = report["pythonpath"].split(":")
    assert sorted(p.name for p in Path(entry).iterdir()) == ["runforge_contract", "runforge_runner"]
