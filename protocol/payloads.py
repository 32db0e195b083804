"""The typed payloads of replies that are documents in their own right: a workspace's
resolved settings, the interpreter and GPU probes and the device choice
(``WorkspaceStatus``, ``SettingsResult``), and the runner's inspections
(``InspectResult.document``). The daemon builds them with these types; on the wire they
are plain maps (field names as below; settings in camelCase)."""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

# --------------------------------------------------------------------------- settings

ModelFamily = Literal["logistic_regression", "random_forest", "linear_svc"]
Profile = Literal["default", "fast", "thorough"]
Preset = Literal["std-train", "hq-train"]
Device = Literal["auto", "cpu", "cuda"]
Executor = Literal["local", "ray"]

DEFAULT_RAY_ADDRESS = "http://127.0.0.1:8265"  # a local head's dashboard (Ray's default)


class SettingSource(str, enum.Enum):
    DEFAULT = "default"
    USER = "user"
    WORKSPACE = "workspace"
    REQUEST = "request"


class SettingOrigin(msgspec.Struct, kw_only=True):
    """Where an effective value came from; ``file`` and ``line`` for the two files."""

    source: SettingSource
    file: str | None = None
    line: int | None = None


class SettingsWarning(msgspec.Struct, kw_only=True):
    """A key that was ignored, and why."""

    key: str
    message: str
    file: str | None = None
    line: int | None = None


class ResolvedSettings(msgspec.Struct, kw_only=True, rename="camel"):
    """The effective settings of one workspace. On the wire the field names are the setting
    keys (``pythonPath``...), and ``origins`` is keyed by the same names."""

    workspace: str
    python_path: str
    ml_runner_module: str
    dataset_path: str | None
    label_column: str | None
    model_family: ModelFamily
    profile: Profile
    preset: Preset
    device: Device
    cancel_grace_seconds: float
    max_concurrent_runs: int
    max_concurrent_runs_global: int
    executor: Executor = "local"
    ray_address: str = DEFAULT_RAY_ADDRESS
    ray_resources: dict[str, float] = {}
    ray_env_vars: list[str] = []
    max_log_bytes: int = 64 << 20
    origins: dict[str, SettingOrigin]
    warnings: list[SettingsWarning] = []
    # The files consulted, shown even when absent so users know where to put settings.
    user_config_file: str = ""
    workspace_settings_file: str = ""


# --------------------------------------------------------------------------- probes


class InterpreterInfo(msgspec.Struct, kw_only=True):
    """A checked interpreter; only supported ones (>= 3.10) are returned."""

    python_path: str  # as configured
    executable: str  # the absolute path that is run
    resolved_executable: str  # symlinks resolved
    version: str  # "3.11.7"
    implementation: str  # "cpython"


class GpuDevice(msgspec.Struct, kw_only=True):
    index: int
    name: str
    free_mib: int
    total_mib: int


class GpuProbe(msgspec.Struct, kw_only=True):
    """What the probe found, and from which source; ``notes`` say why earlier sources gave
    no answer ("torch is not installed in ..."), so users can see why a run used the CPU."""

    interpreter: str
    source: Literal["torch", "nvidia-smi", "none"]
    devices: list[GpuDevice] = []
    notes: list[str] = []


class DeviceChoice(msgspec.Struct, kw_only=True):
    requested: str  # the device setting: auto, cpu or cuda
    device: Literal["cpu", "cuda"]
    reason: str


# --------------------------------------------------------------------------- inspections


class DatasetInspection(msgspec.Struct, kw_only=True):
    """``inspect --dataset`` output (RunForge inspect schema v0.2.2.1)."""

    dataset_path: str
    fingerprint_sha256: str
    columns: list[str]
    num_rows: int
    label_column: str
    num_features_excluding_label: int
    label_present: bool


class PipelineStep(msgspec.Struct, kw_only=True):
    name: str
    type: str
    module: str


class ArtifactInspection(msgspec.Struct, kw_only=True):
    """``inspect-artifact`` output (RunForge pipeline inspect schema v0.2.2.2)."""

    schema_version: str
    artifact_path: str
    pipeline_steps: list[PipelineStep]
    has_preprocessing: bool
    step_count: int
