"""Nothing runs for an untrusted workspace: every command that would start Python (train,
inspect-dataset, inspect-artifact, status --workspace with its interpreter check and GPU
probe) answers WORKSPACE_NOT_TRUSTED with the command that grants trust, and no process
starts. The workspace's ``pythonPath`` is a script that records each start in a marker
file: the marker never appears while untrusted, and does once the folder is trusted."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import (
    SAMPLE_CSV,
    error_of,
    run_dir,
    write_executable,
    write_settings,
)
from tests.harness import DaemonProcess


def marked_workspace(daemon: DaemonProcess, name: str = "ws") -> tuple[Path, Path]:
    """An untrusted workspace with the sample data and a model file, whose interpreter
    appends its arguments to a marker file, then runs the real Python: (workspace, marker)."""
    workspace = daemon.root / name
    (workspace / "data").mkdir(parents=True)
    shutil.copyfile(SAMPLE_CSV, workspace / "data" / "iris.csv")
    (workspace / "model.pkl").write_bytes(b"not really a model")
    marker = daemon.root / f"{name}-started.marker"
    python = write_executable(
        daemon.root / f"{name}-python",
        f"""
        #!/bin/sh
        echo "$*" >> '{marker}'
        exec '{sys.executable}' "$@"
        """,
    )
    write_settings(
        workspace,
        json.dumps(
            {
                "runforge.pythonPath": str(python),
                "runforge.datasetPath": "data/iris.csv",
                "runforge.profile": "fast",
            }
        ),
    )
    return workspace, marker


def assert_not_trusted(error: dict[str, Any], workspace: Path) -> None:
    assert error["code"] == "WORKSPACE_NOT_TRUSTED"
    assert error["remediation"] == f"runforgectl trust {shlex.quote(str(workspace))}"
    assert str(workspace) in json.dumps(error["details"])
    assert error["message"]


def gated_commands(workspace: Path) -> dict[str, list[str]]:
    ws = ["--workspace", str(workspace)]
    return {
        "train": ["train", *ws],
        "inspect-dataset": ["inspect-dataset", str(workspace / "data" / "iris.csv"), *ws],
        "inspect-artifact": ["inspect-artifact", str(workspace / "model.pkl"), *ws],
    }


def test_an_untrusted_workspace_starts_no_process_for_any_command(daemon: DaemonProcess) -> None:
    workspace, marker = marked_workspace(daemon)
    for name, args in gated_commands(workspace).items():
        result = daemon.ctl(*args, "--json")
        assert_not_trusted(error_of(result), workspace)
        human = daemon.ctl(*args)
        assert human.returncode == 1, name
        assert "WORKSPACE_NOT_TRUSTED" in human.stderr
        assert f"fix: runforgectl trust {workspace}" in human.stderr

    # status --workspace: settings shown, the interpreter check and GPU probe refused.
    status = daemon.ctl_json("status", "--workspace", str(workspace))["workspace"]
    assert status["trusted"] is False
    assert status["interpreter"] is None and status["gpu"] is None
    [problem] = status["problems"]
    assert_not_trusted(problem, workspace)
    assert status["settings"]["pythonPath"].endswith("ws-python")
    shown = daemon.ctl("status", "--workspace", str(workspace), check=True).stdout
    assert "NOT trusted" in shown and "WORKSPACE_NOT_TRUSTED" in shown

    assert not marker.exists()
    assert not (workspace / ".ml").exists()  # no run folder either
    assert daemon.ctl("ping").returncode == 0


def test_once_trusted_every_command_starts_the_workspace_interpreter(
    daemon: DaemonProcess,
) -> None:
    """The positive control: the same commands, trusted, do start the marker script."""
    workspace, marker = marked_workspace(daemon)
    daemon.ctl("trust", str(workspace), check=True)

    status = daemon.ctl_json("status", "--workspace", str(workspace))["workspace"]
    assert status["trusted"] is True and status["problems"] == []
    assert status["interpreter"]["version"].startswith("3.")
    assert status["gpu"] is not None and status["device"] is not None
    started = marker.read_text().splitlines()
    assert len(started) >= 2  # the version check and the GPU probe

    commands = gated_commands(workspace)
    dataset = daemon.ctl_json(*commands["inspect-dataset"])
    assert dataset["document"]["num_rows"] == 150
    assert "inspect --dataset" in marker.read_text().splitlines()[-1]

    train = daemon.ctl(*commands["train"], timeout=300)
    assert train.returncode == 0, (train.stdout, train.stderr)
    run_id = train.stdout.split()[0]
    assert any(
        line.startswith("-u -m runforge_runner train") for line in marker.read_text().splitlines()
    )

    model = str(run_dir(workspace, run_id) / "model.pkl")
    artifact = daemon.ctl_json("inspect-artifact", model, "--workspace", str(workspace))
    assert artifact["document"]["pipeline_steps"]
    assert "inspect-artifact" in marker.read_text().splitlines()[-1]


def test_trust_untrust_and_list_through_runforgectl(daemon: DaemonProcess) -> None:
    parent = daemon.root / "projects"
    workspace, marker = marked_workspace(daemon, "projects/ws")
    assert "no trusted folders" in daemon.ctl("trust", "--list", check=True).stdout
    assert daemon.ctl_json("trust", "--list")["trusted"] == []

    # Trusting a parent covers its subfolders.
    assert daemon.ctl("trust", str(parent), check=True).stdout.strip() == f"trusted: {parent}"
    again = daemon.ctl_json("trust", str(parent))
    assert again["changed"] is False and again["trusted"] == [str(parent)]
    listed = daemon.ctl("trust", "--list", check=True).stdout
    assert str(parent) in listed
    inspected = daemon.ctl_json(*gated_commands(workspace)["inspect-dataset"])
    assert inspected["document"]["num_rows"] == 150
    assert marker.exists()

    # Trust held through the parent cannot be withdrawn from the subfolder alone.
    through = error_of(daemon.ctl("untrust", str(workspace), "--json"))
    assert through["code"] == "INVALID_PATH"
    assert through["remediation"] == f"runforgectl untrust {parent}"

    # Withdrawn: refused again, nothing more is started.
    marker.unlink()
    assert daemon.ctl("untrust", str(parent), check=True).stdout.strip() == f"untrusted: {parent}"
    assert daemon.ctl_json("trust", "--list")["trusted"] == []
    refused = daemon.ctl(*gated_commands(workspace)["inspect-dataset"], "--json")
    assert_not_trusted(error_of(refused), workspace)
    assert not marker.exists()
    assert daemon.ctl_json("untrust", str(parent))["changed"] is False

    # The trust store is private to the user.
    store = next(p for p in daemon.config_dir.iterdir() if "trust" in p.name)
    assert store.stat().st_mode & 0o077 == 0
