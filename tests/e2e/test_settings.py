"""Settings from every source, as the user sees them through runforgectl: built-in
defaults < the user config file < the workspace's ``.vscode/settings.json`` (JSONC) <
the flags of one request; and a malformed file is an error naming the file and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from tests.e2e.conftest import (
    error_of,
    read_json,
    run_dir,
    start_detached,
    wait_result,
    write_settings,
)
from tests.harness import DaemonProcess


def write_user_config(daemon: DaemonProcess, text: str) -> Path:
    path = daemon.config_dir / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_without_settings_files_every_value_is_a_default(daemon: DaemonProcess) -> None:
    workspace = daemon.root / "empty-ws"
    workspace.mkdir()
    settings = daemon.ctl_json("settings", "--workspace", str(workspace))["settings"]
    assert settings["modelFamily"] == "logistic_regression"
    assert settings["preset"] == "std-train"
    assert settings["cancelGraceSeconds"] == 5.0
    assert settings["maxConcurrentRuns"] == 1
    assert {o["source"] for o in settings["origins"].values()} == {"default"}
    assert settings["userConfigFile"] == str(daemon.config_dir / "config.json")
    human = daemon.ctl("settings", "--workspace", str(workspace), check=True).stdout
    assert "modelFamily" in human and "logistic_regression" in human and "default" in human


def test_each_source_overrides_the_one_below_and_is_named_with_file_and_line(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    user_file = write_user_config(
        daemon,
        """
        {
          // the user's own defaults
          "modelFamily": "random_forest",
          "cancelGraceSeconds": 3,
          "preset": "hq-train",
        }
        """,
    )
    workspace_file = write_settings(
        sample_workspace,
        """
        {
          /* VS Code writes JSONC */
          "editor.tabSize": 4,
          "runforge.datasetPath": "data/iris_like.csv",
          "runforge.device": "cpu",
          // the workspace wins over the user
          "runforge.modelFamily": "linear_svc",
          "runforge.profile": "fast",
        }
        """,
    )
    settings = daemon.ctl_json("settings", "--workspace", str(sample_workspace))["settings"]
    origins = settings["origins"]
    assert (settings["modelFamily"], origins["modelFamily"]) == (
        "linear_svc",
        {"source": "workspace", "file": str(workspace_file), "line": 7},
    )
    assert (settings["cancelGraceSeconds"], origins["cancelGraceSeconds"]) == (
        3.0,
        {"source": "user", "file": str(user_file), "line": 4},
    )
    assert (settings["preset"], origins["preset"]["source"]) == ("hq-train", "user")
    assert (settings["profile"], origins["profile"]["line"]) == ("fast", 8)
    assert origins["mlRunnerModule"]["source"] == "default"

    table = daemon.ctl("settings", "--workspace", str(sample_workspace), check=True).stdout
    [row] = [line for line in table.splitlines() if line.startswith("modelFamily")]
    assert "linear_svc" in row and f"workspace ({workspace_file}:7)" in row
    [row] = [line for line in table.splitlines() if line.startswith("cancelGraceSeconds")]
    assert f"user ({user_file}:4)" in row

    # status --workspace shows the same effective settings.
    status = daemon.ctl_json("status", "--workspace", str(sample_workspace))["workspace"]
    assert status["settings"]["modelFamily"] == "linear_svc"

    # The flags of one request win over both files, for that run only.
    run_id = start_detached(
        daemon, sample_workspace, "--model", "logistic_regression", "--grace", "1.5"
    )
    assert wait_result(sample_workspace, run_id)["state"] == "completed"
    request = read_json(run_dir(sample_workspace, run_id) / "request.json")
    assert request["model"] == "logistic_regression"
    assert request["cancel_grace_s"] == 1.5
    assert request["preset"] == "hq-train" and request["profile"] == "fast"
    assert "--model=logistic_regression" in request["argv"]
    after = daemon.ctl_json("settings", "--workspace", str(sample_workspace))["settings"]
    assert after["modelFamily"] == "linear_svc"


def test_a_malformed_workspace_file_is_an_error_naming_file_and_line(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    path = write_settings(
        sample_workspace,
        """
        {
          "runforge.profile": "fast",
          "runforge.modelFamily" "random_forest",
        }
        """,
    )
    for args in (["settings"], ["train"], ["status"]):
        result = daemon.ctl(*args, "--workspace", str(sample_workspace), "--json")
        if args == ["status"]:
            [error] = read_status_problems(result.stdout)
        else:
            error = error_of(result)
        assert error["code"] == "SETTINGS_INVALID", args
        assert f"{path}:3:" in error["message"]
        assert error["details"]["file"] == str(path) and error["details"]["line"] == 3
        assert error["remediation"] == f"correct {path}"
    human = daemon.ctl("settings", "--workspace", str(sample_workspace))
    assert human.returncode == 1 and f"{path}:3:" in human.stderr
    assert not (sample_workspace / ".ml").exists()


def read_status_problems(stdout: str) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = json.loads(stdout)["workspace"]["problems"]
    return problems


def test_a_wrong_value_in_the_user_config_names_that_file_key_and_line(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    path = write_user_config(
        daemon,
        """
        {
          "profile": "fast",

          "cancelGraceSeconds": "soon",
        }
        """,
    )
    error = error_of(daemon.ctl("settings", "-w", str(sample_workspace), "--json"))
    assert error["code"] == "SETTINGS_INVALID"
    assert f"{path}:4:" in error["message"] and "cancelGraceSeconds" in error["message"]
    assert error["details"]["key"] == "cancelGraceSeconds"
