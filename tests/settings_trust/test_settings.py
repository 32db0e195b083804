"""Settings layering: defaults < user config < workspace settings < request overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.settings import (
    SETTING_KEYS,
    ResolvedSettings,
    SettingSource,
    config_dir,
    resolve_settings,
    user_config_path,
    workspace_settings_path,
)


def write_user_config(config_directory: Path, text: str) -> Path:
    path = user_config_path(config_directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_workspace_settings(workspace: Path, text: str) -> Path:
    path = workspace_settings_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_without_any_file_every_value_is_the_default(workspace: Path, config_dir: Path) -> None:
    resolved = resolve_settings(workspace, config_directory=config_dir)
    assert resolved.python_path == sys.executable
    assert resolved.ml_runner_module == "runforge_runner"
    assert resolved.dataset_path is None
    assert resolved.model_family == "logistic_regression"
    assert resolved.profile == "default"
    assert resolved.preset == "std-train"
    assert resolved.device == "auto"
    assert resolved.cancel_grace_seconds == 5.0
    assert resolved.max_concurrent_runs == 1
    assert resolved.max_concurrent_runs_global == 4
    assert set(resolved.origins) == set(SETTING_KEYS)
    assert {origin.source for origin in resolved.origins.values()} == {SettingSource.DEFAULT}
    assert resolved.warnings == []
    assert resolved.user_config_file == str(config_dir / "config.json")
    assert resolved.workspace_settings_file == str(workspace / ".vscode" / "settings.json")


def test_each_layer_overrides_the_one_below_and_records_its_source(
    workspace: Path, config_dir: Path
) -> None:
    user_file = write_user_config(
        config_dir,
        """{
          // my machine
          "preset": "hq-train",
          "profile": "fast",
          "modelFamily": "random_forest",
          "maxConcurrentRunsGlobal": 8,
        }""",
    )
    workspace_file = write_workspace_settings(
        workspace,
        """{
          "editor.tabSize": 4,
          /* project choices */
          "runforge.profile": "thorough",
          "runforge.modelFamily": "linear_svc",
        }""",
    )
    resolved = resolve_settings(
        workspace, config_directory=config_dir, overrides={"modelFamily": "logistic_regression"}
    )
    assert (resolved.preset, resolved.profile, resolved.model_family) == (
        "hq-train",
        "thorough",
        "logistic_regression",
    )
    assert resolved.max_concurrent_runs_global == 8
    origins = resolved.origins
    assert (origins["preset"].source, origins["preset"].file, origins["preset"].line) == (
        SettingSource.USER,
        str(user_file),
        3,
    )
    assert (origins["profile"].source, origins["profile"].file, origins["profile"].line) == (
        SettingSource.WORKSPACE,
        str(workspace_file),
        4,
    )
    assert origins["modelFamily"].source == SettingSource.REQUEST
    assert origins["modelFamily"].file is None
    assert origins["device"].source == SettingSource.DEFAULT
    assert resolved.warnings == []


def test_the_wire_form_uses_the_setting_names(workspace: Path, config_dir: Path) -> None:
    resolved = resolve_settings(workspace, config_directory=config_dir)
    wire = msgspec.json.decode(msgspec.json.encode(resolved))
    assert set(SETTING_KEYS) <= set(wire)
    assert wire["origins"]["pythonPath"] == {"source": "default", "file": None, "line": None}
    assert msgspec.json.decode(msgspec.json.encode(resolved), type=ResolvedSettings) == resolved


def test_a_workspace_cannot_raise_the_global_limit_and_is_warned(
    workspace: Path, config_dir: Path
) -> None:
    workspace_file = write_workspace_settings(
        workspace, '{\n"runforge.maxConcurrentRunsGlobal": 64,\n"runforge.maxConcurrentRuns": 3\n}'
    )
    resolved = resolve_settings(workspace, config_directory=config_dir)
    assert resolved.max_concurrent_runs_global == 4
    assert resolved.max_concurrent_runs == 3
    [warning] = resolved.warnings
    assert warning.key == "runforge.maxConcurrentRunsGlobal"
    assert (warning.file, warning.line) == (str(workspace_file), 2)
    assert "only the user config" in warning.message


def test_unknown_keys_are_ignored_but_reported(workspace: Path, config_dir: Path) -> None:
    write_user_config(config_dir, '{"pythonpath": "/typo"}')
    write_workspace_settings(workspace, '{"runforge.colour": "blue", "python.x": 1}')
    resolved = resolve_settings(workspace, config_directory=config_dir)
    assert [(w.key, w.message) for w in resolved.warnings] == [
        ("pythonpath", "unknown setting, ignored"),
        ("runforge.colour", "unknown setting, ignored"),
    ]
    assert resolved.python_path == sys.executable


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cancelGraceSeconds", "-1"),
        ("cancelGraceSeconds", '"5"'),
        ("cancelGraceSeconds", "true"),
        ("maxConcurrentRuns", "0"),
        ("maxConcurrentRuns", "1.5"),
        ("modelFamily", '"xgboost"'),
        ("device", '"tpu"'),
        ("preset", "null"),
        ("pythonPath", '""'),
        ("mlRunnerModule", '"-c"'),
        ("mlRunnerModule", '"runner; rm -rf /"'),
    ],
)
def test_a_wrong_value_in_the_workspace_names_the_file_the_key_and_the_line(
    workspace: Path, config_dir: Path, key: str, value: str
) -> None:
    path = write_workspace_settings(
        workspace, f'{{\n  "runforge.profile": "fast",\n  "runforge.{key}": {value}\n}}'
    )
    with pytest.raises(RunforgeError) as caught:
        resolve_settings(workspace, config_directory=config_dir)
    error = caught.value
    assert error.code == ErrorCode.SETTINGS_INVALID
    assert error.message.startswith(f"{path}:3: runforge.{key} must be")
    assert error.details["file"] == str(path)
    assert error.details["line"] == 3
    assert error.details["key"] == key
    assert error.remediation == f"correct {path}"


def test_a_wrong_value_in_the_user_config_names_that_file(
    workspace: Path, config_dir: Path
) -> None:
    path = write_user_config(config_dir, '{"maxConcurrentRunsGlobal": "many"}')
    with pytest.raises(RunforgeError) as caught:
        resolve_settings(workspace, config_directory=config_dir)
    assert caught.value.message.startswith(f"{path}:1: maxConcurrentRunsGlobal must be")


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('{\n  "runforge.profile": "fast"\n  "runforge.preset": "hq-train"\n}', 3, 3),
        ("{\n  /* never closed\n}", 2, 3),
        ('["runforge.profile"]', 1, 1),
    ],
)
def test_a_malformed_settings_file_is_an_error_naming_file_and_line(
    workspace: Path, config_dir: Path, text: str, line: int, column: int
) -> None:
    path = write_workspace_settings(workspace, text)
    with pytest.raises(RunforgeError) as caught:
        resolve_settings(workspace, config_directory=config_dir)
    error = caught.value
    assert error.code == ErrorCode.SETTINGS_INVALID
    assert error.message.startswith(f"{path}:{line}:{column}: ")
    assert (error.details["file"], error.details["line"], error.details["column"]) == (
        str(path),
        line,
        column,
    )


def test_an_empty_or_comment_only_settings_file_sets_nothing(
    workspace: Path, config_dir: Path
) -> None:
    write_user_config(config_dir, "")
    write_workspace_settings(workspace, "// nothing yet\n")
    resolved = resolve_settings(workspace, config_directory=config_dir)
    assert {origin.source for origin in resolved.origins.values()} == {SettingSource.DEFAULT}


def test_relative_paths_resolve_against_the_workspace(workspace: Path, config_dir: Path) -> None:
    write_workspace_settings(
        workspace,
        '{"runforge.pythonPath": "${workspaceFolder}/.venv/bin/python",'
        ' "runforge.datasetPath": "data/iris.csv"}',
    )
    resolved = resolve_settings(workspace, config_directory=config_dir)
    assert resolved.python_path == str(workspace / ".venv" / "bin" / "python")
    assert resolved.dataset_path == str(workspace / "data" / "iris.csv")


def test_a_bare_interpreter_name_is_kept_for_a_path_lookup(
    workspace: Path, config_dir: Path
) -> None:
    write_user_config(config_dir, '{"pythonPath": "python3", "datasetPath": "/data/x.csv"}')
    resolved = resolve_settings(workspace, config_directory=config_dir)
    assert resolved.python_path == "python3"
    assert resolved.dataset_path == "/data/x.csv"


@pytest.mark.parametrize(
    ("key", "value"),
    [("maxConcurrentRuns", 2), ("maxConcurrentRunsGlobal", 9), ("colour", "red"), ("device", 1)],
)
def test_request_overrides_are_limited_to_per_run_settings(
    workspace: Path, config_dir: Path, key: str, value: object
) -> None:
    with pytest.raises(RunforgeError) as caught:
        resolve_settings(workspace, config_directory=config_dir, overrides={key: value})
    assert caught.value.code == ErrorCode.SETTINGS_INVALID
    assert caught.value.message.startswith(f"request: {key}")
    assert caught.value.details["file"] is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RUNFORGE_CONFIG_DIR": "/cfg", "XDG_CONFIG_HOME": "/xdg"}, Path("/cfg")),
        ({"XDG_CONFIG_HOME": "/xdg"}, Path("/xdg/runforge")),
        ({"XDG_CONFIG_HOME": "relative"}, Path.home() / ".config" / "runforge"),
        ({"RUNFORGE_CONFIG_DIR": ""}, Path.home() / ".config" / "runforge"),
    ],
)
def test_the_config_folder_follows_the_environment(environ: dict[str, str], expected: Path) -> None:
    assert config_dir(environ) == expected
