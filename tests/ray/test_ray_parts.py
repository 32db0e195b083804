"""The Ray executor's parts that need no cluster: its settings, the Job API client facing
a closed port, the shipped package archives, and the environment a job is given."""

from __future__ import annotations

import io
import socket
import zipfile
from pathlib import Path

import pytest

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.ray_jobs import RayJobsClient, RayJobsError, check_address, package_archive
from runforged.settings import SettingSource, resolve_settings


def _settings(workspace: Path, text: str) -> Path:
    path = workspace / ".vscode" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_executor_is_local_by_default_and_ray_is_chosen_per_workspace_or_request(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    default = resolve_settings(workspace, config_directory=config)
    assert (default.executor, default.ray_address) == ("local", "http://127.0.0.1:8265")
    assert default.ray_resources == {} and default.ray_env_vars == []
    _settings(
        workspace,
        '{"runforge.executor": "ray", "runforge.rayAddress": "http://head:8265/",'
        ' "runforge.rayResources": {"GPU": 1, "CPU": 2}, "runforge.rayEnvVars": ["WANDB_*"]}',
    )
    chosen = resolve_settings(workspace, config_directory=config)
    assert chosen.executor == "ray"
    assert chosen.ray_address == "http://head:8265"
    assert chosen.ray_resources == {"GPU": 1.0, "CPU": 2.0}
    assert chosen.ray_env_vars == ["WANDB_*"]
    assert chosen.origins["executor"].source is SettingSource.WORKSPACE
    local = resolve_settings(workspace, config_directory=config, overrides={"executor": "local"})
    assert local.executor == "local"
    assert local.origins["executor"].source is SettingSource.REQUEST


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("executor", '"slurm"'),
        ("rayAddress", '"ray://head:10001"'),
        ("rayAddress", '"http://user:secret@head:8265"'),
        ("rayAddress", "8265"),
        ("rayResources", '{"GPU": -1}'),
        ("rayResources", '{"GPU": true}'),
        ("rayResources", '["GPU"]'),
        ("rayEnvVars", '["NOT A NAME"]'),
        ("rayEnvVars", '"WANDB_*"'),
    ],
)
def test_bad_ray_settings_are_errors_naming_the_file_and_key(
    tmp_path: Path, key: str, value: str
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    path = _settings(workspace, f'{{\n"runforge.{key}": {value}\n}}')
    with pytest.raises(RunforgeError) as caught:
        resolve_settings(workspace, config_directory=tmp_path / "config")
    assert caught.value.code is ErrorCode.SETTINGS_INVALID
    assert caught.value.message.startswith(f"{path}:2: runforge.{key} must be")


def test_resources_and_env_vars_cannot_be_set_per_request(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for key, value in (("rayResources", {"GPU": 1}), ("rayEnvVars", ["X"])):
        with pytest.raises(RunforgeError) as caught:
            resolve_settings(workspace, config_directory=tmp_path, overrides={key: value})
        assert caught.value.code is ErrorCode.SETTINGS_INVALID


def test_a_closed_port_is_an_unreachable_cluster_with_its_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    client = RayJobsClient(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(RayJobsError) as caught:
        client.version()
    assert caught.value.unreachable
    assert caught.value.address == f"http://127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_addresses_are_dashboard_urls_only() -> None:
    assert check_address("https://ray.example:8443/") == "https://ray.example:8443"
    for bad in ("ray://head:10001", "head:8265", "http://", "http://h:99999", "http://h?x=1"):
        with pytest.raises(ValueError):
            check_address(bad)


def test_a_package_archive_is_deterministic_and_holds_the_package_folder(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("X = 1\n")
    (package / "sub" / "mod.py").write_text("Y = 2\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    name, data = package_archive(package)
    assert name.startswith("_ray_pkg_") and name.endswith(".zip")
    assert package_archive(package) == (name, data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["pkg/__init__.py", "pkg/sub/mod.py"]
    (package / "__init__.py").write_text("X = 3\n")
    assert package_archive(package)[0] != name
